"""Local sweep jobs share the machine's cores instead of fighting over them.

    peft-food-train -m hydra/launcher=local experiment=quickstart peft.r=4,8 logger=none

submitit's local executor starts every job of a sweep at once, and each would use every core
(torch's intra-op threads, plus `train.workers: null` = a worker per core): two jobs on two
cores each train many times slower than one alone (on a 2-core AMD EPYC CPU: ~40 against ~840 img/s). Under that launcher a job uses
`hydra.launcher.cpus_per_task` cores (torch threads; default workers fit in them too), and at most
cores // cpus_per_task jobs train at once: the others wait for a slot (an flock in the sweep's
.submitit/ folder, released by the kernel if a job dies), so the sweep never takes longer than its
jobs one after another.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from peft_food.files import FileLock, LockBusy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Share:
    threads: int  # torch intra-op threads (and the cores the job's workers fit in)
    slots: int  # jobs training at once on the host


def share_of(*, cpus_per_task: int | None, cores: int) -> Share:
    """A job's share of `cores` when it asks for `cpus_per_task` (None: all of them)."""
    threads = max(1, min(cpus_per_task or cores, cores))
    return Share(threads=threads, slots=max(1, cores // threads))


def default_workers(*, cores: int, own_core: bool) -> int:
    """`train.workers: null`: one DataLoader worker per core, at most 8; `own_core`: the training
    process keeps one of the cores for itself (on CPU, where it computes; in a local sweep job's share)."""
    return max(0, min(8, cores - 1 if own_core else cores))


@contextmanager
def job_slot(folder: Path, *, share: Share, poll_s: float = 0.2) -> Iterator[None]:
    """Hold one of `share.slots` slots (flocks in `folder`) while the job trains, with its threads."""
    folder.mkdir(parents=True, exist_ok=True)
    said = False
    while True:
        for slot in range(share.slots):
            try:
                with FileLock(folder / f"slot-{slot}.lock", wait=False, holder=str(os.getpid())):
                    torch.set_num_threads(share.threads)
                    log.info(
                        "local launcher: training in slot %d of %d with %d of %d cores (hydra.launcher.cpus_per_task)",
                        slot + 1,
                        share.slots,
                        share.threads,
                        os.cpu_count(),
                    )
                    yield
                    return
            except LockBusy:
                continue
        if not said:
            log.info(
                "local launcher: %d job(s) already training on the host's %d cores; waiting for one to end",
                share.slots,
                os.cpu_count(),
            )
            said = True
        time.sleep(poll_s)
