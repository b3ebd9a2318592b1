"""SSF (Lian et al., 2022, "Scaling & Shifting Your Features"): a learned scale (init 1) and shift
(init 0) on the output of every Linear and LayerNorm of the backbone and of the patch embedding,
trained with the head. On ViT-B/16: 1,536 (patch embedding) + 12 x 16,896 (norm1, q, k, v,
attention out, norm2, fc1, fc2) + 1,536 (final norm) = 205,824, + 77,669 for a 101-way head.

    peft-food-train peft=ssf
    peft-food-export outputs/<date>/<time> exported/food-vit-ssf   # folded: a plain transformers model

`peft.init=identity` (the default) starts every scale at exactly 1 and shift at 0, so the untrained
model is the base; `peft.init=paper` draws them N(1, 0.02) and N(0, 0.02) as the authors' code does
(dongzelian/SSF models/vision_transformer.py, init_ssf_scale_shift).

A scale and shift after a linear map fold into it (W' = diag(s) W, b' = s * b + t), so an SSF run
exports as the unchanged architecture with new weights. A layer without a bias has nowhere to
take the shift (Swin's patch-merging reduction): such a run trains and predicts, but does not export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft_food.errors import require
from peft_food.methods.added.base import AddedSpec
from peft_food.methods.base import Resolve, register, require_method

# peft.init -> how the scales and shifts start (the std per init: methods/added/hooks.py SSF_INITS).
INITS = ("identity", "paper")


@register
@dataclass
class SsfSpec(AddedSpec):
    """A learned scale and shift after every Linear, LayerNorm and the patch embedding."""

    method: str = "ssf"
    # identity: scale 1, shift 0 exactly (the base model); paper: N(1, 0.02) and N(0, 0.02).
    init: str = "identity"
    # Vectors that start at the identity, like BitFit's biases: the same step.
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self)
        require(self.init in INITS, f"peft.init={self.init!r} is invalid: use {' or '.join(INITS)}")

    def attach(self, base: Any, *, resolve: Resolve, head: str) -> None:
        from peft_food.methods.added.hooks import attach_ssf

        attach_ssf(base, head=head, init=self.init)

    def merge(self, model: Any) -> Any:
        from peft_food.methods.added.hooks import fold_ssf

        return fold_ssf(model)
