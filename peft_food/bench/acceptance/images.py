"""Pixels the acceptance checks train on: learnable (each class a colour, so a loss can fall in 20
steps even on random weights), made in memory at the model's size; and photos on disk in Food-101's
layout for the runs that read files (the data store, the benchmark's end-to-end rows)."""

from __future__ import annotations

import colorsys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from peft_food.bench.train import SyntheticPixels


def class_colour(label: int, classes: int) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(label / classes, 0.6, 0.8)) * 255


class ColourPixels(SyntheticPixels):
    """`n` uint8 images at `size` (height, width), class k a hue with noise, labels cycling over the
    classes. Only `pool` distinct images are made (indices wrap): the checks measure training, not
    image making, and a pool seen several times is also what makes the loss fall."""

    def __init__(self, *, n: int, size: tuple[int, int], classes: int, pool: int, seed: int = 0):
        # SyntheticPixels' indexing (pool wraps) over pixels of its own: not SyntheticPixels.__init__'s noise
        gen = torch.Generator().manual_seed(seed)
        count = min(n, pool)
        self.labels = torch.arange(count) % classes
        colours = torch.tensor(np.stack([class_colour(k, classes) for k in range(classes)]), dtype=torch.float32)
        noise = torch.randn((count, 3, *size), generator=gen) * 40
        self.pixels = (colours[self.labels][:, :, None, None] + noise).clamp(0, 255).to(torch.uint8)
        self.n = n


def write_pngs(pixels: torch.Tensor, folder: Path) -> list[Path]:
    """uint8 images (N, 3, H, W) as lossless files, for the commands that read files (predict)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(pixels):
        path = folder / f"probe_{i:03d}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    return paths


def write_food101_layout(
    root: Path, *, classes: int, train_per_class: int, test_per_class: int, size: tuple[int, int], seed: int = 0
) -> Path:
    """A folder in Food-101's layout (images/<class>/<id>.jpg, meta/{classes,train,test}.txt) of JPEGs
    at `size` (width, height): a smooth colour field per class with a gradient and mild noise, so the
    files decode like photos rather than like noise (which JPEG cannot compress)."""
    names = [f"dish_{k}" for k in range(classes)]
    entries = {"train": [], "test": []}
    jobs = []
    for k, name in enumerate(names):
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        for i in range(train_per_class + test_per_class):
            entry = f"{name}/{i}"
            entries["train" if i < train_per_class else "test"].append(entry)
            jobs.append((root / "images" / f"{entry}.jpg", k, i))
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]

    def write(job: tuple[Path, int, int]) -> None:
        path, k, i = job
        rng = np.random.default_rng((seed, k, i))
        shade = (xx / width * 60 + yy / height * 40 * rng.uniform(-1, 1))[..., None]
        pixels = class_colour(k, classes) + shade + rng.normal(0, 8, (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)

    with ThreadPoolExecutor(8) as pool:  # PIL encodes outside the GIL
        list(pool.map(write, jobs))
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "classes.txt").write_text("\n".join(names) + "\n")
    for split, listed in entries.items():
        (root / "meta" / f"{split}.txt").write_text("\n".join(listed) + "\n")
    return root
