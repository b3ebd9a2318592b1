"""Images generated in-process (data=synthetic): learnable, deterministic for a seed, no files.

peft-food-train data=synthetic data.num_classes=4 data.per_class=16
"""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING

import numpy as np

from peft_food.data.columns import image_dataset

if TYPE_CHECKING:
    from datasets import Dataset


def synthetic_dataset(*, num_classes: int, per_class: int, image_size: int, seed: int) -> Dataset:
    """Class k = a hue plus one of four stripe orientations, with per-image jitter and noise.

    Colour survives crops and flips, so the classes stay learnable under the train augmentations.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    images, labels = [], []
    for label in range(num_classes):
        base = np.array(colorsys.hsv_to_rgb(label / num_classes, 0.45, 0.75)) * 255
        angle = np.pi * (label % 4) / 4
        stripes = np.sin(2 * np.pi * 4 * (xx * np.cos(angle) + yy * np.sin(angle)))
        for _ in range(per_class):
            pixels = base + 40 * stripes[..., None] + rng.normal(0, 60, (image_size, image_size, 3))
            pixels += rng.normal(0, 25, 3)  # per-image colour shift
            images.append(np.clip(pixels, 0, 255).astype(np.uint8))
            labels.append(label)
    return image_dataset({"image": images, "label": labels}, names=[f"class_{k}" for k in range(num_classes)])
