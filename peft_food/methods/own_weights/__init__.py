"""Methods that train the base's own parameters and add none: full fine-tuning (`full.py`: every
parameter, the whole model saved) and the partial ones (`partial.py`: the linear probe and BitFit,
a chosen subset with the head, only those tensors saved)."""
