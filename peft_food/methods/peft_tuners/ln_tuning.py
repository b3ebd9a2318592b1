"""LN tuning (peft=ln_tuning): every LayerNorm of the backbone trains, with the head.

peft-food-train peft=ln_tuning
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft_food.errors import ConfigError
from peft_food.methods.base import (
    Resolve,
    register,
    require_method,
)
from peft_food.methods.peft_tuners.base import TunerSpec


@register
@dataclass
class LnTuningSpec(TunerSpec):
    """LN tuning: every LayerNorm of the backbone trains (scale and shift), with the head."""

    method: str = "ln_tuning"
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self)

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        import torch
        from peft import LNTuningConfig, get_peft_model

        from peft_food.model.backbone import module_names

        # LayerNorms are found by type, not by role: roles name Linear layers (model.modules).
        norms = module_names(base, kind=torch.nn.LayerNorm, head=head)
        if not norms:
            raise ConfigError(
                "peft=ln_tuning: this backbone has no torch LayerNorm outside its head; choose another method"
            )
        return get_peft_model(base, LNTuningConfig(target_modules=norms, modules_to_save=[head]))
