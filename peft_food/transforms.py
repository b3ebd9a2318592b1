"""Preprocessing: the seed's augmentations sized by the checkpoint's image processor, attached
lazily to the datasets, and the collate that batches them.

    train: RandomResizedCrop + RandomHorizontalFlip     eval: Resize(shorter side) + CenterCrop

The train path (`data.fast_decode=true`, with uint8) decodes JPEGs with torchvision's
libjpeg-turbo straight into a uint8 tensor and crops, resizes (bilinear, antialiased) and flips
the tensor: the same augmentations with the same parameters, about twice as fast per core as
PIL's decode + crop + resize. Only the resampling arithmetic differs from PIL's, by a grey level
or two. Eval always goes through PIL as the seed does, and as peft-food-predict does, so eval
accuracy and predictions agree.
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image as PILImage
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import functional as F
from torchvision.transforms import v2

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


class DecodeToTensor:
    """An image as opened (file bytes/path not yet decoded, or a PIL image) -> uint8 RGB (3, H, W).
    JPEGs decode with torchvision's libjpeg-turbo (greyscale and CMYK to RGB); anything else, or
    a JPEG torchvision cannot read, goes through PIL."""

    def __call__(self, value: Any) -> torch.Tensor:
        if isinstance(value, dict):
            data = value.get("bytes") or Path(value["path"]).read_bytes()
            if data[:2] == b"\xff\xd8":  # JPEG start-of-image marker
                try:
                    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
                except RuntimeError:
                    pass
            value = PILImage.open(io.BytesIO(data))
        return F.pil_to_tensor(to_rgb(value))


def build_transforms(processor: Any, *, uint8: bool = True, fast_decode: bool = False) -> tuple[Any, Any]:
    """The seed's augmentations, sized by the checkpoint's own image processor. Both take an
    image as datasets gives it (a PIL image, or an undecoded file) and make it RGB.

    uint8=True stops at a uint8 tensor: 4x less data crosses from the dataloader workers, and
    `normalize` then scales a whole batch at once (on the GPU when there is one) instead of image
    by image; uint8=False is the seed recipe (ToTensor + Normalize per image).
    fast_decode=True (with uint8) decodes and augments train images as tensors (see above)."""
    size, resize = _sizes(processor)
    tail = [T.PILToTensor()] if uint8 else [T.ToTensor(), T.Normalize(mean=processor.image_mean, std=processor.image_std)]
    if uint8 and fast_decode:
        train = v2.Compose([DecodeToTensor(), v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])
    else:
        train = T.Compose([T.Lambda(_pil_rgb), T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *tail])
    # As the seed: resize the shorter side, then crop the centre (no squashing of the aspect).
    eval_ = T.Compose([T.Lambda(_pil_rgb), T.Resize(resize), T.CenterCrop(size), *tail])
    return train, eval_


def _pil_rgb(value: Any) -> PILImage.Image:
    if isinstance(value, dict):
        value = PILImage.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    return to_rgb(value)


def normalize(pixels: torch.Tensor, *, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 batch (N, 3, H, W) -> float, scaled as ToTensor + Normalize would, bit for bit."""
    if pixels.dtype != torch.uint8:
        return pixels
    mean_t = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    # In place on the fresh float copy: the same arithmetic (bit for bit), a third of the memory traffic.
    return pixels.float().div_(255).sub_(mean_t).div_(std_t)


def _apply(transform: T.Compose, cache: list[np.ndarray] | None = None):
    def batch_transform(batch: dict[str, list]) -> dict[str, list]:
        if cache is not None:
            images = [PILImage.fromarray(cache[i]) for i in batch["index"]]
        else:
            # Decoded PIL images, or undecoded files (fast_decode); the transforms make them RGB
            # (Food-101 has greyscale and CMYK JPEGs).
            images = batch["image"]
        return {"pixel_values": [transform(img) for img in images], "labels": batch["label"]}

    return batch_transform


def decode_all(ds: Dataset, *, workers: int = 8) -> list[np.ndarray]:
    """Every image decoded once to RGB uint8 (threads: PIL decodes without the GIL)."""
    plain = ds.with_format(None)

    def decode(i: int) -> np.ndarray:
        return np.asarray(_pil_rgb(plain[i]["image"]))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(decode, range(len(plain))))


def attach_transforms(splits: Splits, processor: Any, *, uint8: bool = True, cache: bool = False,
                      fast_decode: bool = False) -> None:
    """Decode + augment lazily, per batch, in the dataloader workers (set_transform).

    cache=True decodes every image once up front and keeps the RGB pixels in RAM (about 0.6 MB per
    512x384 Food-101 photo), so later epochs only crop and flip; the augmentations are unchanged.
    fast_decode=True hands the train transform the undecoded file, for torchvision to decode."""
    train_tf, eval_tf = build_transforms(processor, uint8=uint8, fast_decode=fast_decode)
    for name, transform in (("train", train_tf), ("eval", eval_tf)):
        ds = getattr(splits, name)
        pixels = None
        if name == "train" and fast_decode and uint8 and not cache and isinstance(ds.features.get("image"), ImageFeature):
            # datasets would decode the whole image before our transform sees it.
            ds = ds.cast_column("image", ImageFeature(decode=False))
            setattr(splits, name, ds)
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
