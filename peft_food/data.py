"""Data stage: load a labelled image dataset and split and subset it with the run's seed
(preprocessing: transforms.py; reading files safely: images.py).

    peft-food-train data=food101_local data.root=../shared/data/food101-mini

Every source ends as two `datasets.Dataset`s with an `image` column and a ClassLabel `label`
column, so label names (id2label) always come from the data, never from a hard-coded list. With
data.store=true they also get an `index` column into the data stores (store.py) the splits carry.
"""

from __future__ import annotations

import colorsys
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from peft_food.errors import DataError
from peft_food.images import IMAGE_SUFFIXES, check_images

if TYPE_CHECKING:  # config.py validates data.source against SOURCES below
    from datasets import Dataset

    from peft_food.config import DataSpec
    from peft_food.store import Images, Plan, Store

log = logging.getLogger(__name__)


@dataclass
class Splits:
    train: Dataset
    eval: Dataset
    labels: list[str]
    # data.store=true: "train" and "eval" -> the data stores the splits' `index` column points into.
    stores: dict[str, Store] = field(default_factory=dict)


@dataclass
class Part:
    """One image list as read (Food-101's train.txt, a Hub split): its dataset and, with data.store,
    its stores by form, which the dataset's `index` column points into."""

    ds: Dataset
    stores: dict[str, Store] = field(default_factory=dict)


# --- loading -------------------------------------------------------------------------------


def _read_hub(spec: DataSpec, seed: int, plan: Plan | None) -> tuple[Part, Part | None]:
    train, eval_ = _load_hub(hub_id=spec.hub_id, train_split=spec.train_split, eval_split=spec.eval_split)
    stored = dict(plan=plan, bad_images=spec.bad_images)
    # A carved eval set comes out of the train split: that part is stored in both forms.
    train_part = _hub_part(train, split=spec.train_split, hub_id=spec.hub_id,
                           kinds=("train",) if eval_ is not None else ("train", "eval"), **stored)
    eval_part = None if eval_ is None else _hub_part(eval_, split=spec.eval_split, hub_id=spec.hub_id,
                                                     kinds=("eval",), **stored)
    return train_part, eval_part


def _read_food101_layout(spec: DataSpec, seed: int, plan: Plan | None) -> tuple[Part, Part | None]:
    return _load_food101_layout(Path(spec.root), bad_images=spec.bad_images, plan=plan)


def _read_imagefolder(spec: DataSpec, seed: int, plan: Plan | None) -> tuple[Part, Part | None]:
    return _load_imagefolder(Path(spec.root), bad_images=spec.bad_images, plan=plan)


def _read_synthetic(spec: DataSpec, seed: int, plan: Plan | None) -> tuple[Part, Part | None]:
    # Generated balanced already: per_class / eval_per_class are the generated counts. Generated
    # in memory, so never stored.
    make = dict(num_classes=spec.num_classes, image_size=spec.image_size)
    return (Part(synthetic_dataset(**make, per_class=spec.per_class or 40, seed=seed)),
            Part(synthetic_dataset(**make, per_class=spec.eval_per_class or 10, seed=seed + 1)))


@dataclass(frozen=True)
class Source:
    """How one `data.source` is read: (spec, seed, store plan or None) -> (train, eval or None:
    carve it out)."""

    read: Callable[[DataSpec, int, Plan | None], tuple[Part, Part | None]]
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


def load_splits(spec: DataSpec, *, seed: int, plan: Plan | None = None) -> Splits:
    """Read the source named by `spec`, then apply the seeded split and class-balanced subsets.
    With a store plan (data.store=true), images are read through data stores, built if missing."""
    source = SOURCES[spec.source]
    train_part, eval_part = source.read(spec, seed, plan)
    train, eval_ = train_part.ds, eval_part.ds if eval_part is not None else None
    if source.generated:
        return Splits(train=train, eval=eval_, labels=list(train.features["label"].names))
    # A carved eval set reads the train part's eval-form store.
    stores = {} if plan is None else {"train": train_part.stores["train"],
                                      "eval": (eval_part or train_part).stores["eval"]}
    if spec.per_class is not None:
        train = balanced_subset(train, per_class=spec.per_class, seed=seed)
    if eval_ is None:
        # The seed recipe's split: unstratified, seeded, taken after any subsetting.
        parts = train.train_test_split(test_size=spec.test_size, seed=seed)
        train, eval_ = parts["train"], parts["test"]
    elif spec.eval_per_class is not None:
        eval_ = balanced_subset(eval_, per_class=spec.eval_per_class, seed=seed)
    return Splits(train=train, eval=eval_, labels=list(train.features["label"].names), stores=stores)


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


def _labelled(paths: list[Path], labels: list[int], names: list[str], *, bad_images: str,
              plan: Plan | None = None, kinds: tuple[str, ...] = (), part: str = "") -> Part:
    """A dataset of image files, screened first: a corrupt image found mid-epoch would crash a
    run hours in, so every file is decoded once before training starts. With a store plan, the
    store's build is the screening (once, for every later run), and the dataset gets an `index`
    column: each image's position in the stores."""
    if plan is None:
        found = check_images(paths)
        stores, bad = {}, {i: found[path] for i, path in enumerate(paths) if path in found}
    else:
        from peft_food.store import FileImages

        stores = _stores(FileImages(paths), plan, kinds=kinds, part=part)
        bad = next(iter(stores.values())).bad
    kept = _kept(len(paths), bad, describe=lambda i: str(paths[i]), bad_images=bad_images)
    columns: dict[str, list] = {"image": [str(paths[i]) for i in kept], "label": [labels[i] for i in kept]}
    if plan is not None:
        columns["index"] = kept
    return Part(_dataset(columns, names=names), stores)


def _hub_part(ds: Dataset, *, split: str, hub_id: str, plan: Plan | None, kinds: tuple[str, ...],
              bad_images: str) -> Part:
    """A Hub split, through its stores with a store plan (keyed by the dataset's fingerprint)."""
    if plan is None:
        return Part(ds)
    from peft_food.store import DatasetImages

    name = f"{hub_id}:{split}"
    stores = _stores(DatasetImages(ds, name=name), plan, kinds=kinds, part=name)
    kept = _kept(len(ds), next(iter(stores.values())).bad, describe=lambda i: f"{name}[{i}]", bad_images=bad_images)
    ds = ds.add_column("index", list(range(len(ds))))
    return Part(ds.select(kept) if len(kept) < len(ds) else ds, stores)


def _stores(images: Images, plan: Plan, *, kinds: tuple[str, ...], part: str) -> dict[str, Store]:
    from peft_food.store import ensure

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in part)
    built = ensure(images, [getattr(plan, kind) for kind in kinds], root=plan.root, part=safe, workers=plan.workers)
    return dict(zip(kinds, built))


def _kept(count: int, bad: dict[int, str], *, describe: Callable[[int], str], bad_images: str) -> list[int]:
    """Positions of the usable images; unusable ones fail the run or are skipped (data.bad_images)."""
    if bad:
        listing = "; ".join(f"{describe(i)}: {why}" for i, why in list(bad.items())[:3])
        if bad_images == "fail":
            raise DataError(f"{len(bad)} unusable image(s), e.g. {listing} "
                            f"(fix or remove them, or set data.bad_images=skip)")
        log.warning("data.bad_images=skip: skipping %d unusable image(s), e.g. %s", len(bad), listing)
    return [i for i in range(count) if i not in bad]


def _dataset(columns: dict[str, list], *, names: list[str]) -> Dataset:
    """An image column and a ClassLabel label column (datasets is imported here, not at the top:
    the command line reads SOURCES without paying for it), and the stores' `index` where given."""
    from datasets import ClassLabel, Dataset, Features, Image, Value

    features = {"image": Image(), "label": ClassLabel(names=names)}
    if "index" in columns:
        features["index"] = Value("int64")
    return Dataset.from_dict(columns, features=Features(features))


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


def _load_food101_layout(root: Path, *, bad_images: str, plan: Plan | None = None) -> tuple[Part, Part]:
    """Food-101's own layout: meta/classes.txt names the labels, meta/{train,test}.txt the images."""
    meta = _existing_dir(root) / "meta"
    for name in ("classes.txt", "train.txt", "test.txt"):
        if not (meta / name).is_file():
            raise DataError(f"{meta / name} is missing: data=food101_local expects Food-101's images/ and meta/ layout")
    classes = (meta / "classes.txt").read_text().split()
    index = {name: i for i, name in enumerate(classes)}

    def split(list_file: str, kinds: tuple[str, ...]) -> Part:
        entries = (meta / list_file).read_text().split()
        unknown = sorted({e.split("/")[0] for e in entries} - index.keys())
        if unknown:
            raise DataError(f"{meta / list_file} names classes not in classes.txt: {', '.join(unknown[:5])}")
        paths = [root / "images" / f"{entry}.jpg" for entry in entries]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{meta / list_file} lists {len(missing)} missing image(s), e.g. {missing[0]}")
        return _labelled(paths, [index[e.split("/")[0]] for e in entries], classes, bad_images=bad_images,
                         plan=plan, kinds=kinds, part=f"{root.resolve().name}-{Path(list_file).stem}")

    # Food-101's test list is only ever evaluated, its train list only trained on.
    train, test = split("train.txt", ("train",)), split("test.txt", ("eval",))
    _require_every_class(train.ds, test.ds, where=meta / "test.txt")
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


def _load_imagefolder(root: Path, *, bad_images: str, plan: Plan | None = None) -> tuple[Part, Part | None]:
    """`root/<class>/...`, or `root/train/<class>/...` + `root/test/<class>/...`."""
    root = _existing_dir(root)
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    train = _class_images(root / "train" if has_splits else root)
    names = sorted(train)

    def to_part(found: dict[str, list[Path]], kinds: tuple[str, ...], part: str) -> Part:
        paths = [p for name in names for p in found.get(name, [])]
        labels = [i for i, name in enumerate(names) for _ in found.get(name, [])]
        return _labelled(paths, labels, names, bad_images=bad_images, plan=plan, kinds=kinds, part=part)

    if not has_splits:  # the eval set is carved out of this pool: stored in both forms
        return to_part(train, ("train", "eval"), root.resolve().name), None
    test = _class_images(root / "test")
    extra = sorted(test.keys() - train.keys())
    if extra:
        raise DataError(f"{root / 'test'} has classes with no training images: {', '.join(extra[:5])}")
    train_part = to_part(train, ("train",), f"{root.resolve().name}-train")
    test_part = to_part(test, ("eval",), f"{root.resolve().name}-test")
    _require_every_class(train_part.ds, test_part.ds, where=root / "test")
    return train_part, test_part


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
