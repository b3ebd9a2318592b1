"""Splits that are really disjoint: one image in two of a source's lists (a byte-identical file
under another name, or one file listed twice, as in Food-101's meta/train.txt and meta/test.txt)
would make the reported accuracy partly accuracy on images the model trained or selected on.

The screening (images.check_images) and the data store's build hash every image's bytes as they
decode them, so the lists are compared by those digests here without reading any image again.
Val and test carved out of the training pool (splits.py) are disjoint from the given lists
because the pool is checked before it is carved. Duplicates within one list are left alone: they
weight an image twice but leak nothing.
"""

from __future__ import annotations

import logging

from peft_food.data.parts import Part, Parts
from peft_food.errors import DataError

log = logging.getLogger(__name__)

# (the list that keeps its copy, the list whose copy is left out under data.bad_images=skip).
# Test stays whole: it is the benchmark's own list, so its numbers stay comparable with every other
# run's on it. Val keeps its copy against train because it picks the checkpoint, which must be chosen
# on images not trained on. The copy left out is always the one that costs least: one training
# image among many.
PAIRS = (("test", "train"), ("test", "val"), ("val", "train"))


def disjoint(parts: Parts, *, bad_images: str, protocol: str) -> Parts:
    """`parts` with no image in two lists: a duplicate fails the run (data.bad_images=fail) or
    its copy in the less precious list is left out, with a count (skip)."""
    found: dict[str, set[int]] = {}
    examples: list[str] = []
    for keep, drop in _pairs(parts, protocol=protocol):
        kept, dropped = getattr(parts, keep), getattr(parts, drop)
        rows = {digest: row for row, digest in enumerate(kept.digests)}
        for row, digest in enumerate(dropped.digests):
            if digest in rows:
                found.setdefault(drop, set()).add(row)
                examples.append(_example(drop, dropped.describe(row), keep, kept.describe(rows[digest])))
    if not found:
        return parts
    count = sum(len(rows) for rows in found.values())
    where = ", ".join(f"{len(rows)} in {name}" for name, rows in found.items())
    if bad_images == "fail":
        raise DataError(
            f"{count} image(s) are also in a split evaluated on ({where}), e.g. {examples[0]}: "
            f"the reported accuracy would count images trained or selected on; remove one copy of "
            f"each, or set data.bad_images=skip to leave the {' and '.join(found)} copies out"
        )
    log.warning(
        "data.bad_images=skip: leaving out %d image(s) that are also in a split evaluated on (%s), e.g. %s",
        count,
        where,
        examples[0],
    )
    for name, rows in found.items():
        setattr(parts, name, _without(getattr(parts, name), rows))
    return parts


def _pairs(parts: Parts, *, protocol: str) -> list[tuple[str, str]]:
    """The pairs of lists to compare: both present and screened. Under protocol retrain val is
    trained on too, so train and val are one training set (a duplicate there leaks nothing)."""

    def screened(name: str) -> bool:
        part = getattr(parts, name)
        return part is not None and part.digests is not None

    return [
        (keep, drop)
        for keep, drop in PAIRS
        if screened(keep) and screened(drop) and not (protocol == "retrain" and {keep, drop} == {"train", "val"})
    ]


def _example(drop: str, dropped: str, keep: str, kept: str) -> str:
    if dropped == kept:
        return f"{dropped} is listed in both {drop} and {keep}"
    return f"{drop} image {dropped} is byte-identical to {keep} image {kept}"


def _without(part: Part, rows: set[int]) -> Part:
    """`part` less `rows`; its stores stay (the dataset's `index` column still points into them)."""
    kept = [row for row in range(len(part.ds)) if row not in rows]
    return Part(
        part.ds.select(kept),
        part.stores,
        digests=[part.digests[row] for row in kept],
        describe=lambda row: part.describe(kept[row]),
    )
