"""Timing and memory probes the sections share: data throughput, step time, peak RSS."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psutil
import torch
from torch.utils.data import DataLoader
from transformers import TrainerCallback

from peft_food.data.transforms import collate, normalize

log = logging.getLogger(__name__)


def data_rate(ds, *, workers: int, batch_size: int, limit: int, mean, std) -> float:
    """Images/s delivered as normalised float batches (the work a training step waits for).
    The main process gets one torch thread, as each dataloader worker does: with 0 workers the
    path then runs on one core, and with workers the main process's batch normalise does not
    spin extra threads on the cores the workers decode on (that cost ~30% at 2 workers on a 2-core AMD EPYC CPU).
    On a GPU, training does the normalise there and leaves the CPU to the workers in the same way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _data_rate(ds, workers=workers, batch_size=batch_size, limit=limit, mean=mean, std=std)
    finally:
        torch.set_num_threads(threads)


def _data_rate(ds, *, workers: int, batch_size: int, limit: int, mean, std) -> float:
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        shuffle=False,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    iterator = iter(loader)
    normalize(next(iterator)["pixel_values"], mean=mean, std=std)  # start-up and first batch untimed
    seen, started = 0, time.perf_counter()
    for batch in iterator:
        normalize(batch["pixel_values"], mean=mean, std=std)
        seen += len(batch["labels"])
        if seen >= limit:
            break
    return seen / (time.perf_counter() - started)


class StepTimer(TrainerCallback):
    """Time from one optimizer step's end to the next: the data wait is part of the step. On CUDA,
    from events recorded on the stream at each step's end, read once training is over: nothing in
    the loop waits for the device, so the host queues work ahead as in a real run. On CPU, the
    wall clock."""

    def __init__(self, warmup: int):
        self.warmup, self._marks = warmup, []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step < self.warmup:
            return
        if torch.cuda.is_available():
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    @property
    def timing(self) -> str:
        return "cuda_events" if torch.cuda.is_available() else "wall_clock"

    @property
    def times(self) -> list[float]:
        """Seconds of each timed step (the steps after `warmup`)."""
        if self._marks and not isinstance(self._marks[0], float):
            self._marks[-1].synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(self._marks, self._marks[1:])]
        return [b - a for a, b in zip(self._marks, self._marks[1:])]


class PeakRSS:
    """Highest resident memory while the block runs, sampled every 10 ms (CPU runs)."""

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(0.01):
            self.peak = max(
                self.peak,
                process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True)),
            )

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
