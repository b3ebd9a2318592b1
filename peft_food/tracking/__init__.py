"""Tracking: the run record (metrics.json), where a run came from, its W&B run, sweep bookkeeping, and comparing the jobs of a sweep."""
