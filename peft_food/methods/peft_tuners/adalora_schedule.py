"""AdaLoRA's training hook (peft=adalora, methods/peft_tuners/adalora.py): its rank budget over the run's own
steps, and its val-best checkpoint loadable. Apart from the spec so the command line, which imports
every spec, imports no transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class AdaLoraSchedule(TrainerCallback):
    """Runs AdaLoRA's budget over the Trainer's own step count (state.max_steps: epochs x steps per
    epoch, or train.max_steps), and reallocates ranks after every optimizer step, while the
    gradients its importance scores read are still there (before zero_grad)."""

    def __init__(self, *, tinit_fraction: float, tfinal_fraction: float) -> None:
        self.tinit_fraction, self.tfinal_fraction = tinit_fraction, tfinal_fraction

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        tuner = model.base_model
        config = tuner.peft_config[tuner.trainable_adapter_name]  # the one RankAllocator reads
        config.total_step = state.max_steps
        config.tinit = int(self.tinit_fraction * state.max_steps)
        config.tfinal = int(self.tfinal_fraction * state.max_steps)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        # global_step counts the steps before this one: +1 makes the last step total_step, the step
        # at which peft fixes the final ranks when tfinal is 0.
        model.base_model.update_and_allocate(state.global_step + 1)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        # Each checkpoint is saved trimmed to the ranks kept when it was written (its adapter_config's
        # rank_pattern), and peft loads one by first cutting the model to the model's own pattern: the
        # last step's. The val-best checkpoint of an earlier epoch then no longer fits (load_best:
        # "size mismatch"). Its own pattern makes the cut match it; the modules are still full size
        # (training masks ranks, it never cuts them), so nothing of the last epoch is lost before the
        # last epoch's model is tested.
        if state.best_model_checkpoint is None:
            return
        saved = Path(state.best_model_checkpoint) / "adapter_config.json"
        tuner = model.base_model
        if saved.is_file():
            tuner.peft_config[tuner.trainable_adapter_name].rank_pattern = json.loads(saved.read_text())["rank_pattern"]
