"""Each image list a source reads, as a `Part`: its dataset, screened once (every file decoded, or
the data store's build doing it), its stores and each row's content digest (disjoint.py checks the
splits by them); a source's lists together are its `Parts`. The sources themselves: sources.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from peft_food.data.columns import image_dataset
from peft_food.data.images import check_images
from peft_food.data.store import DatasetImages, FileImages, Images, Plan, Store, ensure
from peft_food.errors import DataError

if TYPE_CHECKING:  # datasets is imported when a source is read, not when the command line starts
    from datasets import Dataset

log = logging.getLogger(__name__)


@dataclass
class Part:
    """One image list as read (Food-101's train.txt, a Hub split): its dataset and, with data.store,
    its stores by form, which the dataset's `index` column points into."""

    ds: Dataset
    stores: dict[str, Store] = field(default_factory=dict)
    # Each row's content digest, from the screening or the store (None: not screened, a Hub split
    # without data.store), and how a row is named in a message: disjoint.py checks the splits by them.
    digests: list[bytes] | None = None
    describe: Callable[[int], str] = str


@dataclass
class Parts:
    """What a source has: a training pool, and the val and test lists it ships (None: splits.py
    carves them out of the pool, seeded and class-stratified)."""

    train: Part
    val: Part | None = None
    test: Part | None = None


def labelled(
    paths: list[Path],
    labels: list[int],
    names: list[str],
    *,
    bad_images: str,
    plan: Plan | None = None,
    kinds: tuple[str, ...] = (),
    part: str = "",
) -> Part:
    """A dataset of image files, screened first: a corrupt image found mid-epoch would crash a
    run hours in, so every file is decoded once before training starts. With a store plan, the
    store's build is the screening (once, for every later run), and the dataset gets an `index`
    column: each image's position in the stores."""
    stores = {} if plan is None else _stores(FileImages(paths), plan, kinds=kinds, part=part)
    found = check_images(paths) if plan is None else next(iter(stores.values()))
    kept = _kept(len(paths), found.bad, describe=lambda i: str(paths[i]), bad_images=bad_images)
    columns: dict[str, list] = {"image": [str(paths[i]) for i in kept], "label": [labels[i] for i in kept]}
    if plan is not None:
        columns["index"] = kept
    return Part(
        image_dataset(columns, names=names),
        stores,
        digests=[found.digests[i] for i in kept],
        describe=lambda row: str(paths[kept[row]]),
    )


def hub_part(
    ds: Dataset, *, split: str, hub_id: str, plan: Plan | None, kinds: tuple[str, ...], bad_images: str
) -> Part:
    """A Hub split, through its stores with a store plan (keyed by the dataset's fingerprint)."""
    if plan is None:
        return Part(ds)
    name = f"{hub_id}:{split}"
    stores = _stores(DatasetImages(ds, name=name), plan, kinds=kinds, part=name)
    found = next(iter(stores.values()))
    kept = _kept(len(ds), found.bad, describe=lambda i: f"{name}[{i}]", bad_images=bad_images)
    ds = ds.add_column("index", list(range(len(ds))))
    return Part(
        ds.select(kept) if len(kept) < len(ds) else ds,
        stores,
        digests=[found.digests[i] for i in kept],
        describe=lambda row: f"{name}[{kept[row]}]",
    )


def _stores(images: Images, plan: Plan, *, kinds: tuple[str, ...], part: str) -> dict[str, Store]:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in part)
    built = ensure(images, [getattr(plan, kind) for kind in kinds], root=plan.root, part=safe, workers=plan.workers)
    return dict(zip(kinds, built))


def _kept(count: int, bad: dict[int, str], *, describe: Callable[[int], str], bad_images: str) -> list[int]:
    """Positions of the usable images; unusable ones fail the run or are skipped (data.bad_images)."""
    if bad:
        listing = "; ".join(f"{describe(i)}: {why}" for i, why in list(bad.items())[:3])
        if bad_images == "fail":
            raise DataError(
                f"{len(bad)} unusable image(s), e.g. {listing} (fix or remove them, or set data.bad_images=skip)"
            )
        log.warning("data.bad_images=skip: skipping %d unusable image(s), e.g. %s", len(bad), listing)
    return [i for i in range(count) if i not in bad]
