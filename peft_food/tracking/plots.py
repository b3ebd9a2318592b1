"""The sweep comparison figure (peft-food-compare's compare.png): accuracy against trainable
parameters, the way PEFT papers compare methods, and a grid of what the sweep varied.

    peft-food-compare experiments/mini_methods/runs --out reports/

Every point is a setting's test value for the checkpoint selected on val (mean over its seeds,
a bar for their spread); the Pareto front marks the settings no other beats on both axes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from peft_food.tracking.compare import pareto, settings


def plot(rows: list[dict[str, Any]], path: Path, *, title: str) -> None:
    """Right (or alone): test value against trainable parameters (log x). Left, where the sweep
    varied it: the method x model grid (several of each) or one method's rank x alpha grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = settings(rows)
    metric = points[0]["monitor"].removeprefix("eval_") if points else "accuracy"
    grid = _grid(points)
    fig, axes = plt.subplots(1, 2 if grid else 1, figsize=(13 if grid else 7.5, 5.2), squeeze=False)
    if grid:
        cells, xs, ys, labels = grid
        _heatmap(fig, axes[0][0], cells, xs=xs, ys=ys, label=f"test {metric}")
        axes[0][0].set(xlabel=labels[0], ylabel=labels[1], title=f"Test {metric}: {labels[1]} x {labels[0]}")
    _cost(plt, axes[0][-1], points, metric=metric)
    done = len([r for r in rows if r["test"] != ""])
    fig.suptitle(
        f"{title}  ({done} of {len(rows)} jobs with results)\n"
        f"test {metric} of the checkpoint with the best val {metric}; mean +- std over seeds",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grid(points: list[dict[str, Any]]) -> tuple[dict, list, list, tuple[str, str]] | None:
    """(cells, xs, ys, (x label, y label)) of what the sweep varied, or None: method x model where
    both vary, rank x alpha where one method varied both."""
    models = sorted({p["model"] for p in points})
    methods = list(dict.fromkeys(p["method"] for p in points))
    if len(models) > 1 and len(methods) > 1:
        cells: dict[tuple[Any, Any], float] = {}
        for p in points:  # best val first: each cell keeps its val-selected setting
            cells.setdefault((p["model"], p["method"]), p["test"])
        return cells, models, methods, ("model", "method")
    ranks = sorted({p["r"] for p in points if p["r"] != ""})
    alphas = sorted({p["alpha"] for p in points if p["alpha"] != ""})
    if len(methods) == 1 and len(ranks) > 1 and len(alphas) > 1:
        cells = {}
        for p in points:
            cells.setdefault((p["r"], p["alpha"]), p["test"])
        return cells, ranks, alphas, ("rank r", "alpha")
    return None


def _heatmap(fig: Any, ax: Any, cells: dict[tuple[Any, Any], float], *, xs: list, ys: list, label: str) -> None:
    """One value per (x, y) cell, written in the cell."""
    values = [[cells.get((x, y), math.nan) for x in xs] for y in ys]
    image = ax.imshow(values, origin="lower", cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=label)
    for (x, y), value in cells.items():
        bright = image.norm(value) > 0.6  # dark text on the yellow end of viridis
        ax.text(
            xs.index(x),
            ys.index(y),
            f"{value:.3f}",
            ha="center",
            va="center",
            color="black" if bright else "white",
            fontsize=9,
            fontweight="bold",
        )
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])


def _cost(plt: Any, ax: Any, points: list[dict[str, Any]], *, metric: str) -> None:
    """Test value against trainable parameters: colour by method, marker by model, a bar for the
    seed spread, each point labelled, the Pareto front drawn through."""
    models = sorted({p["model"] for p in points})
    methods = list(dict.fromkeys(p["method"] for p in points))
    markers = dict(zip(models, "osD^vP*X"))
    colors = dict(zip(methods, plt.cm.tab10.colors * 3))
    for p in points:
        ax.errorbar(
            p["trainable_params"],
            p["test"],
            yerr=None if math.isnan(p["test_std"]) else p["test_std"],
            fmt=markers.get(p["model"], "o"),
            color=colors[p["method"]],
            markersize=7,
            capsize=3,
            alpha=0.85,
        )
        label = p["method"] if len(methods) > 1 else p["setting"]
        ax.annotate(label, (p["trainable_params"], p["test"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = pareto([(p["trainable_params"], p["test"]) for p in points])
    if front:
        ax.plot(*zip(*front), color="black", linestyle="--", linewidth=1, label="Pareto front")
        ax.set_xscale("log")
    handles = [plt.Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) for m in methods]
    if len(models) > 1:
        handles += [plt.Line2D([], [], color="grey", marker=markers[m], linestyle="", label=m) for m in models]
    handles.append(plt.Line2D([], [], color="black", linestyle="--", label="Pareto front"))
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set(
        xlabel="trainable parameters (log)",
        ylabel=f"test {metric}",
        title=f"Test {metric} against trainable parameters",
    )
    ax.grid(True, alpha=0.3)
