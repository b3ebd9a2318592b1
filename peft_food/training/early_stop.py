"""Early stopping on the selection metric (train.early_stopping_patience), saying when and why it stopped.

    peft-food-train train.early_stopping_patience=3     # stop after 3 evaluations without a better val monitor

transformers' EarlyStoppingCallback watches metric_for_best_model, the run's `train.monitor` on val
(under the seed protocol, the one split it selects on), never test. Trainer still tracks the best
checkpoint, and `load_best` (trainer.py) loads it after training, so the model is the val-best one
whether or not the run stopped early.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import EarlyStoppingCallback

log = logging.getLogger(__name__)


class EarlyStop(EarlyStoppingCallback):
    """transformers' early stopping on the run's monitor (metric_for_best_model: val), which also
    says when it stopped and why: `stopped` (for the record) and one log line."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float | None = 0.0):
        super().__init__(early_stopping_patience, early_stopping_threshold)  # Trainer rebuilds it so on resume
        self.stopped: dict[str, Any] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        # Not the parent's warning that load_best_model_at_end is off: load_best loads the val-best
        # checkpoint after training, once the last evaluation's model has been tested.
        return control

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        best = state.best_metric  # Trainer updates it after on_evaluate: the best before this evaluation
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if control.should_training_stop and self.stopped is None:
            best_step = state.best_global_step
            self.stopped = {
                "epoch": round(state.epoch, 4),
                "step": state.global_step,
                "patience": self.early_stopping_patience,
                "best": best,
                "best_step": best_step,
            }
            watched = args.metric_for_best_model.removeprefix("eval_")
            # The selection split (val; under the seed protocol the reported split), never test.
            log.info(
                f"early stopping at epoch {state.epoch:g} (step {state.global_step}): {watched} has not "
                f"improved on {best:.4f} (step {best_step}) for {self.early_stopping_patience_counter} "
                f"evaluation(s) (train.early_stopping_patience={self.early_stopping_patience}); "
                f"the best checkpoint is the model"
            )
        return control
