"""Progress bars where people wait (screening a dataset, the decode cache, predict), quiet where
they don't: the same tqdm the Trainer uses, on a terminal only unless `progress` forces it.

    peft-food-train progress=false ...      # no bars even on a terminal
    peft-food-train progress=true ... > log # bars in a redirected log too

A process-wide setting, like a logging level: the run sets it once from its config (`use`), and
every stage's bar follows it.
"""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_forced: bool | None = None


def use(progress: bool | None) -> None:
    """None: bars when stderr is a terminal; True/False: always/never. The libraries' own bars
    (transformers' "Writing model shards", datasets' "Map") follow the same choice."""
    global _forced
    _forced = progress
    import datasets
    from transformers.utils import logging as hf_logging

    if shown():
        hf_logging.enable_progress_bar()
        datasets.enable_progress_bars()
    else:
        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()


def shown() -> bool:
    return _forced if _forced is not None else sys.stderr.isatty()


def bar(items: Iterable[T], *, total: int | None = None, desc: str, unit: str = "img") -> Iterable[T]:
    return tqdm(items, total=total, desc=desc, unit=unit, disable=not shown(), file=sys.stderr)
