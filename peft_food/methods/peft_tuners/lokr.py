"""LoKr (peft=lokr): the update is a Kronecker product, its second factor low-rank.

peft-food-train peft=lokr peft.r=8
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
class LokrSpec(TunerSpec):
    """LoKr: the update is a Kronecker product w1 (x) w2, w2 low-rank when r is small."""

    method: str = "lokr"
    r: int = 8
    alpha: int = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    # Also factor w1 into two rank-r matrices when r is small enough.
    decompose_both: bool = False
    # -1: split each dimension into the two factors nearest its square root (768 = 24 x 32).
    decompose_factor: int = -1
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self)
        require_positive(self, "r")
        require_positive(self, "alpha")
        require_fraction(self.rank_dropout, "rank_dropout")
        require_fraction(self.module_dropout, "module_dropout")
        require(
            self.decompose_factor == -1 or self.decompose_factor > 0,
            f"peft.decompose_factor={self.decompose_factor} is invalid: use -1 (auto) or a positive factor",
        )
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import LoKrConfig

        return LoKrConfig(
            r=self.r,
            alpha=self.alpha,
            rank_dropout=self.rank_dropout,
            module_dropout=self.module_dropout,
            decompose_both=self.decompose_both,
            decompose_factor=self.decompose_factor,
            **common,
        )
