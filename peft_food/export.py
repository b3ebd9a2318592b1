"""Export: merge a run into a standalone model that needs neither peft nor this package.

    peft-food-export outputs/2026-11-22/10-00-00 exported/food-vit
    python -c "from transformers import pipeline; print(pipeline('image-classification', model='exported/food-vit')('photo.jpg'))"

Each method's spec merges its own run (methods.py `merge`): every adapter (LoRA, DoRA, LoHa, LoKr,
IA3, VeRA, OFT) folds its update into the base weights with peft's merge_and_unload and the trained
head replaces the base's; full, linear-probe and BitFit runs already are plain models. The result
is saved as safetensors with its image processor and id2label, so every method exports alike.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from peft_food.artifacts import load_trained
from peft_food.errors import UserError
from peft_food.weights import label_maps


def export(run: Path, out_dir: Path) -> Path:
    trained = load_trained(run)
    model = trained.peft.merge(trained.model)
    for key, value in label_maps(trained.labels).items():
        setattr(model.config, key, value)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    trained.processor.save_pretrained(str(out_dir))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peft-food-export", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run dir (outputs/<date>/<time>) or its model/ dir")
    parser.add_argument("out_dir", type=Path, help="where to write the standalone model")
    args = parser.parse_args(argv)
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        print(f"peft-food-export: error: {args.out_dir} exists and is not empty: choose a new folder", file=sys.stderr)
        return 2
    try:
        with torch.no_grad():
            export(args.run, args.out_dir)
    except UserError as err:
        print(f"peft-food-export: error: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.run} to {args.out_dir} (load with transformers.pipeline('image-classification', "
          f"model='{args.out_dir}'))")
    return 0


def cli() -> None:
    sys.exit(main())
