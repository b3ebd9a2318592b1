"""IA3 (peft=ia3): learned vectors rescale the targeted layers' outputs (inputs for feed-forward ones).

peft-food-train peft=ia3                            # IA3 on key/value/mlp_out
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peft_food.errors import require
from peft_food.methods.base import (
    Resolve,
    register,
    require_method,
    require_targets,
)
from peft_food.methods.peft_tuners.base import TunerSpec


@register
@dataclass
class IA3Spec(TunerSpec):
    """IA3: learned vectors rescale key and value outputs and the MLP's second layer input."""

    method: str = "ia3"
    target_modules: list[str] = field(default_factory=lambda: ["key", "value", "mlp_out"])
    # Targets scaled on their input rather than their output (must be among target_modules).
    feedforward_modules: list[str] = field(default_factory=lambda: ["mlp_out"])
    # IA3's few parameters start at 1 and need a larger step than LoRA's (the paper uses 3e-3).
    recommended_lr: float = 1e-2

    def __post_init__(self) -> None:
        require_method(self)
        require_targets(self.target_modules)
        missing = sorted(set(self.feedforward_modules) - set(self.target_modules))
        require(
            not missing,
            f"peft.feedforward_modules has {missing} not in peft.target_modules: "
            f"add them to target_modules or drop them",
        )

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import IA3Config

        return IA3Config(feedforward_modules=resolve(self.feedforward_modules), **common)
