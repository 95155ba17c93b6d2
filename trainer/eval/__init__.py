"""Retrieval evaluation: metrics (R@K, MdR, MnR, DSL) and encoding a split with a model.
`trainer.evaluate` is its command line."""
