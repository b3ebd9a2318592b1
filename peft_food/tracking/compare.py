"""Compare the jobs of a sweep without W&B: a table, a CSV and a PNG, each saying its protocol.

    peft-food-compare multirun/2026-11-22/10-00-00
    peft-food-compare multirun/2026-11-22/10-00-00 --out reports/   # CSV + PNG elsewhere
    peft-food-compare experiments/mini_methods experiments/mini_vpt  # several sweeps as one table

Every choice is made on val and every reported number is test (docs/protocol.md): per job, `val`
is the monitored metric's best value over the epochs (on val, it picked the checkpoint) and
`test` that checkpoint's test value (`test_final`: the last epoch's). A sweep that repeats
settings over seeds (`-m peft.r=4,16 seed=1,2,3`) gets, per setting, val and test as mean +- std
over its n seeds, the setting with the best mean val first, and whether each other setting's test
gap to it is beyond the seed-to-seed noise. A sweep over methods and backbones also gets a method
x model table (the test value of each cell's setting with the best val), and every sweep the
classes whose test accuracy differs most between its best and worst run by val.

Reads each job's metrics.json (rewritten after every epoch), so it works on a sweep that is still
running or had failures: unfinished jobs show their status and the epochs done so far.
"""

from __future__ import annotations

import csv
import math
import statistics
import textwrap
from pathlib import Path
from typing import Any

from peft_food.tracking.record import RunRecord
from peft_food.tracking.sweep import job_records

COLUMNS = [
    "job",
    "status",
    "method",
    "model",
    "r",
    "alpha",
    "trainable_params",
    "saved_mb",
    "img_per_s",
    "monitor",
    "val",
    "test",
    "test_final",
    "protocol",
    "epochs",
    "runtime_s",
    "setting",
]


def job_row(job: str, record: RunRecord) -> dict[str, Any]:
    config = record.config
    peft = config.get("peft", {})
    planned = config.get("train", {}).get("epochs")
    metric = record.monitor.removeprefix("eval_")
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
        "val": blank(record.best),
        "test": blank(record.reported(metric)),
        "test_final": blank(record.reported(metric, checkpoint="final")),
        "protocol": record.protocol,
        "epochs": f"{len(record.epochs)}/{planned:g}" if planned else str(len(record.epochs)),
        "runtime_s": blank(record.efficiency.runtime_s),
        # The setting without its seed (logger.setting: a sweep job's name less `seed=`).
        "setting": config.get("logger", {}).get("setting") or "",
        "error": record.error or "",
        "described": record.describe_protocol(metric) if record.counts else "",
    }


def collect(*sweep_dirs: Path) -> list[dict[str, Any]]:
    """A row per job of each sweep (or committed record, or run dir: one job). With several, a job
    is named `<sweep>/<job>`, so two multiruns' `0/` stay apart; a run dir given itself is named
    `<date>/<time>`; `dir` keeps where its files are."""

    def name(sweep_dir: Path, job_dir: Path) -> str:
        if job_dir == sweep_dir:
            return "/".join(sweep_dir.resolve().parts[-2:])
        return f"{sweep_dir.resolve().name}/{job_dir.name}" if len(sweep_dirs) > 1 else job_dir.name

    return [
        {**job_row(name(sweep_dir, job_dir), record), "dir": job_dir}
        for sweep_dir in sweep_dirs
        for job_dir, record in job_records(sweep_dir)
    ]


def finished(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with a reported value (protocol retrain rows have no val: nothing was selected)."""
    return [r for r in rows if r["test"] != ""]


def caption(rows: list[dict[str, Any]]) -> str:
    """How the table's numbers were obtained, in words (one line per protocol present)."""
    done = finished(rows)
    if not done:
        return ""
    metric = done[0]["monitor"].removeprefix("eval_")
    lines = [
        f"val: best val {metric} over the epochs (picks the checkpoint); test: that checkpoint's test "
        f"{metric}; test_final: the last epoch's. One run per row."
    ]
    if any(r["protocol"] == "seed" for r in done):
        lines.append(
            "protocol seed rows: val and test are one held-out split, so test is selected on the reported split"
        )
    return "\n".join(lines)


# The terminal table: at most WIDTH characters a line (compare.csv holds every column). A column whose
# value is the same for every job is said once below the table; the others are left out from the
# last of DROPPED on until the table fits. The first five always show.
WIDTH = 100
SHOWN = ["job", "method", "model", "val", "test", "status", "test_final", "trainable_params", "epochs", "r", "alpha"]
SHOWN += ["img_per_s", "saved_mb", "runtime_s", "protocol"]
HEADERS = {"trainable_params": "params", "img_per_s": "img/s", "saved_mb": "MB", "runtime_s": "time_s"}
ORDER = ["job", "status", "method", "model", "r", "alpha", "trainable_params", "val", "test", "test_final"]
ORDER += ["epochs", "img_per_s", "saved_mb", "runtime_s", "protocol"]


def _cell(value: Any, column: str) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if column in ("runtime_s", "img_per_s") else f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def table_columns(rows: list[dict[str, Any]], *, width: int = WIDTH) -> tuple[list[str], dict[str, str], list[str]]:
    """(the columns shown in ORDER, {column: its one value} for those the same in every row, the
    columns left out to fit `width`)."""
    cells = {c: [_cell(r[c], c) for r in rows] for c in ORDER}
    same = {c: v[0] for c, v in cells.items() if c not in SHOWN[:5] and len(rows) > 1 and len(set(v)) == 1}
    shown = [c for c in SHOWN if c not in same]
    wide = {c: max(len(HEADERS.get(c, c)), *map(len, cells[c])) for c in ORDER}
    dropped = []
    while sum(wide[c] for c in shown) + 2 * (len(shown) - 1) > width and len(shown) > 5:
        dropped.insert(0, shown.pop())
    return [c for c in ORDER if c in shown], same, dropped


def format_table(rows: list[dict[str, Any]], *, width: int = WIDTH) -> str:
    """One row per job in at most `width` characters, then what every job shares (said once), each
    failed job's error (one line each, as long as it is) and the caption."""
    columns, same, dropped = table_columns(rows, width=width)
    cells = [[_cell(row[c], c) for c in columns] for row in rows]
    headers = [HEADERS.get(c, c) for c in columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += [
        "  ".join(v.rjust(w) if v[:1].isdigit() else v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells
    ]
    shared = ", ".join(f"{HEADERS.get(c, c)} {v}" for c, v in same.items() if v)
    lines += textwrap.wrap(f"every job: {shared}", width) if shared else []
    # Each error whole on one line (a path in it stays whole, and `grep "job 3"` finds it).
    lines += [f"job {row['job']} {row['status']}: {row['error']}" for row in rows if row["error"]]
    notes = [caption(rows)]
    if dropped:
        notes.append(f"left out to fit {width} columns (compare.csv has every column): {', '.join(dropped)}")
    lines += [wrapped for note in notes for line in note.splitlines() for wrapped in textwrap.wrap(line, width)]
    return "\n".join(lines).rstrip()


def settings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per setting (a sweep job's name less its seed): n seeds, val and test mean and
    std (nan for one seed), and the method, model, rank, alpha and trainable parameters; best
    mean val first (what a user would pick, on val only)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in finished(rows):
        groups.setdefault(row["setting"] or f"job {row['job']}", []).append(row)
    out = []
    for name, members in groups.items():
        vals = [float(r["val"]) if r["val"] != "" else math.nan for r in members]
        tests = [float(r["test"]) for r in members]
        out.append(
            {
                **{k: members[0][k] for k in ("method", "model", "r", "alpha", "trainable_params", "monitor")},
                "setting": name,
                "n": len(members),
                "val": statistics.fmean(vals),
                "test": statistics.fmean(tests),
                "val_std": statistics.stdev(vals) if len(vals) > 1 else math.nan,
                "test_std": statistics.stdev(tests) if len(tests) > 1 else math.nan,
            }
        )
    return sorted(out, key=lambda s: math.inf if math.isnan(s["val"]) else -s["val"])  # no val (retrain) last


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} +- {std:.4f}"


def method_by_model(rows: list[dict[str, Any]]) -> str:
    """Test value of the setting with the best mean val, one row per method and one column per
    model ("" when the sweep has one model)."""
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for s in settings(rows):  # best val first: the first seen per cell is its selection
        chosen.setdefault((s["method"], s["model"]), s)
    models = sorted({m for _, m in chosen})
    if len(models) < 2:
        return ""
    methods = list(dict.fromkeys(r["method"] for r in finished(rows)))
    cells = {key: _mean_std(s["test"], s["test_std"]) for key, s in chosen.items()}
    width = max(len(c) for c in [*models, *methods, *cells.values(), "method / model"]) + 2
    metric = next(iter(chosen.values()))["monitor"].removeprefix("eval_")
    lines = [f"test {metric}".ljust(width) + "".join(m.rjust(width) for m in models)]
    for method in methods:
        lines.append(method.ljust(width) + "".join(cells.get((method, m), "-").rjust(width) for m in models))
    lines += textwrap.wrap(
        f"each cell: test {metric} of the cell's setting with the best val {metric} (mean +- std over "
        f"seeds where a setting ran several)",
        WIDTH,
    )
    return "\n".join(lines)


def by_setting(rows: list[dict[str, Any]]) -> str:
    """Val and test as mean +- std over seeds per setting, best val first, and each setting's test
    gap to the val-selected one against the noise ("" unless some setting ran with several seeds).
    A gap counts as beyond the noise when it exceeds two standard errors of the difference of the
    two means."""
    stats = settings(rows)
    if all(s["n"] < 2 for s in stats):
        return ""
    top = stats[0]
    metric = top["monitor"].removeprefix("eval_")
    width = max(len(s["setting"]) for s in stats) + 2
    lines = [
        f"{'setting'.ljust(width)}  n  val {metric}: mean +- std   test {metric}: mean +- std   "
        f"test gap to {top['setting']} (selected on val)"
    ]
    for s in stats:
        line = (
            f"{s['setting'].ljust(width)}{s['n']:>3}  {_mean_std(s['val'], s['val_std'])}   "
            f"{_mean_std(s['test'], s['test_std'])}"
        )
        if s is not top:
            var = lambda x: 0 if math.isnan(x["test_std"]) else x["test_std"] ** 2 / x["n"]  # noqa: E731
            noise = 2 * math.sqrt(var(top) + var(s))
            verdict = "within the noise" if abs(top["test"] - s["test"]) <= noise else "beyond the noise"
            line += f"   {s['test'] - top['test']:+.4f} ({verdict}: 2 SE = {noise:.4f})"
        lines.append(line)
    return "\n".join(lines)


def class_gaps(rows: list[dict[str, Any]], *, top: int = 10) -> str:
    """The classes whose test accuracy differs most between the best and the worst run by val."""
    done = [r for r in finished(rows) if (r["dir"] / "per_class.csv").is_file()]
    if len(done) < 2:
        return ""
    done = [r for r in done if r["val"] != ""]
    if len(done) < 2:
        return ""
    best, worst = max(done, key=lambda r: r["val"]), min(done, key=lambda r: r["val"])
    if best["val"] == worst["val"]:  # every run ties: no best and worst to set apart
        metric = best["monitor"].removeprefix("eval_")
        return (
            f"test accuracy per class: not shown, every run has the same best val {metric} "
            f"({float(best['val']):.4f}), so none is best or worst"
        )

    def accuracy(row: dict[str, Any]) -> dict[str, float]:
        with (row["dir"] / "per_class.csv").open() as f:
            return {r["class"]: float(r["accuracy"]) for r in csv.DictReader(f) if r["accuracy"]}

    high, low = accuracy(best), accuracy(worst)
    gaps = sorted(
        ((c, high[c] - low[c]) for c in high.keys() & low.keys() if high[c] != low[c]), key=lambda g: (-abs(g[1]), g[0])
    )
    if not gaps:
        return (
            f"test accuracy per class: the same in every class for the best run by val (job {best['job']}) "
            f"and the worst (job {worst['job']})"
        )
    lines = [f"test accuracy per class, best run by val (job {best['job']}) vs worst (job {worst['job']}):"]
    lines += [f"  {name:<24}{high[name]:.3f} vs {low[name]:.3f}  ({gap:+.3f})" for name, gap in gaps[:top]]
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "error"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes: fewer (or as many) parameters and higher
    accuracy. In increasing parameter order."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front
