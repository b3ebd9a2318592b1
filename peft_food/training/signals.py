"""Stopping on the signals clusters and terminals send, once, in the training process only.

    peft-food-train experiment=quickstart      # Ctrl-C, `timeout`, scancel, or SLURM's USR1 warning:
                                               # one warning, stop after the step, exit 128+signum

SIGINT (Ctrl-C), SIGTERM (`timeout`, `scancel`, SLURM at the time limit) and SIGUSR1 (what
`sbatch --signal=USR1@90` sends before the time limit) all stop the run the same way: after the
current optimizer step, keeping the last epoch checkpoint; the run's status is `interrupted` and
the same command resumes it. SIGUSR2 is left alone: the submitit launcher catches it to requeue.
A second signal, or one outside the training loop (while the data and model load; after the last
epoch: the test pass, the per-class files, saving the model) has no step to wait for: it raises
`Interrupted` at once, which ends the run the same way (the record says `interrupted`, one line,
exit 128+signum); the resumed run starts from the last epoch checkpoint and redoes only what
follows it.

Terminals, `timeout` and SLURM signal the whole process group, DataLoader workers included. A
worker inherits this process's Python handlers at fork (so Ctrl-C printed the warning once per
process), and torch's C handler makes a worker die on a SIGTERM that its parent did not send,
after which torch raises "DataLoader worker ... killed by signal" in the training process.
`leave_signals_to_the_trainer` (a worker_init_fn) makes workers ignore them: the training process
stops, then shuts its workers down itself, which still works because a SIGTERM from the parent
(torch's own shutdown of a worker) still ends the worker at once, as torch's C handler does.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from peft_food.errors import Interrupted

log = logging.getLogger(__name__)

# The signals that stop a run cleanly. Not SIGUSR2: submitit's preemption signal (its own requeue).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopOnSignal(TrainerCallback):
    """On a STOP_SIGNALS signal: stop after the current optimizer step, keeping the last epoch checkpoint.

    No checkpoint is written at the stop on purpose: resuming mid-epoch re-draws the first resumed
    batch's augmentations from a different RNG state, so the run would no longer match an
    uninterrupted one. From an epoch checkpoint it matches to the last digit (on CPU); the cost is
    redoing at most the partial epoch. (With train.eval_steps the last checkpoint is that of the last
    evaluation, mid-epoch: the run resumes from there, not promised to the last digit.)"""

    def __init__(self, *, checkpoint: Callable[[], Path | None]) -> None:
        """`checkpoint`: the run's last checkpoint, what `Interrupted` names (asked when it stops)."""
        self.signum: int | None = None
        self.checkpoint = checkpoint
        self.in_loop = False  # in Trainer's loop a signal stops after the step; outside it, at once
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopOnSignal":
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second signal: stop now, without a checkpoint (the CLI's one line)
            raise Interrupted(signum, self.checkpoint())
        self.signum = signum
        if not self.in_loop:
            log.warning(
                "%s received outside a training step: stopping now; the run resumes from its last epoch checkpoint",
                signal.Signals(signum).name,
            )
            raise Interrupted(signum, self.checkpoint())
        log.warning(
            "%s received: stopping after this step; the run resumes from its last epoch checkpoint "
            "(press Ctrl-C again to stop at once)",
            signal.Signals(signum).name,
        )

    def finish(self) -> None:
        """Training is over: stop now if a signal stopped it, and at once on any later one."""
        self.in_loop = False
        if self.signum is not None:
            raise Interrupted(self.signum, self.checkpoint())

    def on_train_begin(self, args, state, control, **kwargs):
        self.in_loop = True
        return control

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


def workers_leave_signals(init: Callable[[int], None] | None) -> Callable[[int], None]:
    """A DataLoader worker_init_fn: `init` (Trainer's seed_worker, so the seeding is unchanged),
    then leave_signals_to_the_trainer. Picklable, for spawned workers too."""
    return functools.partial(_init_worker, init=init, parent=os.getpid())


def _init_worker(worker_id: int, *, init: Callable[[int], None] | None, parent: int) -> None:
    if init is not None:
        init(worker_id)
    leave_signals_to_the_trainer(parent)


def leave_signals_to_the_trainer(parent: int) -> None:
    """In a DataLoader worker: ignore the stop signals a process group receives. SIGTERM is held
    (blocked, then taken by a thread) rather than ignored, so that one from `parent` (torch's shutdown
    of a worker that did not exit, or multiprocessing's at exit) still ends the worker at once."""
    for signum in STOP_SIGNALS:
        if signum != signal.SIGTERM:
            signal.signal(signum, signal.SIG_IGN)
    # Blocked in this (the only) thread before any other starts: every later thread inherits the
    # mask, so the kernel leaves SIGTERM pending for sigwaitinfo instead of torch's handler.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_exit_on_sigterm_from, args=(parent,), daemon=True, name="sigterm").start()


def _exit_on_sigterm_from(parent: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)  # what torch's own worker handler does for its parent's SIGTERM
