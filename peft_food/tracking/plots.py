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
    """`figure(rows)` as a PNG at `path`."""
    import matplotlib.pyplot as plt

    fig = figure(rows, title=title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(rows: list[dict[str, Any]], *, title: str) -> Any:
    """Left, where the sweep varied it: the method x model grid (several of each) or one method's
    rank x alpha grid. Right (or alone): test value against trainable parameters (log x), one
    panel per model where several were swept, every method its own colour x marker, the legend
    below the panels (never over a point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = settings(rows)
    metric = points[0]["monitor"].removeprefix("eval_") if points else "accuracy"
    grid = _grid(points)
    models = sorted({p["model"] for p in points}) or [""]
    cols = min(len(models), 2 if grid else 3)
    lines = -(-len(models) // cols)
    width = 4.6 * cols + (6.5 if grid else 0) + 0.5
    fig = plt.figure(figsize=(max(width, 7.5), 3.9 * lines + 1.8), layout="constrained")
    right = fig
    if grid:
        left, right = fig.subfigures(1, 2, width_ratios=[6.5, 4.6 * cols])
        ax = left.subplots()
        cells, xs, ys, labels = grid
        _heatmap(left, ax, cells, xs=xs, ys=ys, label=f"test {metric}")
        ax.set(xlabel=labels[0], ylabel=labels[1], title=f"Test {metric}: {labels[1]} x {labels[0]}")
    axes = list(right.subplots(lines, cols, sharex=True, sharey=True, squeeze=False).flat)
    styles = method_styles(list(dict.fromkeys(p["method"] for p in points)))
    fronts = [_cost(ax, [p for p in points if p["model"] == model], styles=styles) for ax, model in zip(axes, models)]
    for ax, model in zip(axes, models):
        ax.set_title(model or f"test {metric} against trainable parameters", fontsize=10)
        ax.set(xlabel="trainable parameters (log)", ylabel=f"test {metric}")
        ax.label_outer()
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    handles = [
        plt.Line2D([], [], color=color, marker=marker, linestyle="", label=method)
        for method, (color, marker) in styles.items()
    ]
    if any(fronts):  # only where a front was drawn: a line through two or more settings
        handles.append(plt.Line2D([], [], color="black", linestyle="--", label="Pareto front"))
    if handles:  # none while no job has a result yet
        right.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8)
    done = len([r for r in rows if r["test"] != ""])
    fig.suptitle(
        f"{title}  ({done} of {len(rows)} jobs with results)\n"
        f"test {metric} of the checkpoint with the best val {metric}; mean +- std over seeds",
        fontsize=10,
    )
    fig.canvas.draw()  # the layout settles first: labels are then placed where they stay
    for ax, model in zip(axes, models):
        _label(ax, [p for p in points if p["model"] == model], several=len(styles) > 1)
    return fig


# Markers cycle with a period (9) coprime to tab10's 10 colours: up to 90 methods get distinct
# (colour, marker) pairs, and methods next to each other in the list differ in both.
MARKERS = "osD^vP*Xh"


def method_styles(methods: list[str]) -> dict[str, tuple[Any, str]]:
    """Each method's (colour, marker)."""
    import matplotlib.pyplot as plt

    colors = plt.cm.tab10.colors
    return {m: (colors[i % len(colors)], MARKERS[i % len(MARKERS)]) for i, m in enumerate(methods)}


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


def _cost(ax: Any, points: list[dict[str, Any]], *, styles: dict[str, tuple[Any, str]]) -> bool:
    """Test value against trainable parameters, one model's settings: a bar for the seed spread,
    the Pareto front dashed where it joins two settings or more. Returns whether it drew one."""
    for p in points:
        color, marker = styles[p["method"]]
        ax.errorbar(
            p["trainable_params"],
            p["test"],
            yerr=None if math.isnan(p["test_std"]) else p["test_std"],
            fmt=marker,
            color=color,
            markersize=7,
            capsize=3,
            alpha=0.85,
        )
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.08)  # room for the labels of the points at the edges
    ax.grid(True, alpha=0.3)
    front = pareto([(p["trainable_params"], p["test"]) for p in points])
    if len(front) > 1:
        ax.plot(*zip(*front), color="black", linestyle="--", linewidth=1)
    return len(front) > 1


# Where a label may go, in points from its marker: right, left, above, below, then the corners.
PLACES = [(6, -3), (-6, -3), (0, 6), (0, -12), (6, 5), (-6, 5), (6, -11), (-6, -11)]


def _label(ax: Any, points: list[dict[str, Any]], *, several: bool) -> None:
    """Each point's method (its setting, where one method was swept), at the first place beside it
    that overlaps no label placed before and no marker; a point with no such place stays unlabelled
    (its colour x marker in the legend still names it). Pareto settings and the best by val first."""
    renderer = ax.figure.canvas.get_renderer()
    clip = ax.get_window_extent(renderer)
    front = set(pareto([(p["trainable_params"], p["test"]) for p in points]))
    ordered = sorted(points, key=lambda p: (p["trainable_params"], p["test"]) not in front)
    markers = [_box(ax, p, renderer) for p in points]
    taken = []
    for p in ordered:
        text = p["method"] if several else p["setting"]
        for dx, dy in PLACES:
            label = ax.annotate(
                text,
                (p["trainable_params"], p["test"]),
                textcoords="offset points",
                xytext=(dx, dy),
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                fontsize=7,
            )
            label.set_in_layout(False)
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            inside = clip.x0 <= box.x0 and box.x1 <= clip.x1 and clip.y0 <= box.y0 and box.y1 <= clip.y1
            if inside and not any(box.overlaps(other) for other in [*taken, *markers]):
                taken.append(box)
                break
            label.remove()


def _box(ax: Any, p: dict[str, Any], renderer: Any) -> Any:
    """The display-space square a point's marker covers (7 pt markers, with a margin)."""
    from matplotlib.transforms import Bbox

    x, y = ax.transData.transform((p["trainable_params"], p["test"]))
    half = 5 * renderer.points_to_pixels(1.0)
    return Bbox.from_extents(x - half, y - half, x + half, y + half)
