"""Classify photos with a finished run (saved/predict.py).

peft-food-predict outputs/2026-11-22/10-00-00 my_photos/ dinner.jpg --top-k 5
peft-food-predict outputs/2026-11-22/10-00-00 my_photos/ --json > predictions.jsonl
peft-food-predict my-user/food-vit-lora dinner.jpg      # a repo peft-food-push made, from the Hub
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peft_food import progress
from peft_food.cli import add_trust_flag, exit_with, one_line_errors
from peft_food.cli.hub import offline_unless_reachable
from peft_food.saved.layout import find_model_dir, names_a_hub_repo


@one_line_errors("peft-food-predict")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peft-food-predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", type=Path, help="a run dir (outputs/<date>/<time>), its model/ dir, or a repo peft-food-push made"
    )
    parser.add_argument("inputs", type=Path, nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--top-k", type=int, default=5, help="labels to show per image (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image per line")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar (default: only on a terminal)",
    )
    parser.add_argument(
        "--base",
        type=Path,
        help="load the run's adapter or trained tensors onto this base model dir instead of the recorded base",
    )
    add_trust_flag(parser)
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be at least 1")
    from_hub = names_a_hub_repo(args.model)  # <user>/<repo>: the repo peft-food-push made
    if not from_hub:
        find_model_dir(args.model)  # a wrong path is one line before the Hub probe and torch
    offline_unless_reachable()  # the repo or the base model may come from the Hub: no Hub, no retries
    if from_hub:
        from peft_food.saved.hub import downloaded

        args.model = downloaded(str(args.model))  # through the Hub's cache
        find_model_dir(args.model)
    # torch loads once the arguments parse: --help answers at once.
    from peft_food.saved.artifacts import load_trained
    from peft_food.saved.predict import classify, expand, render

    trained = load_trained(args.model, base=args.base, trust_remote_code=args.trust_remote_code)
    if trained.base_note:
        print(f"peft-food-predict: {trained.base_note}", file=sys.stderr)
    files, results = expand(args.inputs)
    progress.use(args.progress)
    results = classify(trained, files, top_k=args.top_k, batch_size=args.batch_size) + results
    for result in results:
        print(result.as_json() if args.json else render(result))
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"peft-food-predict: {failed} of {len(results)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def cli() -> None:
    exit_with(main)
