"""Data stage: sources (and their schema), splits, image files, the input geometry, the data store, and the transforms that turn images into batches."""
