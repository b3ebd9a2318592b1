"""Per-class results at the end of a run, on the model that is saved: written to the run dir and
logged to W&B, so `logger=none` users get the same files.

    per_class.csv     class, eval images, accuracy, the class it is most often taken for (and how often)
    confusion.csv     counts, true class per row, predicted per column
    confusion.png     the confusion row-normalised, readable at 101 classes (one cell per pair), titled
                      with the split it shows; each nonzero cell's count written in it up to
                      COUNTED_CLASSES classes (beyond, a cell is too small for digits: the counts
                      are in confusion.csv, and the title says so)
    examples.csv/png  `logger.examples` eval images with their prediction, misclassified ones first

In W&B: tables `per_class`, `top_confusions` (the most frequent mistakes) and `examples` (with
the images), and the confusion image. A 101 x 101 interactive confusion matrix of W&B's own is
10,201 cells that no one reads; the image and the top-confusions table are what stays readable.
Each file is written atomically (files.write_atomic): a run stopped while writing them leaves the
previous file or none, never a truncated one.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from peft_food.evaluation.metrics import confusion_matrix, per_class
from peft_food.files import write_atomic


@dataclass
class EvalResults:
    logits: np.ndarray
    labels: np.ndarray
    names: list[str]

    # Derived once: every table, file and plot below reads them.
    @cached_property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(-1)

    @cached_property
    def confidence(self) -> np.ndarray:
        shifted = np.exp(self.logits - self.logits.max(-1, keepdims=True))
        return (shifted / shifted.sum(-1, keepdims=True)).max(-1)

    @cached_property
    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.predictions, self.labels, num_labels=len(self.names))

    def examples(self, n: int) -> list[int]:
        """Indices to show: the most confident mistakes (up to half of `n`), then correct ones taken
        a class at a time (test lists are often sorted by class: the first ones would be one class)."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        wrong = wrong[np.argsort(-self.confidence[wrong], kind="stable")]
        right = np.flatnonzero(self.predictions == self.labels)
        take_wrong = min(len(wrong), max(n - len(right), n // 2 if len(right) else n))
        return [int(i) for i in [*wrong[:take_wrong], *_by_class(right, self.labels)[: n - take_wrong]]]

    def top_confusions(self, k: int = 20) -> list[tuple[str, str, int]]:
        """(true, predicted, count) of the `k` most frequent mistakes."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None, kind="stable")[:k]
        pairs = [np.unravel_index(i, off.shape) for i in order]
        return [(self.names[t], self.names[p], int(off[t, p])) for t, p in pairs if off[t, p] > 0]

    def example_rows(self, indices: list[int]) -> list[dict[str, Any]]:
        return [
            {
                "index": i,
                "true": self.names[self.labels[i]],
                "predicted": self.names[self.predictions[i]],
                "confidence": round(float(self.confidence[i]), 4),
                "correct": bool(self.predictions[i] == self.labels[i]),
            }
            for i in indices
        ]


def _by_class(indices: np.ndarray, labels: np.ndarray) -> list[int]:
    """`indices` reordered round-robin over their classes: the first of each class, then the second, ..."""
    rank = np.zeros(len(indices), dtype=int)
    for label in np.unique(labels[indices]):
        members = labels[indices] == label
        rank[members] = np.arange(members.sum())
    return [int(i) for i in indices[np.lexsort((labels[indices], rank))]]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["empty"])
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue().encode())


def _save_figure(fig: Any, path: Path, *, dpi: int) -> None:
    png = io.BytesIO()
    fig.savefig(png, dpi=dpi, format="png")
    write_atomic(path, png.getvalue())


def write(results: EvalResults, *, out_dir: Path, examples: list[int], images: list[Any], split: str) -> None:
    """The CSVs and PNGs above into `out_dir`; `images` are the images (PIL) at `examples`; `split`
    names the split the results are on (test; the seed protocol's held-out eval split)."""
    confusion = results.confusion
    _write_csv(out_dir / "per_class.csv", per_class(confusion, results.names))
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["true \\ predicted", *results.names])
    writer.writerows([name, *map(int, counts)] for name, counts in zip(results.names, confusion))
    write_atomic(out_dir / "confusion.csv", text.getvalue().encode())
    rows = results.example_rows(examples)
    _write_csv(out_dir / "examples.csv", rows)
    figure = confusion_figure(confusion, results.names, split=split)
    _save_figure(figure, out_dir / "confusion.png", dpi=100)
    _close(figure)
    if images:
        _plot_examples(rows, images, out_dir / "examples.png")


# Up to this many classes every nonzero cell shows its count; at 101 classes a cell is ~0.17 inch,
# too small for digits anyone can read.
COUNTED_CLASSES = 30


def cell_counts(confusion: np.ndarray) -> list[tuple[int, int, int]]:
    """(true, predicted, count) of every nonzero cell to write in the picture; none beyond
    COUNTED_CLASSES classes."""
    if len(confusion) > COUNTED_CLASSES:
        return []
    return [(int(t), int(p), int(confusion[t, p])) for t, p in zip(*np.nonzero(confusion))]


def confusion_figure(confusion: np.ndarray, names: list[str], *, split: str) -> Any:
    """The confusion row-normalised (share of the true class's images), nonzero counts in their
    cells (cell_counts), titled with `split` and the number of images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    counts = cell_counts(confusion)
    # ~0.17 inch per class: 101 classes stay legible at 100 dpi; 0.3 where cells hold their counts.
    side = max(6.0, (0.3 if counts else 0.17) * len(names))
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.03, label=f"share of the true class's {split} images")
    font = 9 if len(names) <= 20 else 8 if counts else 6
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=font)
    ax.set_yticks(range(len(names)), names, fontsize=font)
    size = max(6.0, min(10.0, 180 / len(names)))  # 10 pt up to 18 classes, 6 pt at 30
    for true, predicted, count in counts:
        dark = share[true, predicted] > 0.55  # white digits on the dark end of Blues
        ax.text(
            predicted, true, str(count), ha="center", va="center", fontsize=size, color="white" if dark else "black"
        )
    where = (
        "counts in the cells"
        if counts or not confusion.any()
        else f"counts in confusion.csv ({len(names)} classes: too many to write in the cells)"
    )
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"Confusion of the saved model on {split} ({int(confusion.sum())} images; {where})",
    )
    fig.tight_layout()
    return fig


def _close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _plot_examples(rows: list[dict[str, Any]], images: list[Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(rows))
    lines = -(-len(rows) // cols)
    fig, axes = plt.subplots(lines, cols, figsize=(3 * cols, 3.2 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row, image in zip(axes.flat, rows, images):
        ax.imshow(image)
        ax.set_title(
            f"{row['true']}\n-> {row['predicted']} ({row['confidence']:.2f})",
            fontsize=8,
            color="black" if row["correct"] else "red",
        )
    fig.tight_layout()
    _save_figure(fig, path, dpi=80)
    plt.close(fig)


def log_to_wandb(run: Any, results: EvalResults, *, examples: list[int], images: list[Any], out_dir: Path) -> None:
    """The same results as W&B tables and the confusion image written to `out_dir` (offline runs
    stage them for `wandb sync`)."""
    import wandb

    rows = per_class(results.confusion, results.names)
    columns = list(rows[0])
    shown = results.example_rows(examples)
    run.log(
        {
            "confusion": wandb.Image(str(out_dir / "confusion.png")),
            "per_class": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows]),
            "top_confusions": wandb.Table(
                columns=["true", "predicted", "count"], data=[list(c) for c in results.top_confusions()]
            ),
            "examples": wandb.Table(
                columns=["image", "true", "predicted", "confidence", "correct"],
                data=[
                    [wandb.Image(image), r["true"], r["predicted"], r["confidence"], r["correct"]]
                    for r, image in zip(shown, images)
                ],
            ),
        }
    )
