"""What a run prints: one line per epoch on the console (EpochRecorder's), every step's figures in
train.log only.

Trainer prints each `logging_steps` dict (`{'loss': '2.03', 'grad_norm': ...}`) to the console:
PrinterCallback when its bars are off, ProgressCallback's `training_bar.write` when they are on.
`quiet_console` swaps both for StepsToFile, which logs them through a logger whose only handlers are
the run's log files (Hydra's `train.log`), so they stay in the log (and in W&B) but off the screen.
"""

from __future__ import annotations

import logging

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

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
