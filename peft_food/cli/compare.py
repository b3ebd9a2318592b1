"""Compare the jobs of a sweep without W&B: a table, a CSV and a PNG (tracking/compare.py,
tracking/plots.py); --wandb logs the PNG and the table to a W&B run too.

    peft-food-compare multirun/2026-11-22/10-00-00
    peft-food-compare multirun/2026-11-22/10-00-00 --out reports/   # CSV + PNG elsewhere
    peft-food-compare experiments/mini_methods/runs --wandb          # and to W&B (offline without a key)
    peft-food-compare experiments/mini_methods experiments/mini_vpt  # several sweeps as one table
    peft-food-compare outputs/2026-11-22/10-00-00 outputs/2026-11-22/11-00-00 --out reports/  # run dirs: one run each
"""

from __future__ import annotations

import argparse
from pathlib import Path

from peft_food.cli import exit_with, one_line_errors
from peft_food.errors import UserError
from peft_food.tracking.compare import (
    COLUMNS,
    by_setting,
    class_gaps,
    collect,
    format_table,
    method_by_model,
    write_csv,
)
from peft_food.tracking.plots import plot
from peft_food.tracking.sweep import is_run_dir


@one_line_errors("peft-food-compare")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peft-food-compare", description=__doc__.splitlines()[0])
    parser.add_argument(
        "sweep_dirs",
        type=Path,
        nargs="+",
        metavar="sweep_dir",
        help="a multirun dir (holding 0/, 1/, ...), a committed record, or a run dir (one run); several are "
        "compared as one",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write compare.csv/.png (default: the first sweep_dir; nowhere when that is a run dir)",
    )
    parser.add_argument("--wandb", action="store_true", help="also log the PNG and the table to a W&B run")
    args = parser.parse_args(argv)
    for sweep_dir in args.sweep_dirs:
        if not sweep_dir.is_dir():
            raise UserError(f"{sweep_dir} is not a directory: pass a multirun sweep dir")
    # A run dir is one run's data: compare reads it and writes into it only when --out says so.
    out = args.out or (None if is_run_dir(args.sweep_dirs[0]) else args.sweep_dirs[0])
    if args.wandb and out is None:
        raise UserError(
            f"{args.sweep_dirs[0]} is a run dir, which compare does not write into: pass --out DIR for "
            f"the compare.png that --wandb logs"
        )
    rows = collect(*args.sweep_dirs)
    if not rows:
        raise UserError(
            f"no jobs in {' '.join(map(str, args.sweep_dirs))}: expected job dirs with .hydra/ "
            f"(e.g. multirun/<date>/<time>)"
        )
    print(format_table(rows))
    for section in (method_by_model(rows), by_setting(rows), class_gaps(rows)):
        if section:
            print(f"\n{section}")
    if out is None:
        print(
            f"\n{args.sweep_dirs[0]} is a run dir (one run): wrote no compare.csv/.png into it; pass --out DIR "
            f"to write them"
        )
        return 0
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "compare.csv")
    plot(rows, out / "compare.png", title=" + ".join(map(str, args.sweep_dirs)))
    print(f"\nwrote {out / 'compare.csv'} and {out / 'compare.png'}")
    if args.wandb:
        from peft_food.tracking.wandb_run import log_comparison

        run = log_comparison(
            figure=out / "compare.png",
            rows=rows,
            columns=COLUMNS,
            out_dir=out,
            name=f"compare-{'+'.join(d.resolve().name for d in args.sweep_dirs)}",
        )
        print(f"logged to W&B run {run.id} ({run.settings.mode})")
    return 0


def cli() -> None:
    exit_with(main)
