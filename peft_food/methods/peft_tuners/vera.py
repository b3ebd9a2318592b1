"""VeRA (peft=vera): frozen random low-rank matrices shared by all layers, two trained vectors per layer.

peft-food-train peft=vera peft.r=256
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
class VeraSpec(TunerSpec):
    """VeRA: frozen random A and B shared by all layers; only two scaling vectors per layer train."""

    method: str = "vera"
    r: int = 256
    dropout: float = 0.0
    # Initial value of the per-rank scaling vector d.
    d_initial: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 1e-2

    def __post_init__(self) -> None:
        require_method(self)
        require_positive(self, "r")
        require_fraction(self.dropout, "dropout")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import VeraConfig

        # save_projection: the shared random A/B go into the adapter file, so a reload does not
        # depend on regenerating them from the PRNG key on another torch version.
        return VeraConfig(r=self.r, vera_dropout=self.dropout, d_initial=self.d_initial, save_projection=True, **common)
