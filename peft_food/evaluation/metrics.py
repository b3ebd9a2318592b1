"""Metrics, the one place they are defined: what each eval computes (`train.metrics`), which one
picks the best checkpoint (`train.monitor`), and the per-class results of the saved model.

    peft-food-train train.metrics=[accuracy,macro_f1] train.monitor=macro_f1

Every metric is computed from the eval logits through one confusion matrix, in numpy. Not through
the `evaluate` library: its `evaluate.load("accuracy")` fetches the metric's script from the Hub
(offline it fails, evaluate #316), the scripts for accuracy and F1 need scikit-learn, and a local
`evaluate.Metric` would write every eval's predictions to an Arrow cache file under a file lock
for arithmetic that takes one line here. Macro-F1 follows scikit-learn's definition (the mean of
per-class F1 over the classes that occur in the labels or the predictions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Metric:
    # logits (N, C), labels (N,), confusion (C, C: rows true, columns predicted) -> value;
    # None: computed by the Trainer itself (the loss).
    compute: Callable[[np.ndarray, np.ndarray, np.ndarray], float] | None
    higher_is_better: bool = True


def _accuracy(logits: np.ndarray, labels: np.ndarray, confusion: np.ndarray) -> float:
    return float(np.trace(confusion) / max(1, confusion.sum()))


def _top5_accuracy(logits: np.ndarray, labels: np.ndarray, confusion: np.ndarray) -> float:
    k = min(5, logits.shape[-1])
    top = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
    return float((top == labels[:, None]).any(axis=-1).mean())


def _macro_f1(logits: np.ndarray, labels: np.ndarray, confusion: np.ndarray) -> float:
    hits = np.diag(confusion).astype(np.float64)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)  # 2 tp + fp + fn
    present = denominator > 0
    return float((2 * hits[present] / denominator[present]).mean()) if present.any() else 0.0


# train.metrics / train.monitor name these; Trainer logs each as eval_<name>.
METRICS: dict[str, Metric] = {
    "accuracy": Metric(_accuracy),
    "top5_accuracy": Metric(_top5_accuracy),
    "macro_f1": Metric(_macro_f1),
    "loss": Metric(None, higher_is_better=False),
}


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, *, num_labels: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    flat = labels.astype(np.int64) * num_labels + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


class Evaluator:
    """Trainer's compute_metrics: every metric of `names` from one confusion matrix per eval."""

    def __init__(self, names: list[str]):
        self.names = [name for name in names if METRICS[name].compute is not None]

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred
        logits, labels = np.asarray(logits), np.asarray(labels)
        confusion = confusion_matrix(logits.argmax(-1), labels, num_labels=logits.shape[-1])
        return {name: METRICS[name].compute(logits, labels, confusion) for name in self.names}


def per_class(confusion: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    """One row per class: its eval images, accuracy, and the class it is most often taken for."""
    rows = []
    for i, name in enumerate(labels):
        row = confusion[i]
        wrong = row.copy()
        wrong[i] = 0
        rows.append(
            {
                "class": name,
                "eval_images": int(row.sum()),
                "accuracy": round(float(row[i] / row.sum()), 6) if row.sum() else None,
                "most_confused_with": labels[int(wrong.argmax())] if wrong.any() else None,
                "times": int(wrong.max()),
            }
        )
    return rows
