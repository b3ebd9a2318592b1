"""AdaLoRA (peft=adalora): LoRA whose ranks are pruned by importance while it trains; its rank
budget follows the run's steps through its own Trainer callback (adalora_schedule.py).

    peft-food-train peft=adalora peft.init_r=12 peft.target_r=8
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peft_food.errors import require
from peft_food.methods.base import (
    Resolve,
    register,
    require_fraction,
    require_method,
    require_positive,
    require_targets,
)
from peft_food.methods.peft_tuners.base import TunerSpec


@register
@dataclass
class AdaLoraSpec(TunerSpec):
    """AdaLoRA: LoRA in SVD form (P diag(E) Q) whose total rank is pruned from init_r to target_r per
    target on average during training, by importance; the rank budget is updated after every
    optimizer step by the method's own Trainer callback."""

    method: str = "adalora"
    # Ranks per target at the start and, on average, at the end (peft's defaults; the paper starts at 1.5x).
    init_r: int = 12
    target_r: int = 8
    alpha: int = 8
    dropout: float = 0.0
    # Fractions of the run's optimizer steps: first at full rank (peft: tinit), last at the final ranks (tfinal).
    tinit_fraction: float = 0.1
    tfinal_fraction: float = 0.2
    # Reallocate every delta_t steps (peft: deltaT; its default).
    delta_t: int = 1
    # Smoothing of the sensitivity and uncertainty estimates (the paper's and peft's 0.85).
    beta1: float = 0.85
    beta2: float = 0.85
    # Weight of the penalty that keeps P and Q orthogonal, added to the training loss (peft's default).
    orth_reg_weight: float = 0.5
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self)
        for key in ("init_r", "target_r", "alpha", "delta_t"):
            require_positive(self, key)
        require(
            self.target_r <= self.init_r,
            f"peft.target_r={self.target_r} is invalid: it must not exceed "
            f"peft.init_r={self.init_r} (AdaLoRA only prunes ranks)",
        )
        require_fraction(self.dropout, "dropout")
        for key in ("tinit_fraction", "tfinal_fraction"):
            require_fraction(getattr(self, key), key)
        require(
            self.tinit_fraction + self.tfinal_fraction < 1,
            f"peft.tinit_fraction + peft.tfinal_fraction = {self.tinit_fraction + self.tfinal_fraction:g} "
            f"leaves no steps to reallocate ranks in: keep their sum below 1",
        )
        for key in ("beta1", "beta2"):
            value = getattr(self, key)
            require(0 < value < 1, f"peft.{key}={value} is invalid: use a value in (0, 1)")
        require(self.orth_reg_weight >= 0, f"peft.orth_reg_weight={self.orth_reg_weight} is invalid: use 0 or more")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import AdaLoraConfig

        # total_step is the run's: set when training begins (AdaLoraSchedule). Until then, a
        # one-step schedule satisfies peft's check (it needs total_step > tinit + tfinal).
        return AdaLoraConfig(
            init_r=self.init_r,
            target_r=self.target_r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            tinit=0,
            tfinal=0,
            total_step=1,
            deltaT=self.delta_t,
            beta1=self.beta1,
            beta2=self.beta2,
            orth_reg_weight=self.orth_reg_weight,
            **common,
        )

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        model = super().prepare(base, resolve=resolve, head=head)
        # PeftModel.forward calls the transformers model directly (peft_model.py), skipping
        # AdaLoraModel.forward, which is what adds the orthogonality penalty to the loss.
        model.forward = model.base_model.forward
        # peft leaves each target's `ranknum` (the fixed rank its update is divided by) trainable,
        # yet never saves it: trained, the reloaded adapter would not be the one that trained.
        for name, param in model.named_parameters():
            if ".ranknum." in name:
                param.requires_grad_(False)
        return model

    def callbacks(self) -> list[Any]:
        from peft_food.methods.peft_tuners.adalora_schedule import (
            AdaLoraSchedule,
        )  # transformers: not on the command line's path

        return [AdaLoraSchedule(tinit_fraction=self.tinit_fraction, tfinal_fraction=self.tfinal_fraction)]
