"""Committed experiment records: record a finished run or sweep, re-run it, check the numbers
(training/reproduce.py).

    peft-food-reproduce experiments/quickstart                 # re-run, compare, exit 0 if it matches
    peft-food-reproduce experiments/my_exp --record outputs/2026-11-22/10-00-00 --description "..."
    peft-food-reproduce experiments/my_gpu_exp --pending experiment=seed_lora   # config now, results later
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from omegaconf import OmegaConf

from peft_food.cli import exit_with, one_line_errors
from peft_food.cli.hub import offline_unless_reachable
from peft_food.errors import Interrupted
from peft_food.training.reproduce import (
    explain_versions,
    load_record,
    record,
    record_pending,
    reproduce,
    unfinished_rerun,
)


@contextmanager
def training_lines() -> Iterator[None]:
    """The re-runs' own lines on stdout while they train, as peft-food-train shows them (its start,
    one line per epoch, progress lines in a redirected log, its result): outside Hydra nothing else
    gives the package's loggers a handler, and INFO lines would be dropped."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logger = logging.getLogger("peft_food")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@one_line_errors("peft-food-reproduce")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peft-food-reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("record_dir", type=Path, help="an experiment record, e.g. experiments/quickstart")
    parser.add_argument(
        "--record",
        type=Path,
        metavar="RUN_OR_SWEEP_DIR",
        help="create/refresh the record from a finished run or sweep instead of re-running",
    )
    parser.add_argument(
        "--pending",
        nargs="+",
        metavar="OVERRIDE",
        help="create a record awaiting results from these peft-food-train overrides",
    )
    parser.add_argument("--hardware", default="GPU", help="with --pending: where it must run")
    parser.add_argument("--description", default="", help="with --record/--pending: what the experiment shows")
    parser.add_argument(
        "--out",
        type=Path,
        help="where re-runs write (default outputs/reproduce/<name>/<time>; "
        "the newest unfinished one there is continued)",
    )
    parser.add_argument("--wandb", action="store_true", help="log re-runs to W&B as the record's config says")
    args = parser.parse_args(argv)
    if args.pending:
        record_pending(args.record_dir, overrides=args.pending, description=args.description, hardware=args.hardware)
        command = OmegaConf.load(args.record_dir / "experiment.yaml").command
        print(f"wrote {args.record_dir}, awaiting results from `{command}`")
        return 0
    if args.record:
        record(args.record, args.record_dir, description=args.description)
        print(f"recorded {args.record} as {args.record_dir}")
        return 0
    load_record(args.record_dir)  # a mistyped folder is one line before torch loads
    offline_unless_reachable()  # a re-run may load its model or data from the Hub: no Hub, no retries
    reruns = Path("outputs/reproduce") / args.record_dir.name
    out = args.out or unfinished_rerun(reruns, args.record_dir) or reruns / time.strftime("%Y-%m-%d_%H-%M-%S")
    try:
        with training_lines():
            outcome = reproduce(args.record_dir, out_dir=out, wandb=args.wandb)
    except Interrupted as err:  # a job stopped by a signal: resumable, the same command continues it
        print(f"peft-food-reproduce: {err}", file=sys.stderr)
        return 128 + err.signum
    versions = "\n".join(f"  {line}" for line in explain_versions(outcome))
    if outcome.diffs:
        print(f"\n{args.record_dir.name}: NOT reproduced ({len(outcome.diffs)} difference(s)):")
        print("\n".join(f"  {d}" for d in outcome.diffs))
        print(versions)
        return 1
    exact = "exactly" if not outcome.numeric_changes else "within the cross-version tolerance"
    print(f"\n{args.record_dir.name}: reproduced {exact}\n{versions}")
    return 0


def cli() -> None:
    exit_with(main)
