"""Data sources: how each `data.source` is read (the SOURCES table), and the data group's schema
(`DataSpec`) beside the table it validates against. Splitting and subsets: splits.py;
preprocessing: transforms.py; reading files safely: images.py.

    peft-food-train data=food101_local data.root=../shared/data/food101-mini

Every source ends as three `datasets.Dataset`s (train, val, test: splits.py carves the ones a
source lacks) with an `image` column and a ClassLabel `label` column, so label names (id2label) always come from the data, never from a hard-coded list. With
data.store=true they also get an `index` column into the data stores (store.py) the splits carry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from peft_food.data.images import IMAGE_SUFFIXES
from peft_food.data.parts import Part, Parts, hub_part, labelled
from peft_food.data.store import Plan
from peft_food.data.synthetic import synthetic_dataset
from peft_food.errors import DataError, first_line, near_miss, require

if TYPE_CHECKING:  # datasets is imported when a source is read, not when the command line starts
    from datasets import Dataset

log = logging.getLogger(__name__)


def pool_forms(spec: DataSpec, *, has_val: bool, has_test: bool) -> tuple[str, ...]:
    """The store forms of the training pool: the eval form too where val or test is carved from it."""
    carved = not has_test or (spec.protocol != "seed" and not has_val)
    return ("train", "eval") if carved else ("train",)


# --- loading -------------------------------------------------------------------------------


def _read_hub(spec: DataSpec, seed: int, plan: Plan | None) -> Parts:
    train, test = _load_hub(hub_id=spec.hub_id, train_split=spec.train_split, test_split=spec.test_split)
    stored = dict(plan=plan, bad_images=spec.bad_images, hub_id=spec.hub_id)
    pool = hub_part(
        train, split=spec.train_split, kinds=pool_forms(spec, has_val=False, has_test=test is not None), **stored
    )
    return Parts(pool, test=None if test is None else hub_part(test, split=spec.test_split, kinds=("eval",), **stored))


def _read_food101_layout(spec: DataSpec, seed: int, plan: Plan | None) -> Parts:
    _food101_root(Path(spec.root))
    return _load_food101_layout(Path(spec.root), spec=spec, plan=plan)


def _read_imagefolder(spec: DataSpec, seed: int, plan: Plan | None) -> Parts:
    _imagefolder_root(Path(spec.root))
    return _load_imagefolder(Path(spec.root), spec=spec, plan=plan)


def _read_synthetic(spec: DataSpec, seed: int, plan: Plan | None) -> Parts:
    # Generated balanced already: per_class / val_per_class / test_per_class are the generated
    # counts, each split from its own seed. Generated in memory, so never stored.
    make = dict(num_classes=spec.num_classes, image_size=spec.image_size)
    return Parts(
        Part(synthetic_dataset(**make, per_class=spec.per_class or 40, seed=seed)),
        val=Part(synthetic_dataset(**make, per_class=spec.val_per_class or 10, seed=seed + 2)),
        test=Part(synthetic_dataset(**make, per_class=spec.test_per_class or 10, seed=seed + 1)),
    )


@dataclass(frozen=True)
class CardData:
    """What a model card says of the data a run used."""

    hub_id: str | None  # the Hub dataset it came from (the card's `datasets:`), if any
    name: str  # readable, for the card's text and model-index
    split: str  # what the reported accuracy was measured on


FOOD101 = "ethz/food101"
PROTOCOLS = ("val_test", "seed", "retrain")


def _card_hub(data: dict) -> CardData:
    test = data.get("test_split", data.get("eval_split"))  # eval_split: records made before the protocol
    split = test or f"{data.get('test_size')} of {data.get('train_split', 'train')}, seeded"
    hub_id = data.get("hub_id", FOOD101)
    return CardData(hub_id, f"Food-101 ({hub_id})", split)


def _card_food101_layout(data: dict) -> CardData:
    # A folder in Food-101's layout may hold any subset (food101-mini: 10 classes): the card names no
    # Hub dataset it cannot vouch for.
    return CardData(None, "Food-101's on-disk layout (a local folder)", "test (meta/test.txt)")


def _card_imagefolder(data: dict) -> CardData:
    return CardData(None, "an image folder (<class>/*.jpg)", "test/ if present, else a seeded held-out fraction")


def _card_synthetic(data: dict) -> CardData:
    return CardData(None, "synthetic images (generated in-process)", "generated test set")


@dataclass(frozen=True)
class Source:
    """How one `data.source` is read: (spec, seed, store plan or None) -> its Parts (a training
    pool, and the val / test lists it ships), and what a model card says of it (from the run's
    data config)."""

    read: Callable[[DataSpec, int, Plan | None], Parts]
    card: Callable[[dict], CardData]
    # Reads images from data.root: a look at its layout (a few stat calls, no image read) that the
    # command line makes before anything heavy starts (check_root), and the reader again.
    root_layout: Optional[Callable[[Path], object]] = None
    # Generated at the requested sizes, all three splits: no carving or subset afterwards.
    generated: bool = False


# data.source -> how it is read and carded: the one table a new source is added to (with its
# reader and card above, and its peft_food/conf/data/ file).
SOURCES: dict[str, Source] = {
    "food101": Source(_read_hub, _card_hub),
    "food101_local": Source(_read_food101_layout, _card_food101_layout, root_layout=lambda root: _food101_root(root)),
    "imagefolder": Source(_read_imagefolder, _card_imagefolder, root_layout=lambda root: _imagefolder_root(root)),
    "synthetic": Source(_read_synthetic, _card_synthetic, generated=True),
}


@dataclass
class DataSpec:
    # food101 (Hub) | food101_local (Food-101 on-disk layout) | imagefolder | synthetic
    source: str = "food101"
    # Directory for food101_local / imagefolder.
    root: Optional[str] = None
    # How the splits are used (docs/protocol.md). val_test: the best checkpoint is chosen on val
    # (carved from the training pool, seeded and class-stratified) and test is reported, once for
    # that checkpoint and once for the last epoch. seed: the seed recipe's protocol, kept so its
    # numbers reproduce: one held-out split both picks the best epoch and is reported (records
    # and tables mark such numbers "selected on the reported split"). retrain: the last step of
    # VTAB-1k's protocol, the chosen setting trained on train + val (the same images val_test
    # splits) and its last epoch tested, nothing selected.
    protocol: str = "val_test"
    # Hub dataset id and splits for source=food101.
    hub_id: str = "ethz/food101"
    train_split: str = "train"
    # The reported split (Food-101's `validation` is its official 25,250-image test set); null:
    # carve it out of the training pool with `test_size`, seeded.
    test_split: Optional[str] = "validation"
    # Fraction of the training pool held out as test where the source has no test list.
    test_size: float = 0.2
    # The val split (protocol val_test), where the source has none: this fraction (< 1) or count
    # (>= 1) of the training pool, class-stratified; val_per_class: N per class instead.
    val_size: float = 0.1
    val_per_class: Optional[int] = None
    # A fixed budget: this many (>= 1) or this fraction of the training pool, class-stratified and
    # seeded, drawn before val is carved out of it (VTAB-1k: 1000 with val_size 200). null: all.
    train_size: Optional[float] = None
    # Seeded class-balanced subset: N training images per class, after val is carved (null: all;
    # k: the few-shot protocol).
    per_class: Optional[int] = None
    # Same for the test set (null: all).
    test_per_class: Optional[int] = None
    # Unusable image files (corrupt, not an image, too small) in a local dataset: found before
    # training starts, then `fail` (list them and stop) or `skip` (leave them out, say how many).
    bad_images: str = "fail"
    # Fast path: send uint8 images from the workers and normalise whole batches on the device
    # (false: the seed's per-image float ToTensor + Normalize).
    uint8: bool = True
    # Decode every image once and keep the pixels in RAM (datasets that fit: ~0.6 MB per photo).
    cache: bool = False
    # Train images: decode JPEGs with TorchCodec (libjpeg-turbo) into uint8 tensors and crop,
    # resize and flip the tensors, faster per core than PIL (docs/performance.md) (needs uint8; false: PIL, as the seed).
    fast_decode: bool = True
    # Preprocess once, train many (docs/data.md): decode every image once into a store on
    # disk that this and every later run with the same images and sizes read, sweep jobs included.
    store: bool = False
    # Where stores live; null: $PEFT_FOOD_CACHE/stores, else ~/.cache/peft_food/stores.
    store_dir: Optional[str] = None
    # Train images are stored with their shorter side at most this many pixels (larger ones are
    # downscaled); null: twice the model's input side (448 for ViT-B/16 at 224).
    store_side: Optional[int] = None
    # synthetic only: number of classes and image side in pixels.
    num_classes: int = 10
    image_size: int = 64

    def __post_init__(self) -> None:
        require(
            self.source in SOURCES,
            f"data.source={self.source!r} is unknown: choose one of {', '.join(SOURCES)}",
        )
        require(
            SOURCES[self.source].root_layout is None or bool(self.root),
            f"data.root is missing: data={self.source} reads images from disk, pass data.root=/path/to/images",
        )
        require(
            self.bad_images in ("fail", "skip"), f"data.bad_images={self.bad_images!r} is invalid: use fail or skip"
        )
        require(
            self.protocol in PROTOCOLS,
            f"data.protocol={self.protocol!r} is unknown: choose one of {', '.join(PROTOCOLS)}",
        )
        require(0.0 < self.test_size < 1.0, f"data.test_size={self.test_size} is invalid: use a fraction in (0, 1)")
        for key in ("val_size", "train_size"):
            value = getattr(self, key)
            require(value is None or value > 0, f"data.{key}={value} is invalid: use a fraction in (0, 1) or a count")
        for key in ("per_class", "val_per_class", "test_per_class"):
            value = getattr(self, key)
            require(value is None or value > 0, f"data.{key}={value} is invalid: use a positive count or null")
        require(
            not (self.store and self.cache),
            "data.store and data.cache both keep decoded pixels: choose one (data.store=true for sweeps "
            "and datasets larger than RAM)",
        )
        require(
            self.store_side is None or self.store_side >= 8,
            f"data.store_side={self.store_side} is invalid: use a side of at least 8 pixels, or null",
        )
        require(self.num_classes >= 2, f"data.num_classes={self.num_classes} is invalid: use at least 2")


# Data keys renamed when the protocol came (records made before it name the reported split eval_).
RENAMED = {"eval_split": "test_split", "eval_per_class": "test_per_class"}


def recorded_data(data: dict) -> dict:
    """A data config as a record holds it, for this release: one recorded before the protocol
    existed (eval_split, eval_per_class: one split both picked the best epoch and was reported)
    is the same data under protocol seed."""
    if "protocol" in data:
        return data
    return {**{RENAMED.get(key, key): value for key, value in data.items()}, "protocol": "seed"}


def _load_hub(*, hub_id: str, train_split: str, test_split: str | None) -> tuple[Dataset, Dataset | None]:
    from datasets import load_dataset

    try:
        train = load_dataset(hub_id, split=train_split)
        test = load_dataset(hub_id, split=test_split) if test_split else None
    except Exception as err:  # network, auth or split-name failures all end here
        reason = first_line(err)
        raise DataError(
            f"could not load {hub_id!r} from the Hugging Face Hub ({reason}); offline, use "
            f"data=food101_local data.root=<Food-101 folder>, data=imagefolder or data=synthetic"
        ) from None
    return train, test


def _require_every_class(train: Dataset, other: Dataset, *, where: Path) -> None:
    names = train.features["label"].names
    missing = sorted(set(train["label"]) - set(other["label"]))
    if missing:
        raise DataError(
            f"{where}: class(es) {', '.join(names[i] for i in missing[:5])} have training images but "
            f"none here to evaluate on: add images for them or remove the class"
        )


def check_root(spec: DataSpec) -> None:
    """data.root's layout, where the config is checked (cli/preflight.py): a typo or a folder one level
    too deep is one line before torch, the data or W&B start."""
    if (layout := SOURCES[spec.source].root_layout) is not None:
        layout(Path(spec.root))


def _existing_dir(root: Path) -> Path:
    if not root.is_dir():
        raise DataError(f"data.root={str(root)!r} is not a directory{near_miss(root)}: point it at your image folder")
    return root


def _is_food101_layout(folder: Path) -> bool:
    return (folder / "meta" / "classes.txt").is_file() and (folder / "images").is_dir()


def _food101_root(root: Path) -> Path:
    """The meta/ folder of a Food-101-layout data.root; its images/ folder is named as such."""
    meta = _existing_dir(root) / "meta"
    if not meta.is_dir() and _is_food101_layout(root.parent):
        raise DataError(
            f"data.root={str(root)!r} is inside a Food-101 folder: pass the folder holding images/ and meta/, "
            f"data.root={root.parent}"
        )
    for name in ("classes.txt", "train.txt", "test.txt"):
        if not (meta / name).is_file():
            raise DataError(f"{meta / name} is missing: data=food101_local expects Food-101's images/ and meta/ layout")
    return meta


def _imagefolder_root(root: Path) -> Path:
    """An image-folder data.root that is not Food-101's layout (whose meta/ would be taken for a class)."""
    if _is_food101_layout(_existing_dir(root)):
        raise DataError(
            f"data.root={str(root)!r} is in Food-101's layout (images/ and meta/): use data=food101_local "
            f"data.root={root}"
        )
    return root


def _load_food101_layout(root: Path, *, spec: DataSpec, plan: Plan | None = None) -> Parts:
    """Food-101's own layout: meta/classes.txt names the labels, meta/{train,test}.txt the images."""
    meta = _food101_root(root)
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
        return labelled(
            paths,
            [index[e.split("/")[0]] for e in entries],
            classes,
            bad_images=spec.bad_images,
            plan=plan,
            kinds=kinds,
            part=f"{root.resolve().name}-{Path(list_file).stem}",
        )

    # Food-101's test list is only ever evaluated; val (protocol val_test) comes out of train.txt.
    train = split("train.txt", pool_forms(spec, has_val=False, has_test=True))
    test = split("test.txt", ("eval",))
    _require_every_class(train.ds, test.ds, where=meta / "test.txt")
    return Parts(train, test=test)


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


def _load_imagefolder(root: Path, *, spec: DataSpec, plan: Plan | None = None) -> Parts:
    """`root/<class>/...`, or `root/train/<class>/...` with `root/val/` and `root/test/` where
    present (a missing one is carved out of train)."""
    root = _existing_dir(root)
    has_splits = (root / "train").is_dir()
    train = _class_images(root / "train" if has_splits else root)
    names = sorted(train)
    given = {name: _class_images(root / name) for name in ("val", "test") if has_splits and (root / name).is_dir()}
    if spec.protocol == "seed":
        given.pop("val", None)  # the seed protocol has no val split

    def to_part(found: dict[str, list[Path]], kinds: tuple[str, ...], part: str) -> Part:
        paths = [p for name in names for p in found.get(name, [])]
        labels = [i for i, name in enumerate(names) for _ in found.get(name, [])]
        return labelled(paths, labels, names, bad_images=spec.bad_images, plan=plan, kinds=kinds, part=part)

    kinds = pool_forms(spec, has_val="val" in given, has_test="test" in given)
    parts = Parts(to_part(train, kinds, f"{root.resolve().name}{'-train' if has_splits else ''}"))
    for name, found in given.items():
        extra = sorted(found.keys() - train.keys())
        if extra:
            raise DataError(f"{root / name} has classes with no training images: {', '.join(extra[:5])}")
        part = to_part(found, ("eval",), f"{root.resolve().name}-{name}")
        _require_every_class(parts.train.ds, part.ds, where=root / name)
        setattr(parts, name, part)
    return parts
