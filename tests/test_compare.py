"""peft-food-compare's table and figure stay readable at the size of the methods grid (74 jobs, 18
methods, 4 backbones), on records made up here: what is plotted and printed is asserted, not pixels."""

import random
from pathlib import Path

import numpy as np
import pytest

from peft_food.tracking.compare import class_gaps, format_table
from peft_food.tracking.plots import figure, method_styles

METHODS = ["full", "linear_probe", "bitfit", "lora", "dora", "loha", "lokr", "ia3", "vera"]
METHODS += ["oft", "boft", "hra", "ln_tuning", "adalora", "vpt", "vpt_deep", "ssf", "adaptformer"]
MODELS = ["vit_tiny", "deit_tiny", "dinov2_tiny", "swin_tiny"]


def row(job: str, *, method: str, model: str, params: int, val: float, test: float, **more) -> dict:
    """A job as compare.collect reads it from a completed record."""
    return {
        "job": job,
        "status": "completed",
        "method": method,
        "model": model,
        "r": 8 if method in ("lora", "dora", "loha", "lokr", "adalora") else "",
        "alpha": 16 if method in ("lora", "dora", "loha", "lokr", "adalora") else "",
        "trainable_params": params,
        "saved_mb": round(params * 4 / 2**20, 3),
        "img_per_s": 1234.5,
        "monitor": "eval_accuracy",
        "val": val,
        "test": test,
        "test_final": round(test - 0.01, 4),
        "protocol": "val_test",
        "epochs": "8/8",
        "runtime_s": 123.4,
        "setting": f"model={model},peft={method}",
        "error": "",
        "described": "",
        "dir": Path("/nonexistent"),
        **more,
    }


def methods_grid(seed: int = 0) -> list[dict]:
    """74 jobs: every method on every backbone but VPT on Swin (70), and 4 more seeds of one setting."""
    rng = random.Random(seed)
    pairs = [(mo, me) for mo in MODELS for me in METHODS if not (mo == "swin_tiny" and me.startswith("vpt"))]
    rows = []
    for model, method in pairs:
        val = round(rng.uniform(0.13, 0.24), 3)
        rows.append(
            row(
                f"mini_methods/{len(rows)}",
                method=method,
                model=model,
                params=int(10 ** rng.uniform(2.8, 5.2)),
                val=val,
                test=round(val + rng.uniform(-0.02, 0.02), 3),
            )
        )
    for _ in range(4):
        again = dict(rows[3])  # lora on vit_tiny, another seed
        again.update(job=f"mini_methods/{len(rows)}", test=round(again["test"] + rng.uniform(-0.02, 0.02), 3))
        rows.append(again)
    return rows


def test_eighteen_methods_get_eighteen_distinct_colour_and_marker_pairs():
    styles = method_styles(METHODS)
    assert len(set(styles.values())) == 18
    plotted = figure(methods_grid(), title="grid")
    pairs = {
        (
            tuple(np.round(line.get_color(), 4)) if not isinstance(line.get_color(), str) else line.get_color(),
            line.get_marker(),
        )
        for ax in plotted.axes
        for line in ax.get_lines()
        if line.get_marker() not in (None, "None", "", "_")
    }
    assert len(pairs) == 18  # each method drawn in its own pair, on every backbone's panel


def test_the_74_job_figure_has_its_legend_outside_the_panels_and_no_labels_that_collide():
    plotted = figure(methods_grid(), title="grid")
    renderer = plotted.canvas.get_renderer()
    panels = [ax for ax in plotted.axes if ax.get_xscale() == "log"]
    assert sorted(ax.get_title() for ax in panels) == sorted(MODELS)  # one panel per backbone
    assert all(ax.get_legend() is None for ax in plotted.axes)  # no legend inside any panel
    [legend] = [leg for sub in plotted.subfigs for leg in sub.legends]
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in panels)
    labelled = 0
    for ax in panels:
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        labelled += len(boxes)
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        assert all(ax.get_window_extent(renderer).contains(b.x0, b.y0) for b in boxes)
    assert labelled >= 50  # most of the 71 settings carry their name


@pytest.mark.parametrize("dominated", [True, False])
def test_a_pareto_front_is_in_the_legend_only_where_a_line_is_drawn(dominated):
    rows = [
        row("0", method="lora", model="vit_tiny", params=1000, val=0.5, test=0.5),
        row("1", method="full", model="vit_tiny", params=90000, val=0.4, test=0.4 if dominated else 0.6),
    ]
    plotted = figure(rows, title="two jobs")
    [legend] = plotted.legends
    names = [t.get_text() for t in legend.get_texts()]
    dashed = [line for ax in plotted.axes for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert ("Pareto front" in names) == (not dominated) == bool(dashed)


def test_the_per_job_table_of_74_jobs_fits_100_columns_and_says_what_it_left_out():
    rows = methods_grid()
    error = "ConfigError: peft.r=0 is invalid: use a positive integer, e.g. peft.r=8 " + "x" * 60
    rows[5].update(status="failed", test="", val="", test_final="", error=error)
    lines = format_table(rows).splitlines()
    errors = [line for line in lines if line.startswith("job mini_methods/")]
    assert errors == [f"job mini_methods/5 failed: {error}"]  # whole, on one line
    table = [line for line in lines if line not in errors]
    assert max(map(len, table)) <= 100, max(table, key=len)
    assert table[0].split()[:4] == ["job", "status", "method", "model"]
    assert len([line for line in table if line.startswith("mini_methods/")]) == 74
    assert any(line.startswith("every job: ") and "protocol val_test" in line for line in table)
    assert any(line.startswith("left out to fit 100 columns (compare.csv has every column): ") for line in table)


def test_tied_best_and_worst_runs_say_so_instead_of_an_empty_contrast(tmp_path):
    for job in ("0", "1"):
        (tmp_path / job).mkdir()
        (tmp_path / job / "per_class.csv").write_text("class,eval images,accuracy\npho,4,0.5\nramen,4,0.25\n")
    rows = [
        row(job, method="lora", model="vit_tiny", params=1000, val=0.5, test=0.5, dir=tmp_path / job) for job in "01"
    ]
    assert class_gaps(rows) == (
        "test accuracy per class: not shown, every run has the same best val accuracy (0.5000), so none is "
        "best or worst"
    )
