"""Benchmark: this package's data and training path against the seed recipe, side by side in one run."""
