"""Compare the jobs of a sweep without W&B: a table, a CSV and a PNG.

    peft-food-compare multirun/2026-11-22/10-00-00
    peft-food-compare multirun/2026-11-22/10-00-00 --out reports/   # CSV + PNG elsewhere

A sweep over methods and backbones (`-m peft=lora,ia3 model=vit_tiny,swin_tiny`) also gets a
method x model table of best accuracy; a sweep that repeats settings over seeds
(`-m peft.r=4,16 seed=1,2,3`) gets mean +- std and n per setting, and whether each setting's gap to
the best one is beyond the seed-to-seed noise; and every sweep the classes whose accuracy differs
most between its best and its worst run (from each job's per_class.csv).

Reads each job's metrics.json (rewritten after every epoch), so it works on a sweep that is still
running or had failures: unfinished jobs show their status and the epochs done so far.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

from peft_food.tracking.record import RunRecord
from peft_food.tracking.sweep import job_records

# best / final: the monitored metric (`monitor`, e.g. eval_accuracy) at the best and the last epoch.
COLUMNS = ["job", "status", "method", "model", "r", "alpha", "trainable_params", "saved_mb", "img_per_s",
           "monitor", "best", "final", "epochs", "runtime_s", "setting"]


def job_row(job: str, record: RunRecord) -> dict[str, Any]:
    config = record.config
    peft = config.get("peft", {})
    planned = config.get("train", {}).get("epochs")
    blank = lambda value: "" if value is None else value  # noqa: E731  (CSV cells)
    return {
        "job": job,
        "status": record.status,
        "method": record.method or peft.get("method", ""),
        "model": config.get("model", {}).get("name", ""),
        "r": peft.get("r", ""),
        "alpha": peft.get("alpha", ""),
        "trainable_params": record.counts.trainable_params if record.counts else "",
        # What the run saved, as its method saves it: adapter + head, a probe's or BitFit's tensors,
        # or the whole model (full fine-tuning).
        "saved_mb": blank(record.efficiency.model_size_mb),
        "img_per_s": blank(record.efficiency.train_img_per_s),
        "monitor": record.monitor,
        "best": blank(record.best),
        "final": blank(record.final),
        "epochs": f"{len(record.epochs)}/{planned:g}" if planned else str(len(record.epochs)),
        "runtime_s": blank(record.efficiency.runtime_s),
        # The setting without its seed (logger.setting: a sweep job's name less `seed=`).
        "setting": config.get("logger", {}).get("setting") or "",
        "error": record.error or "",
    }


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    return [job_row(job_dir.name, record) for job_dir, record in job_records(sweep_dir)]


def format_table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any, column: str) -> str:
        if isinstance(value, float):
            return f"{value:.1f}" if column in ("runtime_s", "img_per_s") else f"{value:.4f}"
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)

    cells = [[cell(row[c], c) for c in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths))]
    lines += ["  ".join(v.rjust(w) if v[:1].isdigit() else v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    lines += [f"job {row['job']} {row['status']}: {row['error']}" for row in rows if row["error"]]
    return "\n".join(lines)


def method_by_model(rows: list[dict[str, Any]]) -> str:
    """The best monitored value, one row per method and one column per model ("" when the sweep
    has one model)."""
    done = [r for r in rows if r["best"] != ""]
    models = sorted({r["model"] for r in done})
    if len(models) < 2:
        return ""
    methods = list(dict.fromkeys(r["method"] for r in done))
    best = {(r["method"], r["model"]): r["best"] for r in done}
    width = max(len(m) for m in [*models, "method / model"]) + 2
    lines = [f"best {done[0]['monitor']}".ljust(width) + "".join(m.rjust(width) for m in models)]
    for method in methods:
        cells = [f"{best[(method, m)]:.4f}" if (method, m) in best else "-" for m in models]
        lines.append(method.ljust(width) + "".join(c.rjust(width) for c in cells))
    return "\n".join(lines)


def by_setting(rows: list[dict[str, Any]]) -> str:
    """Mean +- std and n of the best value per setting, best first, and each setting's gap to the
    best one against the noise ("" unless some setting ran with several seeds). A gap counts as
    beyond the noise when it exceeds two standard errors of the difference of the two means."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        if row["best"] != "":
            groups.setdefault(row["setting"] or f"job {row['job']}", []).append(float(row["best"]))
    if all(len(values) < 2 for values in groups.values()):
        return ""
    stats = sorted(((name, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else math.nan, len(v))
                    for name, v in groups.items()), key=lambda s: -s[1])
    top_name, top_mean, top_std, top_n = stats[0]
    width = max(len(s[0]) for s in stats) + 2
    lines = [f"{'setting'.ljust(width)}  n  best {rows[0]['monitor']}: mean +- std   gap to {top_name}"]
    for name, mean, std, n in stats:
        line = f"{name.ljust(width)}{n:>3}  {mean:.4f} +- {std:.4f}"
        if name != top_name:
            noise = 2 * math.sqrt((top_std ** 2 if top_n > 1 else 0) / top_n + (std ** 2 if n > 1 else 0) / n)
            verdict = "within the noise" if top_mean - mean <= noise else "beyond the noise"
            line += f"   {mean - top_mean:+.4f} ({verdict}: 2 SE = {noise:.4f})"
        lines.append(line)
    return "\n".join(lines)


def class_gaps(sweep_dir: Path, rows: list[dict[str, Any]], *, top: int = 10) -> str:
    """The classes whose accuracy differs most between the best and the worst finished run."""
    done = [r for r in rows if r["best"] != "" and (sweep_dir / r["job"] / "per_class.csv").is_file()]
    if len(done) < 2:
        return ""
    best, worst = max(done, key=lambda r: r["best"]), min(done, key=lambda r: r["best"])

    def accuracy(job: str) -> dict[str, float]:
        with (sweep_dir / job / "per_class.csv").open() as f:
            return {r["class"]: float(r["accuracy"]) for r in csv.DictReader(f) if r["accuracy"]}

    high, low = accuracy(best["job"]), accuracy(worst["job"])
    gaps = sorted(((c, high[c] - low[c]) for c in high.keys() & low.keys() if high[c] != low[c]),
                  key=lambda g: (-abs(g[1]), g[0]))
    lines = [f"classes that differ most between the best run (job {best['job']}) and the worst (job {worst['job']}):"]
    lines += [f"  {name:<24}{high[name]:.3f} vs {low[name]:.3f}  ({gap:+.3f})" for name, gap in gaps[:top]]
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "error"])
        writer.writeheader()
        writer.writerows(rows)


def _heatmap(fig: Any, ax: Any, cells: dict[tuple[Any, Any], float], *, xs: list, ys: list, metric: str) -> None:
    """The best monitored value per (x, y) cell, written in each cell."""
    values = [[cells.get((x, y), math.nan) for x in xs] for y in ys]
    image = ax.imshow(values, origin="lower", cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=f"best {metric}")
    for (x, y), value in cells.items():
        bright = image.norm(value) > 0.6  # dark text on the yellow end of viridis
        ax.text(xs.index(x), ys.index(y), f"{value:.3f}", ha="center", va="center",
                color="black" if bright else "white", fontsize=9, fontweight="bold")
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])


def plot(rows: list[dict[str, Any]], path: Path, *, title: str) -> None:
    """Left: best accuracy on the method x model grid (several models) or the LoRA rank x alpha
    grid (one model). Right: accuracy against trainable parameters (log scale), colour by method
    and marker by model, so the cost of each point of accuracy is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["best"] != ""]
    metric = done[0]["monitor"] if done else "eval_accuracy"
    models = sorted({r["model"] for r in done})
    methods = list(dict.fromkeys(r["method"] for r in done))
    fig, (grid_ax, cost_ax) = plt.subplots(1, 2, figsize=(13, 5.2))
    # A rank x alpha grid: one method swept over both keys (whichever method has them).
    lora = [r for r in done if r["r"] != "" and r["alpha"] != ""] if len(methods) == 1 else []
    if len(models) > 1:
        _heatmap(fig, grid_ax, {(r["model"], r["method"]): r["best"] for r in done}, xs=models, ys=methods, metric=metric)
        grid_ax.set(xlabel="model", ylabel="method", title=f"Best {metric}: method x model")
    elif lora:
        _heatmap(fig, grid_ax, {(r["r"], r["alpha"]): r["best"] for r in lora},
                 xs=sorted({r["r"] for r in lora}), ys=sorted({r["alpha"] for r in lora}), metric=metric)
        grid_ax.set(xlabel="rank r", ylabel="alpha", title=f"Best {metric}: {methods[0]} rank x alpha")
    else:
        grid_ax.text(0.5, 0.5, "no rank x alpha grid in this sweep", ha="center", va="center", transform=grid_ax.transAxes)

    markers = dict(zip(models, "osD^vP*X"))
    colors = dict(zip(methods, plt.cm.tab10.colors))
    for r in done:
        cost_ax.scatter(r["trainable_params"], r["best"], s=60, alpha=0.8, color=colors[r["method"]],
                        marker=markers.get(r["model"], "o"))
        if len(models) == 1 and r["r"] != "":
            cost_ax.annotate(f"r={r['r']},a={r['alpha']}", (r["trainable_params"], r["best"]),
                             textcoords="offset points", xytext=(5, 4), fontsize=8)
    if done:
        cost_ax.set_xscale("log")
        handles = [plt.Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) for m in methods]
        if len(models) > 1:
            handles += [plt.Line2D([], [], color="grey", marker=markers[m], linestyle="", label=m) for m in models]
        cost_ax.legend(handles=handles, fontsize=8, loc="best")
    cost_ax.set(xlabel="trainable parameters (log)", ylabel=f"best {metric}",
                title=f"{metric} against trainable parameters")
    cost_ax.grid(True, alpha=0.3)
    failed = len(rows) - len(done)
    fig.suptitle(f"{title}  ({len(done)} of {len(rows)} jobs with results{f', {failed} without' if failed else ''})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
