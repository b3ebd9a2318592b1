"""The splits a run trains and evaluates on: a source read (sources.py), then the seeded split and
the class-balanced subsets.

    peft-food-train data.train_split=train data.per_class=50 data.eval_split=validation data.eval_per_class=10
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from peft_food.data.sources import SOURCES, DataSpec
from peft_food.data.store import Plan, Store

if TYPE_CHECKING:  # datasets is imported when a source is read, not when the command line starts
    from datasets import Dataset


@dataclass
class Splits:
    train: Dataset
    eval: Dataset
    labels: list[str]
    # data.store=true: "train" and "eval" -> the data stores the splits' `index` column points into.
    stores: dict[str, Store] = field(default_factory=dict)


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
