"""SSF (Lian et al., 2022, "Scaling & Shifting Your Features"): a learned scale (init 1) and shift
(init 0) on the output of every Linear and LayerNorm of the backbone and of the patch embedding,
trained with the head. On ViT-B/16: 1,536 (patch embedding) + 12 x 16,896 (norm1, q, k, v,
attention out, norm2, fc1, fc2) + 1,536 (final norm) = 205,824, + 77,669 for a 101-way head.

    peft-food-train peft=ssf
    peft-food-export outputs/<date>/<time> exported/food-vit-ssf   # folded: a plain transformers model

A scale and shift after a linear map fold into it (W' = diag(s) W, b' = s * b + t), so an SSF run
exports as the unchanged architecture with new weights. A layer without a bias has nowhere to
take the shift (Swin's patch-merging reduction): such a run trains and predicts, but does not export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft_food.methods.added.base import AddedSpec
from peft_food.methods.base import Resolve, register, require_method


@register
@dataclass
class SsfSpec(AddedSpec):
    """A learned scale and shift after every Linear, LayerNorm and the patch embedding."""

    method: str = "ssf"
    # Vectors that start at the identity, like BitFit's biases: the same step.
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self, "ssf")

    def attach(self, base: Any, *, resolve: Resolve, head: str) -> None:
        from peft_food.methods.added.hooks import attach_ssf

        attach_ssf(base, head=head)

    def merge(self, model: Any) -> Any:
        from peft_food.methods.added.hooks import fold_ssf

        return fold_ssf(model)
