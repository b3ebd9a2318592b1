"""HRA (peft=hra): a chain of r Householder reflections per target.

peft-food-train peft=hra peft.r=8
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peft_food.errors import require
from peft_food.methods.base import (
    Resolve,
    register,
    require_method,
    require_positive,
    require_targets,
)
from peft_food.methods.peft_tuners.base import TunerSpec


@register
@dataclass
class HraSpec(TunerSpec):
    """HRA: each target's weight is multiplied by a chain of r Householder reflections."""

    method: str = "hra"
    # Number of reflections (peft's and the paper's default); even, so the chain starts as the identity.
    r: int = 8
    # Gram-Schmidt orthogonalise the reflection vectors (the paper's regularised variant).
    apply_GS: bool = False
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self)
        require_positive(self, "r")
        # peft pairs identical reflections (H H = I) only for an even r; an odd r starts away from
        # the pretrained model, with a warning nobody reads.
        require(self.r % 2 == 0, f"peft.r={self.r} is invalid: HRA's r must be even (e.g. peft.r=8)")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import HRAConfig

        return HRAConfig(r=self.r, apply_GS=self.apply_GS, **common)
