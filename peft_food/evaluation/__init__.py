"""Evaluation: metrics computed from one confusion matrix, and per-class results of the saved model."""
