"""`python -m peft_food.bench.acceptance OUT_DIR [--size toy|full] [--budget-s 420] [--methods a,b]`:
the GPU acceptance run (see __init__.py). Parses its arguments before importing torch."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

STARTED = time.monotonic()


def parser() -> argparse.ArgumentParser:
    from peft_food.bench.acceptance.sizes import SIZES

    p = argparse.ArgumentParser(prog="python -m peft_food.bench.acceptance",
                                description="GPU checks and benchmark in one run; every figure to OUT_DIR/acceptance.json.")
    p.add_argument("out_dir", type=Path, help="where acceptance.json is written (e.g. experiments/gpu_acceptance/<date>)")
    p.add_argument("--size", choices=sorted(SIZES), default="full",
                   help="full: ViT-B/16 at 224 px (the GPU targets); toy: a tiny ViT, seconds on CPU (what CI runs)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="stop before this many seconds from start, skipping what would not fit (default 420)")
    p.add_argument("--methods", type=lambda s: [m for m in s.split(",") if m],
                   help="the methods to check, comma-separated (default: every shipped one at full, five at toy)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.budget_s <= 0:
        parser().error(f"--budget-s {args.budget_s:g} is invalid: give a positive number of seconds, e.g. 420")
    from peft_food.bench.acceptance.compose import shipped_methods

    unknown = sorted(set(args.methods or []) - set(shipped_methods()))
    if unknown:
        parser().error(f"--methods has unknown {', '.join(unknown)}: choose from {', '.join(shipped_methods())}")
    from peft_food.bench.acceptance.run import acceptance

    return acceptance(args.out_dir, size_name=args.size, budget_s=args.budget_s, methods=args.methods,
                      argv=argv, started=STARTED)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
