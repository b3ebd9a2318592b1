"""BOFT (peft=boft): OFT with a butterfly-factored orthogonal matrix.

peft-food-train peft=boft peft.block_size=8         # butterfly orthogonal rotation of q, v
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
class BoftSpec(TunerSpec):
    """BOFT: OFT whose orthogonal matrix is a product of butterfly-permuted block-diagonal ones."""

    method: str = "boft"
    # Side of each orthogonal block; must divide every target's input width (768 = 192 x 4).
    block_size: int = 4
    # Drops whole blocks (multiplicative dropout), as peft's boft_dropout.
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self)
        require_positive(self, "block_size")
        require_fraction(self.dropout, "dropout")
        require_targets(self.target_modules)

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        import torch

        # peft builds BOFT's butterfly permutation with Tensor.item(), which the meta device (the
        # skeleton check_targets prepares) refuses: build it on the CPU; peft then moves the
        # adapter to wherever its base layer is.
        with torch.device("cpu"):
            return super().prepare(base, resolve=resolve, head=head)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import BOFTConfig

        # One butterfly factor: peft uses more only with its CUDA extension and silently falls back
        # to one without it (boft/layer.py get_fbd_cuda), so a larger value would not mean the same
        # model on every machine.
        return BOFTConfig(
            boft_block_size=self.block_size,
            boft_block_num=0,
            boft_n_butterfly_factor=1,
            boft_dropout=self.dropout,
            **common,
        )
