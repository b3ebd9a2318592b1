"""The splits a run uses: a source read (sources.py), then the seeded carving and the
class-balanced subsets, by the run's protocol (docs/protocol.md).

    peft-food-train data.per_class=50 data.val_per_class=10 data.test_per_class=20     # val_test
    peft-food-train data.protocol=seed data.train_split=train[:5000] data.test_split=null   # the seed's

protocol val_test: train, val (carved from the training pool where the source has none, seeded
and class-stratified) and test (the source's test list, or carved the same way), pairwise
disjoint (the lists a source ships are checked for byte-identical images first: disjoint.py). val
picks the checkpoint; test is only reported.
protocol seed: the seed recipe's two splits, exactly as it made them; its held-out split is both
`val` and `test` (the same dataset), which the record and every table say.
protocol retrain: val_test's splits with val trained on too (`val` is None): nothing is selected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from peft_food.data.disjoint import disjoint
from peft_food.data.parts import Part, Parts
from peft_food.data.sources import SOURCES, DataSpec
from peft_food.data.store import Plan, Store
from peft_food.errors import DataError

if TYPE_CHECKING:  # datasets is imported when a source is read, not when the command line starts
    from datasets import Dataset

SPLITS = ("train", "val", "test")


def selection_split(protocol: str) -> str:
    """The name a protocol's every-epoch evaluation goes by, in records, W&B and tables: val, or
    eval under the seed protocol (its held-out split is also the reported one)."""
    return "eval" if protocol == "seed" else "val"


@dataclass
class Splits:
    train: Dataset
    val: Dataset | None  # evaluated every epoch: picks the best checkpoint (None: protocol retrain)
    test: Dataset  # evaluated at the end and reported (protocol seed: the same dataset as val)
    labels: list[str]
    # data.store=true: split name -> the data store its `index` column points into.
    stores: dict[str, Store] = field(default_factory=dict)

    @property
    def selects_on_test(self) -> bool:
        """True under the seed protocol: the split that picks the checkpoint is the reported one."""
        return self.val is self.test

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name) or []) for name in SPLITS}


def load_splits(spec: DataSpec, *, seed: int, plan: Plan | None = None) -> Splits:
    """Read the source named by `spec`, then carve and subset the splits as its protocol says.
    With a store plan (data.store=true), images are read through data stores, built if missing."""
    source = SOURCES[spec.source]
    parts = disjoint(source.read(spec, seed, plan), bad_images=spec.bad_images, protocol=spec.protocol)
    labels = list(parts.train.ds.features["label"].names)
    if source.generated:
        test = parts.test.ds
        if spec.protocol == "retrain":
            return _retrain(parts.train.ds, parts.val.ds, test=test, labels=labels, stores={}, val_given=True)
        val = test if spec.protocol == "seed" else parts.val.ds
        return Splits(train=parts.train.ds, val=val, test=test, labels=labels)
    if spec.protocol == "seed":
        return _seed_splits(spec, parts, seed=seed, labels=labels, stored=plan is not None)
    return _val_test_splits(spec, parts, seed=seed, labels=labels, stored=plan is not None)


def _eval_store(part: Part | None, pool: Part) -> Store:
    # A split carved out of the pool reads the pool's eval-form store.
    return (part or pool).stores["eval"]


def _seed_splits(spec: DataSpec, parts: Parts, *, seed: int, labels: list[str], stored: bool) -> Splits:
    """The seed recipe's splits, unchanged (its numbers reproduce): subset, then an unstratified
    seeded hold-out where the source has no test list."""
    train, test = parts.train.ds, parts.test.ds if parts.test is not None else None
    if spec.per_class is not None:
        train = balanced_subset(train, per_class=spec.per_class, seed=seed)
    if test is None:
        held = train.train_test_split(test_size=spec.test_size, seed=seed)
        train, test = held["train"], held["test"]
    elif spec.test_per_class is not None:
        test = balanced_subset(test, per_class=spec.test_per_class, seed=seed)
    stores = {} if not stored else {"train": parts.train.stores["train"], "val": _eval_store(parts.test, parts.train)}
    if stores:
        stores["test"] = stores["val"]
    return Splits(train=train, val=test, test=test, labels=labels, stores=stores)


def _val_test_splits(spec: DataSpec, parts: Parts, *, seed: int, labels: list[str], stored: bool) -> Splits:
    pool = parts.train.ds
    test = parts.test.ds if parts.test is not None else None
    if test is None:
        pool, test = carve(pool, fraction=spec.test_size, seed=seed, split="test")
    if spec.train_size is not None:  # a fixed budget (VTAB-1k: 1,000), drawn before val is carved from it
        _, pool = carve(pool, fraction=spec.train_size, seed=seed, split="train")
    val = parts.val.ds if parts.val is not None else None
    if val is None:
        pool, val = carve(pool, fraction=spec.val_size, per_class=spec.val_per_class, seed=seed, split="val")
    train = pool if spec.per_class is None else balanced_subset(pool, per_class=spec.per_class, seed=seed)
    if spec.test_per_class is not None:
        test = balanced_subset(test, per_class=spec.test_per_class, seed=seed)
    stores = (
        {}
        if not stored
        else {
            "train": parts.train.stores["train"],
            "val": _eval_store(parts.val, parts.train),
            "test": _eval_store(parts.test, parts.train),
        }
    )
    if spec.protocol == "retrain":
        return _retrain(train, val, test=test, labels=labels, stores=stores, val_given=parts.val is not None)
    return Splits(train=train, val=val, test=test, labels=labels, stores=stores)


def _retrain(
    train: Dataset, val: Dataset, *, test: Dataset, labels: list[str], stores: dict[str, Store], val_given: bool
) -> Splits:
    """Train on train + val: the images val_test would have selected on, now trained on."""
    from datasets import concatenate_datasets

    if stores and val_given:  # a val/ list's images are in an eval-form store only: none to augment
        raise DataError(
            "data.protocol=retrain trains on val, but this source's val images are stored for "
            "evaluation only: set data.store=false, or move them into train/"
        )
    stores = {name: store for name, store in stores.items() if name != "val"}
    return Splits(train=concatenate_datasets([train, val]), val=None, test=test, labels=labels, stores=stores)


def carve(
    pool: Dataset, *, fraction: float, seed: int, split: str, per_class: int | None = None
) -> tuple[Dataset, Dataset]:
    """(the rest, the carved split): `per_class` images of every class, or `fraction` of the pool
    (a count when >= 1) spread over the classes in proportion (largest remainders, so a count is
    met exactly), at least one and never a class's last image, drawn with `seed`. Both keep the
    pool's order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(pool["label"])
    names = pool.features["label"].names
    classes, sizes = np.unique(labels, return_counts=True)
    for label, size in zip(classes, sizes):
        if size < 2:
            raise DataError(
                f"class {names[label]} has {size} training image left, too few to hold one out "
                f"as {split} and train on another: add images of it, or give {split} images "
                f"(imagefolder: a {split}/ folder)"
            )
    takes = np.full(len(classes), per_class) if per_class is not None else _shares(sizes, fraction)
    carved = []
    for label, size, take in zip(classes, sizes, takes):
        members = np.flatnonzero(labels == label)
        carved.extend(rng.choice(members, size=int(min(max(take, 1), size - 1)), replace=False))
    chosen = np.zeros(len(labels), dtype=bool)
    chosen[carved] = True
    return pool.select(np.flatnonzero(~chosen)), pool.select(np.flatnonzero(chosen))


def _shares(sizes: np.ndarray, fraction: float) -> np.ndarray:
    """Per-class counts summing to round(fraction * total) (fraction < 1) or to `fraction` itself."""
    total = round(fraction * sizes.sum()) if fraction < 1 else round(fraction)
    quotas = sizes * total / sizes.sum()
    takes = np.floor(quotas).astype(int)
    takes[np.argsort(-(quotas - takes), kind="stable")[: total - takes.sum()]] += 1
    return takes


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
