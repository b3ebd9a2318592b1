"""Preprocessing: the seed's augmentations sized by the checkpoint's image processor, attached
lazily to the datasets, and the collate that batches them.

    train: RandomResizedCrop + RandomHorizontalFlip     eval: Resize(shorter side) + CenterCrop
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from PIL import Image as PILImage
from torchvision import transforms as T

from peft_food.data import Splits
from peft_food.images import to_rgb

log = logging.getLogger(__name__)


def _sizes(processor: Any) -> tuple[tuple[int, int], int]:
    """(model input height/width, eval resize of the shorter side), as the processor says:
    resize to `size`, then centre-crop to `crop_size` where it crops (DeiT, DINOv2: 256 -> 224)."""
    size = processor.size
    resize = size["height"] if "height" in size else size["shortest_edge"]
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    if crop:
        return (crop["height"], crop["width"]), resize
    if "height" in size:
        return (size["height"], size["width"]), resize
    return (resize, resize), resize


def build_transforms(processor: Any, *, uint8: bool = True) -> tuple[T.Compose, T.Compose]:
    """The seed's augmentations, sized by the checkpoint's own image processor.

    uint8=True stops at a uint8 tensor: 4x less data crosses from the dataloader workers, and
    `normalize` then scales a whole batch at once (on the GPU when there is one) instead of image
    by image; uint8=False is the seed recipe (ToTensor + Normalize per image)."""
    size, resize = _sizes(processor)
    if uint8:
        tail = [T.PILToTensor()]
    else:
        tail = [T.ToTensor(), T.Normalize(mean=processor.image_mean, std=processor.image_std)]
    train = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *tail])
    # As the seed: resize the shorter side, then crop the centre (no squashing of the aspect).
    eval_ = T.Compose([T.Resize(resize), T.CenterCrop(size), *tail])
    return train, eval_


def normalize(pixels: torch.Tensor, *, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 batch (N, 3, H, W) -> float, scaled as ToTensor + Normalize would, bit for bit."""
    if pixels.dtype != torch.uint8:
        return pixels
    mean_t = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    return pixels.float().div(255).sub(mean_t).div(std_t)


def _apply(transform: T.Compose, cache: list[np.ndarray] | None = None):
    def batch_transform(batch: dict[str, list]) -> dict[str, list]:
        if cache is not None:
            images = [PILImage.fromarray(cache[i]) for i in batch["index"]]
        else:
            # to_rgb: Food-101 has greyscale and CMYK JPEGs; the model wants 3 channels.
            images = [to_rgb(img) for img in batch["image"]]
        return {"pixel_values": [transform(img) for img in images], "labels": batch["label"]}

    return batch_transform


def decode_all(ds: Dataset, *, workers: int = 8) -> list[np.ndarray]:
    """Every image decoded once to RGB uint8 (threads: PIL decodes without the GIL)."""
    plain = ds.with_format(None)

    def decode(i: int) -> np.ndarray:
        return np.asarray(to_rgb(plain[i]["image"]))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(decode, range(len(plain))))


def attach_transforms(splits: Splits, processor: Any, *, uint8: bool = True, cache: bool = False) -> None:
    """Decode + augment lazily, per batch, in the dataloader workers (set_transform).

    cache=True decodes every image once up front and keeps the RGB pixels in RAM (about 0.6 MB per
    512x384 Food-101 photo), so later epochs only crop and flip; the augmentations are unchanged."""
    train_tf, eval_tf = build_transforms(processor, uint8=uint8)
    for name, transform in (("train", train_tf), ("eval", eval_tf)):
        ds = getattr(splits, name)
        pixels = None
        if cache:
            pixels = decode_all(ds)
            ds = ds.add_column("index", list(range(len(ds))))
            setattr(splits, name, ds)
            log.info("cached %d decoded %s images (%.0f MB)", len(pixels), name, sum(p.nbytes for p in pixels) / 2**20)
        # With a cache, only the index and label columns are read: no image is decoded again.
        ds.set_transform(_apply(transform, pixels), columns=["index", "label"] if cache else None)


def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
    }
