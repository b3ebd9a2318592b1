"""The saved model dir: what a method saves and how it is read back, model cards, export to a plain transformers model, prediction."""
