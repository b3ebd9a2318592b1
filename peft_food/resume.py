"""Interrupt and resume: a run stopped by SIGTERM or Ctrl-C exits cleanly with its epoch
checkpoints, and the same command started again continues from the last one.

    peft-food-train experiment=quickstart           # Ctrl-C half-way: stops cleanly, exit 130
    peft-food-train experiment=quickstart           # finds that unfinished run, continues it

`train.resume`: null/auto (continue an unfinished run of the same command if one has a
checkpoint), true (require one), false (always start fresh).
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from peft_food.errors import UserError

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, signum: int, checkpoint: Path | None):
        self.signum, self.checkpoint = signum, checkpoint
        where = f"last checkpoint: {checkpoint}" if checkpoint else "no checkpoint yet (first epoch unfinished)"
        super().__init__(f"stopped by {signal.Signals(signum).name}; {where}; run the same command again to resume")


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None


def _overrides(run_dir: Path) -> list[str] | None:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    lines = [line[2:].strip() for line in path.read_text().splitlines() if line.startswith("- ")]
    return sorted(line for line in lines if not line.startswith("train.resume="))


def _unfinished(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.json"
    status = json.loads(metrics.read_text()).get("status") if metrics.is_file() else None
    return status != "completed" and latest_checkpoint(run_dir) is not None


def find_resumable(run_dir: Path, *, search_root: Path | None) -> Path | None:
    """This run dir if it holds an unfinished run, else the newest unfinished run of the same
    command (same overrides) among the timestamped dirs under `search_root`."""
    if _unfinished(run_dir):
        return run_dir
    if search_root is None or not search_root.is_dir():
        return None
    mine = _overrides(run_dir)
    candidates = sorted((d for d in search_root.glob("*/*") if d != run_dir and d.is_dir()), reverse=True)
    return next((d for d in candidates if _overrides(d) == mine and _unfinished(d)), None)


def plan_resume(run_dir: Path, *, mode: bool | None, search_root: Path | None) -> Path | None:
    """The run dir to continue in, or None to start fresh (mode: None = auto, True, False)."""
    if mode is False:
        return None
    found = find_resumable(run_dir, search_root=search_root)
    if found is None and mode is True:
        raise UserError(f"train.resume=true but no unfinished run with a checkpoint was found for this command "
                        f"(looked in {run_dir} and {search_root}); drop train.resume to start fresh")
    if found is not None:
        log.warning("resuming the unfinished run in %s from %s (train.resume=false starts fresh)",
                    found, latest_checkpoint(found).name)
    return found


class StopOnSignal(TrainerCallback):
    """On SIGTERM/SIGINT: stop after the current optimizer step, keeping the last epoch checkpoint.

    No checkpoint is written mid-epoch on purpose: resuming mid-epoch re-draws the first resumed
    batch's augmentations from a different RNG state, so the run would no longer match an
    uninterrupted one. From an epoch checkpoint it matches to the last digit (on CPU); the cost is
    redoing at most the partial epoch."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopOnSignal":
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second Ctrl-C: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: stopping after this step; the run resumes from its last epoch checkpoint "
                    "(press Ctrl-C again to stop at once)", signal.Signals(signum).name)

    def on_step_end(self, args, state, control, **kwargs):
        if self.signum is not None:
            control.should_training_stop = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        # Trainer ends the loop through its epoch-end path: no eval or save for a partial epoch.
        if self.signum is not None and state.epoch is not None and abs(state.epoch - round(state.epoch)) > 1e-6:
            control.should_evaluate = False
            control.should_save = False
        return control
