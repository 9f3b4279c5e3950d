"""Benchmarks of the data path and the training loop (``make bench``); not timed tests."""
