"""What a run prints: one line per epoch on the console (EpochRecorder's), every step's figures in
train.log only, and where no bar is shown (a redirected log) a progress line every
`progress_every_s` seconds: `step 120/900 (epoch 1.33 of 10): train loss 2.0312 | 412 img/s | ETA 0:12:03`.

Trainer prints each `logging_steps` dict (`{'loss': '2.03', 'grad_norm': ...}`) to the console:
PrinterCallback when its bars are off, ProgressCallback's `training_bar.write` when they are on.
`quiet_console` swaps both for StepsToFile, which logs them through a logger whose only handlers are
the run's log files (Hydra's `train.log`), so they stay in the log (and in W&B) but off the screen.
"""

from __future__ import annotations

import logging
import time

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from peft_food import progress

log = logging.getLogger(__name__)

# Step lines: in the run's log files, never on the console (propagate=False; handlers set per run).
steps_log = logging.getLogger("peft_food.steps")
steps_log.propagate = False


class BarsOnly(ProgressCallback):
    """Trainer's progress bars, without the logs it writes above them."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


class StepsToFile(TrainerCallback):
    """Each of Trainer's logged dicts as one line in the run's log files: `step 12: loss 2.0312 ...`."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            figures = " ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items() if k != "total_flos"
            )
            steps_log.info("step %d: %s", state.global_step, figures)


def quiet_console(trainer: Trainer) -> None:
    """Trainer's logged dicts go to the log files only; its bars (if shown) stay."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarsOnly)
    trainer.pop_callback(PrinterCallback)
    trainer.add_callback(StepsToFile)
    steps_log.handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    steps_log.setLevel(logging.INFO)


def progress_line(
    *, step: int, steps: int, epoch: float, epochs: float, loss: float | None, img_per_s: float, eta_s: float
) -> str:
    """`step 120/900 (epoch 1.33 of 10): train loss 2.0312 | 412 img/s | ETA 0:12:03`."""
    eta = time.strftime("%H:%M:%S", time.gmtime(max(0.0, eta_s))).removeprefix("0")  # H:MM:SS
    days = int(eta_s // 86400)
    loss_part = f"train loss {loss:.4f} | " if loss is not None else ""
    return (
        f"step {step}/{steps} (epoch {epoch:.2f} of {epochs:g}): {loss_part}{img_per_s:.0f} img/s | "
        f"ETA {f'{days}d ' if days else ''}{eta}"
    )


class ProgressLines(TrainerCallback):
    """Where no bar is shown, a line every `every_s` seconds of wall time (console and train.log):
    the step, the last logged train loss, img/s since the previous line, and the time left at the
    pace of this launch so far (its evaluations included)."""

    def __init__(self, every_s: float):
        self.every_s = every_s

    def on_train_begin(self, args, state, control, **kwargs):
        self._begun = self._last = time.monotonic()
        self._first_step = self._last_step = state.global_step
        self._pending = False

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self._last < self.every_s or not state.is_world_process_zero:
            return
        if control.should_log:  # this step's loss is logged right after: wait for it (on_log)
            self._pending = True
        else:
            self._write(args, state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._pending and logs and "loss" in logs:
            self._pending = False
            self._write(args, state)

    def _write(self, args, state) -> None:
        now = time.monotonic()
        batch = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        per_step = (now - self._begun) / max(1, state.global_step - self._first_step)
        losses = [e["loss"] for e in state.log_history if "loss" in e]
        log.info(
            progress_line(
                step=state.global_step,
                steps=state.max_steps,
                epoch=state.epoch or 0.0,
                epochs=args.num_train_epochs,
                loss=losses[-1] if losses else None,
                img_per_s=(state.global_step - self._last_step) * batch / max(now - self._last, 1e-9),
                eta_s=(state.max_steps - state.global_step) * per_step,
            )
        )
        self._last, self._last_step = now, state.global_step


def progress_lines(every_s: float | None) -> list[TrainerCallback]:
    """The run's progress lines: only where no bar shows progress already, and only when asked for."""
    return [ProgressLines(every_s)] if every_s and not progress.shown() else []
