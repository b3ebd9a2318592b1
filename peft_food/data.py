"""Data stage: load a labelled image dataset and split and subset it with the run's seed
(preprocessing: transforms.py; reading files safely: images.py).

    peft-food-train data=food101_local data.root=../shared/data/food101-mini

Every source ends as two `datasets.Dataset`s with an `image` column and a ClassLabel `label`
column, so label names (id2label) always come from the data, never from a hard-coded list.
"""

from __future__ import annotations

import colorsys
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from peft_food.errors import DataError
from peft_food.images import IMAGE_SUFFIXES, check_images

if TYPE_CHECKING:  # config.py validates data.source against SOURCES below
    from datasets import Dataset

    from peft_food.config import DataSpec

log = logging.getLogger(__name__)


@dataclass
class Splits:
    train: Dataset
    eval: Dataset
    labels: list[str]


# --- loading -------------------------------------------------------------------------------


def _read_hub(spec: DataSpec, seed: int) -> tuple[Dataset, Dataset | None]:
    return _load_hub(hub_id=spec.hub_id, train_split=spec.train_split, eval_split=spec.eval_split)


def _read_food101_layout(spec: DataSpec, seed: int) -> tuple[Dataset, Dataset | None]:
    return _load_food101_layout(Path(spec.root), bad_images=spec.bad_images)


def _read_imagefolder(spec: DataSpec, seed: int) -> tuple[Dataset, Dataset | None]:
    return _load_imagefolder(Path(spec.root), bad_images=spec.bad_images)


def _read_synthetic(spec: DataSpec, seed: int) -> tuple[Dataset, Dataset | None]:
    # Generated balanced already: per_class / eval_per_class are the generated counts.
    make = dict(num_classes=spec.num_classes, image_size=spec.image_size)
    return (synthetic_dataset(**make, per_class=spec.per_class or 40, seed=seed),
            synthetic_dataset(**make, per_class=spec.eval_per_class or 10, seed=seed + 1))


@dataclass(frozen=True)
class Source:
    """How one `data.source` is read: (spec, seed) -> (train, eval or None: carve it out)."""

    read: Callable[[DataSpec, int], tuple[Dataset, Dataset | None]]
    # Reads images from data.root.
    reads_root: bool = False
    # Generated at the requested sizes: no split or subset afterwards.
    generated: bool = False


# data.source -> how it is read: the one table a new source is added to (with its peft_food/conf/data/ file).
SOURCES: dict[str, Source] = {
    "food101": Source(_read_hub),
    "food101_local": Source(_read_food101_layout, reads_root=True),
    "imagefolder": Source(_read_imagefolder, reads_root=True),
    "synthetic": Source(_read_synthetic, generated=True),
}


def load_splits(spec: DataSpec, *, seed: int) -> Splits:
    """Read the source named by `spec`, then apply the seeded split and class-balanced subsets."""
    source = SOURCES[spec.source]
    train, eval_ = source.read(spec, seed)
    if source.generated:
        return Splits(train=train, eval=eval_, labels=list(train.features["label"].names))
    if spec.per_class is not None:
        train = balanced_subset(train, per_class=spec.per_class, seed=seed)
    if eval_ is None:
        # The seed recipe's split: unstratified, seeded, taken after any subsetting.
        parts = train.train_test_split(test_size=spec.test_size, seed=seed)
        train, eval_ = parts["train"], parts["test"]
    elif spec.eval_per_class is not None:
        eval_ = balanced_subset(eval_, per_class=spec.eval_per_class, seed=seed)
    return Splits(train=train, eval=eval_, labels=list(train.features["label"].names))


def _load_hub(*, hub_id: str, train_split: str, eval_split: str | None) -> tuple[Dataset, Dataset | None]:
    from datasets import load_dataset

    try:
        train = load_dataset(hub_id, split=train_split)
        eval_ = load_dataset(hub_id, split=eval_split) if eval_split else None
    except Exception as err:  # network, auth or split-name failures all end here
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(
            f"could not load {hub_id!r} from the Hugging Face Hub ({reason}); offline, use "
            f"data=food101_local data.root=<Food-101 folder>, data=imagefolder or data=synthetic"
        ) from None
    return train, eval_


def _labelled(paths: list[Path], labels: list[int], names: list[str], *, bad_images: str) -> Dataset:
    """A dataset of image files, screened first: a corrupt image found mid-epoch would crash a
    run hours in, so every file is decoded once before training starts."""
    bad = check_images(paths)
    if bad:
        listing = "; ".join(f"{path}: {why}" for path, why in list(bad.items())[:3])
        if bad_images == "fail":
            raise DataError(f"{len(bad)} unusable image(s), e.g. {listing} "
                            f"(fix or remove them, or set data.bad_images=skip)")
        log.warning("data.bad_images=skip: skipping %d unusable image(s), e.g. %s", len(bad), listing)
        kept = [i for i, path in enumerate(paths) if path not in bad]
        paths, labels = [paths[i] for i in kept], [labels[i] for i in kept]
    return _dataset({"image": [str(p) for p in paths], "label": labels}, names=names)


def _dataset(columns: dict[str, list], *, names: list[str]) -> Dataset:
    """An image column and a ClassLabel label column (datasets is imported here, not at the top:
    the command line reads SOURCES without paying for it)."""
    from datasets import ClassLabel, Dataset, Features, Image

    return Dataset.from_dict(columns, features=Features({"image": Image(), "label": ClassLabel(names=names)}))


def _require_every_class(train: Dataset, eval_: Dataset, *, where: Path) -> None:
    names = train.features["label"].names
    missing = sorted(set(train["label"]) - set(eval_["label"]))
    if missing:
        raise DataError(f"{where}: class(es) {', '.join(names[i] for i in missing[:5])} have training images but "
                        f"none to evaluate on: add test images or remove the class")


def _existing_dir(root: Path) -> Path:
    if not root.is_dir():
        raise DataError(f"data.root={str(root)!r} is not a directory: point it at your image folder")
    return root


def _load_food101_layout(root: Path, *, bad_images: str) -> tuple[Dataset, Dataset]:
    """Food-101's own layout: meta/classes.txt names the labels, meta/{train,test}.txt the images."""
    meta = _existing_dir(root) / "meta"
    for name in ("classes.txt", "train.txt", "test.txt"):
        if not (meta / name).is_file():
            raise DataError(f"{meta / name} is missing: data=food101_local expects Food-101's images/ and meta/ layout")
    classes = (meta / "classes.txt").read_text().split()
    index = {name: i for i, name in enumerate(classes)}

    def split(list_file: str) -> Dataset:
        entries = (meta / list_file).read_text().split()
        unknown = sorted({e.split("/")[0] for e in entries} - index.keys())
        if unknown:
            raise DataError(f"{meta / list_file} names classes not in classes.txt: {', '.join(unknown[:5])}")
        paths = [root / "images" / f"{entry}.jpg" for entry in entries]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{meta / list_file} lists {len(missing)} missing image(s), e.g. {missing[0]}")
        return _labelled(paths, [index[e.split("/")[0]] for e in entries], classes, bad_images=bad_images)

    train, test = split("train.txt"), split("test.txt")
    _require_every_class(train, test, where=meta / "test.txt")
    return train, test


def _class_images(folder: Path) -> dict[str, list[Path]]:
    classes = sorted(d for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{folder} has no class folders: expected {folder}/<class>/<image>.jpg")
    found = {}
    for d in classes:
        images = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"class folder {d} holds no images: add some or remove the folder")
        found[d.name] = images
    return found


def _load_imagefolder(root: Path, *, bad_images: str) -> tuple[Dataset, Dataset | None]:
    """`root/<class>/...`, or `root/train/<class>/...` + `root/test/<class>/...`."""
    root = _existing_dir(root)
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    train = _class_images(root / "train" if has_splits else root)
    names = sorted(train)

    def to_dataset(found: dict[str, list[Path]]) -> Dataset:
        paths = [p for name in names for p in found.get(name, [])]
        labels = [i for i, name in enumerate(names) for _ in found.get(name, [])]
        return _labelled(paths, labels, names, bad_images=bad_images)

    if not has_splits:
        return to_dataset(train), None
    test = _class_images(root / "test")
    extra = sorted(test.keys() - train.keys())
    if extra:
        raise DataError(f"{root / 'test'} has classes with no training images: {', '.join(extra[:5])}")
    train_ds, test_ds = to_dataset(train), to_dataset(test)
    _require_every_class(train_ds, test_ds, where=root / "test")
    return train_ds, test_ds


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
    return _dataset({"image": images, "label": labels}, names=[f"class_{k}" for k in range(num_classes)])


def balanced_subset(ds: Dataset, *, per_class: int, seed: int) -> Dataset:
    """Up to `per_class` images of every class, drawn with `seed`, in shuffled order.

    Food-101's train split is stored sorted by class, so a prefix like train[:5000] is not a sample.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(ds["label"])
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.extend(rng.choice(members, size=min(per_class, len(members)), replace=False))
    return ds.select(rng.permutation(np.asarray(chosen)))
