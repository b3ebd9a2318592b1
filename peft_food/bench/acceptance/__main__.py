"""`python -m peft_food.bench.acceptance OUT_DIR [--size full|toy] [--budget-s 420] [--parts ...] [--methods ...]`:
the GPU acceptance run (see __init__.py). Its arguments are checked before torch is imported."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

STARTED = time.monotonic()  # the budget counts from here: imports included

from peft_food.bench.acceptance.compose import shipped_methods  # noqa: E402  (torch-free, as sizes)
from peft_food.bench.acceptance.sizes import PARTS, SIZES  # noqa: E402


def names(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m peft_food.bench.acceptance",
        description="GPU checks and benchmark in one run; every figure to OUT_DIR/acceptance.json.",
    )
    p.add_argument(
        "out_dir", type=Path, help="where acceptance.json is written (e.g. experiments/gpu_acceptance/<date>)"
    )
    p.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="full",
        help="full: ViT-B/16 at 224 px (the GPU targets); toy: a tiny ViT, seconds on CPU (what CI runs)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="stop before this many seconds from start, skipping what would not fit (default 420)",
    )
    p.add_argument(
        "--parts",
        type=names,
        help=f"groups of parts to run, comma-separated: {', '.join(PARTS)} "
        "(default: all; a run the budget cut short prints the line that runs the rest)",
    )
    p.add_argument(
        "--methods",
        type=names,
        help="methods to check, comma-separated (default: every shipped one at full, five at toy)",
    )
    return p


def main(argv: list[str]) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.budget_s <= 0:
        p.error(f"--budget-s {args.budget_s:g} is invalid: give a positive number of seconds, e.g. 420")
    for option, given, known in (("--parts", args.parts, PARTS), ("--methods", args.methods, shipped_methods())):
        unknown = sorted(set(given or []) - set(known))
        if unknown:
            p.error(f"{option} has unknown {', '.join(unknown)}: choose from {', '.join(known)}")
    from peft_food.bench.acceptance.run import acceptance  # torch, transformers, peft: only now

    return acceptance(
        args.out_dir,
        size_name=args.size,
        budget_s=args.budget_s,
        methods=args.methods,
        parts=args.parts,
        argv=argv,
        started=STARTED,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
