"""Synthetic data for tests, benchmarks and the demo: a stamped HD-VILA-format video corpus, its
descriptive texts, and text sources in real annotation formats. Nothing in the production path
(pipeline, captioner, trainer, analysis, jobs) imports this package."""
