"""LoHa (peft=loha): the update is the Hadamard product of two rank-r products.

peft-food-train peft=loha peft.r=8
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
class LohaSpec(TunerSpec):
    """LoHa: the update is the Hadamard product of two rank-r products (FedPara)."""

    method: str = "loha"
    r: int = 8
    alpha: int = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self)
        require_positive(self, "r")
        require_positive(self, "alpha")
        require_fraction(self.rank_dropout, "rank_dropout")
        require_fraction(self.module_dropout, "module_dropout")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import LoHaConfig

        return LoHaConfig(
            r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout, module_dropout=self.module_dropout, **common
        )
