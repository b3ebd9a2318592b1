"""VPT (Jia et al., 2022, "Visual Prompt Tuning"): p learned prompt tokens inserted after [CLS];
shallow: once, at the input; deep: a fresh set replacing the previous layer's prompts before every
layer. Trained with the head. On ViT-B/16: shallow p x 768, deep p x 768 x 12 (+ 77,669 head).

    peft-food-train peft=vpt peft.prompts=10              # VPT-shallow
    peft-food-train peft=vpt peft.prompts=10 peft.deep=true

The prompts leave the sequence after the backbone's final norm, so every head reads what it read
without them: [CLS] (ViT, DeiT: its distillation token is back in place), or [CLS] + the patch
mean (DINOv2: prompts never enter the mean). Initialised as in the paper: uniform(-v, v) with
v = sqrt(6 / (3 * patch_area + dim)). Swin has no global token sequence to prompt: refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from peft_food.errors import require
from peft_food.methods.added import AddedSpec
from peft_food.methods.base import (
    Resolve,
    register,
    require_fraction,
    require_method,
    require_positive,
)
from peft_food.methods.layout import backbone, blocks, final_norm

# model_type -> the backbones whose embeddings give [CLS] first, then the other tokens.
SUPPORTED = {"vit": "ViT", "deit": "DeiT", "dinov2": "DINOv2"}


class Prompts(torch.nn.Module):
    """One set of prompt tokens (tokens x dim) and the hooks that put it into the sequence."""

    def __init__(self, *, tokens: int, dim: int, patch_area: int, dropout: float) -> None:
        super().__init__()
        self.prompts = torch.nn.Parameter(torch.empty(tokens, dim))
        bound = math.sqrt(6.0 / (3 * patch_area + dim))  # VPT's xavier-style uniform range
        torch.nn.init.uniform_(self.prompts, -bound, bound)
        self.dropout = torch.nn.Dropout(dropout)

    def batch(self, like: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.prompts.to(like.dtype)).expand(like.shape[0], -1, -1)

    def insert(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        """After the embeddings: [CLS], the prompts, then the rest."""
        return torch.cat([output[:, :1], self.batch(output), output[:, 1:]], dim=1)

    def replace(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Before a layer (deep VPT): this layer's prompts take the previous layer's places."""
        hidden = args[0] if args else kwargs["hidden_states"]
        tokens = len(self.prompts)
        hidden = torch.cat([hidden[:, :1], self.batch(hidden), hidden[:, 1 + tokens:]], dim=1)
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    def strip(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        """After the final norm: the sequence as the head expects it, prompts removed."""
        return torch.cat([output[:, :1], output[:, 1 + len(self.prompts):]], dim=1)


@register
@dataclass
class VptSpec(AddedSpec):
    """Prompt tokens after [CLS]: at the input (shallow) or replaced before every layer (deep)."""

    method: str = "vpt"
    # Prompt tokens per set: the sequence grows by this many (197 -> 207 on ViT-B/16 at 10).
    prompts: int = 10
    # false: one set at the input (p x dim); true: one set per layer (p x dim x layers).
    deep: bool = False
    # Dropout on the prompt tokens while training.
    dropout: float = 0.1
    # Randomly initialised tokens in a frozen model take a larger step than LoRA's.
    recommended_lr: float = 1e-2
    child: ClassVar[str] = "vpt"
    unfoldable: ClassVar[str] = "its prompt tokens lengthen the sequence, which no weight of the base can hold"

    def __post_init__(self) -> None:
        require_method(self, "vpt")
        require_positive(self, "prompts")
        require_fraction(self.dropout, "dropout")

    def attach(self, base: torch.nn.Module, *, resolve: Resolve, head: str) -> None:
        kind = base.config.model_type
        require(kind in SUPPORTED, f"peft=vpt supports {', '.join(SUPPORTED.values())} backbones "
                                   f"(model=vit_base, deit_small, dinov2_small or their toys), not {kind}: "
                                   f"choose one of those or another method (e.g. peft=lora) for {kind}")
        patch = base.config.patch_size
        area = patch * patch if isinstance(patch, int) else math.prod(patch)

        def prompts() -> Prompts:
            return Prompts(tokens=self.prompts, dim=base.config.hidden_size, patch_area=area, dropout=self.dropout)

        embeddings = backbone(base).embeddings
        embeddings.vpt = prompts()
        embeddings.register_forward_hook(embeddings.vpt.insert)
        final_norm(base).register_forward_hook(embeddings.vpt.strip)
        if self.deep:
            for block in blocks(base, mlp_in=resolve(["mlp_in"])[0])[1:]:
                block.vpt = prompts()
                block.register_forward_pre_hook(block.vpt.replace, with_kwargs=True)
