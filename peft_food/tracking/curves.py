"""A run's training curves (`curves.png` in its run dir, redrawn after an evaluation at most every
training/trainer.py's CURVES_EVERY_S, and at the end): the train loss as Trainer logged it (every
`train.logging_steps`) and the val loss on one panel, every val metric per epoch on the other, the epoch the saved model comes from marked.

    from peft_food.tracking.curves import curve_series, write_curves
    write_curves(record, log_history, run_dir / "curves.png")

`curve_series` is what is drawn, by name (`train loss`, `val loss`, `val accuracy`, ...), so what a
picture shows can be read without its pixels.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from peft_food.files import write_atomic
from peft_food.tracking.record import RunRecord

FILE = "curves.png"
Series = dict[str, list[tuple[float, float]]]


def curve_series(record: RunRecord, log_history: list[dict[str, Any]]) -> Series:
    """`train loss` at every logged step (x: its fractional epoch), then `<split> <metric>` at every
    evaluation (the record's epochs; split: val, or eval under the seed protocol)."""
    series: Series = {"train loss": [(e["epoch"], e["loss"]) for e in log_history if "loss" in e and "epoch" in e]}
    for entry in record.epochs:
        for key, value in entry.items():
            if key != "epoch":
                series.setdefault(f"{record.selected_on} {key.removeprefix('eval_')}", []).append(
                    (entry["epoch"], value)
                )
    return series


def curve_figure(record: RunRecord, log_history: list[dict[str, Any]]) -> Any:
    """Losses left, the other metrics right (absent without val: protocol retrain), each line
    labelled with its series' name; the selected epoch a dotted vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = curve_series(record, log_history)
    losses = {name: points for name, points in series.items() if name.endswith(" loss")}
    others = {name: points for name, points in series.items() if name not in losses}
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(11 if others else 6, 4), squeeze=False)
    for ax, group, ylabel in zip(axes[0], (losses, others), ("loss", "value")):
        for name, points in group.items():
            xs, ys = zip(*points) if points else ((), ())
            dense = name == "train loss"
            ax.plot(xs, ys, marker=None if dense else "o", linewidth=1 if dense else 1.6, alpha=0.8, label=name)
        best, watched = record.best_epoch, record.monitor.removeprefix("eval_")
        if best is not None:
            ax.axvline(
                best["epoch"],
                color="grey",
                linestyle=":",
                label=f"selected: epoch {best['epoch']:g} (best {record.selected_on} {watched})",
            )
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    model = record.config.get("model", {}).get("name", "")
    fig.suptitle(
        f"{record.method or 'run'} {model}: train loss and {record.selected_on} metrics per epoch", fontsize=10
    )
    fig.tight_layout()
    return fig


def write_curves(record: RunRecord, log_history: list[dict[str, Any]], path: Path) -> None:
    """`curve_figure` as a PNG at `path`, written whole or not at all (files.write_atomic)."""
    import matplotlib.pyplot as plt

    fig = curve_figure(record, log_history)
    png = io.BytesIO()
    fig.savefig(png, dpi=90, format="png")
    plt.close(fig)
    write_atomic(path, png.getvalue())
