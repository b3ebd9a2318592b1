"""DataLoader workers' random state across a resume, so a run with train.workers>0 stopped and
resumed from an epoch checkpoint ends with the numbers of an uninterrupted run, to the last digit.

Training's augmentations (RandomResizedCrop, the flip) draw from each worker's own RNGs. Workers
are persistent, so in an uninterrupted run epoch 2's workers continue the states epoch 1 left
them in; a resumed run starts new workers, freshly seeded, and would draw other crops. Trainer
saves and restores only the training process's RNGs (rng_state.pth). Two more things keep them
apart, and this module settles both:

- Each worker reports its RNG states with every batch it collates (`WorkerStates.collate`, a few
  KB per batch); the training process keeps the last report of each worker, and an epoch
  checkpoint stores them (`worker_rng.json`: JSON, never a pickle, so a run dir stays data). A
  resumed run's new workers load them after their seeding (`restore_worker`).
- A new iterator draws its workers' base seed from the loader's generator: from the training
  process's global RNG unless the loader has its own. Only the resumed run makes new iterators
  after the checkpoint (the training loader's at epoch 2, the val loader's at its first
  evaluation: the uninterrupted run reuses its persistent workers), so those draws would shift
  every later draw of the training process: the next epoch's shuffle, dropout, mixup. Every
  loader with workers gets a generator of its own (`own_generator`).

With train.workers=0 nothing here runs: the augmentations draw from the training process's RNGs,
which Trainer restores.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

# The key a worker's report travels under in its batch (popped before the batch reaches the model).
KEY = "_worker_rng"


def file_name(rank: int, world: int) -> str:
    return "worker_rng.json" if world == 1 else f"worker_rng_{rank}.json"


def current_states() -> dict[str, Any]:
    """This process's Python, NumPy and torch CPU RNG states, as JSON-ready values."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }


def set_states(states: dict[str, Any]) -> None:
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(states["torch"])), dtype=torch.uint8))


class ReportingCollate:
    """A collate_fn that adds, to each batch a worker makes, that worker's id and RNG states after it."""

    def __init__(self, collate: Callable[[list], dict[str, Any]]):
        self.collate = collate

    def __call__(self, items: list) -> dict[str, Any]:
        batch = self.collate(items)
        info = torch.utils.data.get_worker_info()
        if info is not None:
            # A JSON string, not tensors: nothing moves it to the device or pins it.
            batch[KEY] = json.dumps({"worker": info.id, "states": current_states()})
        return batch


def own_generator(loader: Any, *, seed: int) -> None:
    """`loader` (a torch DataLoader with workers) draws its workers' base seed from a generator of
    its own, leaving the training process's RNG alone. (Its sampler was built with the loader and
    keeps drawing its shuffle from that RNG, which Trainer saves and restores.)"""
    loader.generator = torch.Generator().manual_seed(seed)


class WorkerStates:
    """The training side: prepares a training loader with workers, keeps each worker's last
    report, writes them into an epoch checkpoint and hands them to a resumed run's workers."""

    def __init__(self) -> None:
        self.last: dict[int, dict[str, Any]] = {}
        self.resume: dict[int, dict[str, Any]] = {}

    def prepare(self, loader: Any) -> None:
        """`loader` (a torch training DataLoader with workers) reports its workers' states."""
        loader.collate_fn = ReportingCollate(loader.collate_fn)

    def take(self, batches: list[dict[str, Any]]) -> None:
        """Pop the reports out of a step's batches, keeping each worker's last."""
        for batch in batches:
            if isinstance(batch, dict) and KEY in batch:
                report = json.loads(batch.pop(KEY))
                self.last[report["worker"]] = report["states"]

    def save(self, checkpoint: Path, *, epoch: float | None, rank: int, world: int) -> None:
        """Only at an epoch's end: then every batch a worker made was consumed, and its last report
        is its state. (A mid-epoch checkpoint, train.eval_steps, resumes by skipping batches that
        the workers still augment: not promised to the last digit, and nothing is stored.)"""
        if not self.last or epoch is None or abs(epoch - round(epoch)) > 1e-6:
            return
        body = {"epoch": round(epoch), "workers": {str(k): v for k, v in sorted(self.last.items())}}
        (checkpoint / file_name(rank, world)).write_text(json.dumps(body))

    def load(self, checkpoint: Path | None, *, rank: int, world: int) -> None:
        """The states a resumed run's workers start from (none: they keep their seeding)."""
        path = None if checkpoint is None else checkpoint / file_name(rank, world)
        if path is None or not path.is_file():
            self.resume = {}
            return
        self.resume = {int(k): v for k, v in json.loads(path.read_text())["workers"].items()}

    def worker_init(self, init: Callable[[int], None] | None) -> Callable[[int], None]:
        """`init` (Trainer's seeding), then the worker's saved states when resuming."""
        return _Restore(init=init, states=dict(self.resume))


class _Restore:
    """Picklable (spawned workers): a worker_init_fn that seeds as before, then restores."""

    def __init__(self, *, init: Callable[[int], None] | None, states: dict[int, dict[str, Any]]):
        self.init, self.states = init, states

    def __call__(self, worker_id: int) -> None:
        if self.init is not None:
            self.init(worker_id)
        if worker_id in self.states:
            set_states(self.states[worker_id])
