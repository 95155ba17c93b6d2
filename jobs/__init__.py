"""Job scripts (run as `python jobs/<name>.py` or via `ray job submit`) and the small modules they use."""
