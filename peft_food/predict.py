"""Predict: classify photos with a trained run (LoRA adapter + head, or a full model).

    peft-food-predict outputs/2026-11-22/10-00-00 photo.jpg more_photos/ --top-k 5
    peft-food-predict outputs/2026-11-22/10-00-00 more_photos/ --json > predictions.jsonl

Images go through the run's own eval transform (resize + center crop from its image processor).
A bad file (corrupt, not an image, too small, a decompression bomb) gets a one-line error and
the others are still classified; the exit status is 1 if any input failed, 2 if the model could
not be loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from peft_food import progress
from peft_food.artifacts import Trained, load_trained
from peft_food.errors import UserError
from peft_food.images import IMAGE_SUFFIXES, BadImage, open_rgb
from peft_food.progress import bar
from peft_food.transforms import build_transforms, normalize


@dataclass
class Result:
    path: str
    predictions: list[dict[str, float | str]] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> str:
        body = {"error": self.error} if self.error else {"predictions": self.predictions}
        return json.dumps({"path": self.path, **body})


def expand(inputs: list[Path]) -> tuple[list[Path], list[Result]]:
    """Files to classify, and errors for inputs that give none (missing, empty folder)."""
    files, errors = [], []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(Result(str(path), error=f"folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"))
            files += found
        elif path.is_file():
            files.append(path)
        else:
            errors.append(Result(str(path), error="no such file or folder"))
    return files, errors


@torch.inference_mode()
def classify(trained: Trained, files: list[Path], *, top_k: int, batch_size: int) -> list[Result]:
    _, eval_tf = build_transforms(trained.processor)
    k = min(top_k, len(trained.labels))
    results = [Result(str(path)) for path in files]
    batches = range(0, len(files), batch_size)
    for start in bar(batches, desc="predicting", unit="batch"):
        good, pixels = [], []
        for result, path in zip(results[start:start + batch_size], files[start:start + batch_size]):
            try:
                pixels.append(eval_tf(open_rgb(path)))
                good.append(result)
            except BadImage as err:
                result.error = str(err)
        if not good:
            continue
        batch = normalize(torch.stack(pixels), mean=trained.processor.image_mean, std=trained.processor.image_std)
        logits = trained.model(pixel_values=batch).logits
        scores, indices = logits.softmax(-1).topk(k, dim=-1)
        for result, row_scores, row_indices in zip(good, scores.tolist(), indices.tolist()):
            result.predictions = [{"label": trained.labels[i], "score": round(s, 6)}
                                  for s, i in zip(row_scores, row_indices)]
    return results


def render(result: Result) -> str:
    if result.error:
        return f"{result.path}: error: {result.error}"
    lines = [result.path] + [f"  {p['score']:.4f}  {p['label']}" for p in result.predictions]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peft-food-predict", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a run dir (outputs/<date>/<time>) or its model/ dir")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--top-k", type=int, default=5, help="labels to show per image (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image per line")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress bar (default: only on a terminal)")
    parser.add_argument("--base", type=Path, help="load the run's adapter or trained tensors onto this base model dir instead of the recorded base")
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be at least 1")
    try:
        trained = load_trained(args.model, base=args.base)
    except UserError as err:
        print(f"peft-food-predict: error: {err}", file=sys.stderr)
        return 2
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
    sys.exit(main())
