"""VPT (Jia et al., 2022, "Visual Prompt Tuning"): p learned prompt tokens inserted after [CLS];
shallow: once, at the input; deep: a fresh set replacing the previous layer's prompts before every
layer. Trained with the head. On ViT-B/16: shallow p x 768, deep p x 768 x 12 (+ 77,669 head).

    peft-food-train peft=vpt peft.prompts=10              # VPT-shallow
    peft-food-train peft=vpt peft.prompts=10 peft.deep=true

The prompts leave the sequence after the backbone's final norm, so every head reads what it read
without them: [CLS] (ViT, DeiT: its distillation token is back in place), or [CLS] + the patch
mean (DINOv2: prompts never enter the mean), or the patch mean (CLIP; timm's mean-pooled ViTs).
Initialised as in the paper: uniform(-v, v) with v = sqrt(6 / (3 * patch_area + dim)). Refused in
one line (model/tokens.py): Swin (no global token sequence), SigLIP (no [CLS]), BEiT (relative
position bias sized for [CLS] + patches) and EVA-02 (rotary position embedding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from peft_food.methods.added.base import AddedSpec
from peft_food.methods.base import (
    Resolve,
    register,
    require_fraction,
    require_method,
    require_positive,
)


@register
@dataclass
class VptSpec(AddedSpec):
    """Prompt tokens after [CLS]: at the input (shallow) or replaced before every layer (deep)."""

    method: str = "vpt"
    # Prompt tokens per set: the sequence grows by this many (197 -> 207 on ViT-B/16 at 10).
    prompts: int = 10
    # false: one set at the input (p x dim); true: one set per layer (p x dim x layers).
    deep: bool = False
    # Dropout on the prompt tokens while training, one mask per image (as the authors' code).
    dropout: float = 0.1
    # Randomly initialised tokens in a frozen model take a larger step than LoRA's.
    recommended_lr: float = 1e-2
    unfoldable: ClassVar[str] = "its prompt tokens lengthen the sequence, which no weight of the base can hold"

    def __post_init__(self) -> None:
        require_method(self)
        require_positive(self, "prompts")
        require_fraction(self.dropout, "dropout")

    @property
    def label(self) -> str:
        """`vpt_deep` for deep prompts, so tables, tags and compare's cells tell the two variants apart
        (papers report VPT-shallow and VPT-deep as two methods)."""
        return "vpt_deep" if self.deep else "vpt"

    def attach(self, base: Any, *, resolve: Resolve, head: str) -> None:
        from peft_food.methods.added.hooks import (
            attach_prompts,
        )  # refuses a backbone without [CLS] first (model/tokens.py)

        attach_prompts(base, tokens=self.prompts, deep=self.deep, dropout=self.dropout, mlp_in=resolve(["mlp_in"])[0])
