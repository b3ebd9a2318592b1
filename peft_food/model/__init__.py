"""Model stage: the backbone and its image processor, module names and roles, weights on disk, and the model group's schema."""
