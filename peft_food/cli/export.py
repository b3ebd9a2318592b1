"""Export: merge a run into a standalone model that needs neither peft nor this package (saved/export.py).

peft-food-export outputs/2026-11-22/10-00-00 exported/food-vit
python -c "from transformers import pipeline; print(pipeline('image-classification', model='exported/food-vit')('photo.jpg'))"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peft_food.cli import add_trust_flag, exit_with, one_line_errors
from peft_food.cli.hub import offline_unless_reachable
from peft_food.saved.layout import find_model_dir


@one_line_errors("peft-food-export")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peft-food-export", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run dir (outputs/<date>/<time>) or its model/ dir")
    parser.add_argument("out_dir", type=Path, help="where to write the standalone model")
    add_trust_flag(parser)
    args = parser.parse_args(argv)
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        print(f"peft-food-export: error: {args.out_dir} exists and is not empty: choose a new folder", file=sys.stderr)
        return 2
    find_model_dir(args.run)  # a wrong path is one line before torch loads
    offline_unless_reachable()  # the base model may come from the Hub: no Hub, no retries
    # torch loads once the arguments parse: --help answers at once.
    import torch

    from peft_food.saved.export import export

    with torch.no_grad():
        export(
            args.run,
            args.out_dir,
            trust_remote_code=args.trust_remote_code,
            say=lambda note: print(f"peft-food-export: {note}", file=sys.stderr),
        )
    print(
        f"exported {args.run} to {args.out_dir} (load with transformers.pipeline('image-classification', "
        f"model='{args.out_dir}'))"
    )
    return 0


def cli() -> None:
    exit_with(main)
