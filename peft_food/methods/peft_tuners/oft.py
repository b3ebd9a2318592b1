"""OFT (peft=oft): a learned block-diagonal orthogonal rotation of each targeted weight.

peft-food-train peft=oft peft.block_size=32
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
class OftSpec(TunerSpec):
    """OFT: each target's weight is rotated by a learned block-diagonal orthogonal matrix."""

    method: str = "oft"
    # Side of each orthogonal block; must divide every target's input width (768 = 24 x 32).
    block_size: int = 32
    module_dropout: float = 0.0
    # Constrained OFT: keep each rotation within eps of the identity.
    coft: bool = False
    eps: float = 6e-5
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self)
        require_positive(self, "block_size")
        require_fraction(self.module_dropout, "module_dropout")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import OFTConfig

        # r=0: the number of blocks follows from the block size and each layer's width.
        return OFTConfig(
            r=0,
            oft_block_size=self.block_size,
            module_dropout=self.module_dropout,
            coft=self.coft,
            eps=self.eps,
            **common,
        )
