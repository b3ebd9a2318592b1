"""Predict: classify photos with a trained run (LoRA adapter + head, or a full model).

    peft-food-predict outputs/2026-11-22/10-00-00 photo.jpg more_photos/ --top-k 5
    peft-food-predict outputs/2026-11-22/10-00-00 more_photos/ --json > predictions.jsonl

Images go through the run's own eval transform (resize + center crop from its image processor).
A bad file (corrupt, not an image, too small, a decompression bomb) gets a one-line error and
the others are still classified; the exit status is 1 if any input failed, 2 if the model could
not be loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from peft_food.data.images import IMAGE_SUFFIXES, BadImage, open_rgb
from peft_food.data.transforms import build_transforms, normalize
from peft_food.progress import bar
from peft_food.saved.artifacts import Trained


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
        for result, path in zip(results[start : start + batch_size], files[start : start + batch_size]):
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
            result.predictions = [
                {"label": trained.labels[i], "score": round(s, 6)} for s, i in zip(row_scores, row_indices)
            ]
    return results


def render(result: Result) -> str:
    if result.error:
        return f"{result.path}: error: {result.error}"
    lines = [result.path] + [f"  {p['score']:.4f}  {p['label']}" for p in result.predictions]
    return "\n".join(lines)
