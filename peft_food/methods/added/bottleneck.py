"""Bottleneck modules on a frozen backbone, trained with the head: AdaptFormer (Chen et al., 2022)
and the Houlsby / Pfeiffer adapters (Houlsby et al., 2019; Pfeiffer et al., 2021). Each module is
down Linear (dim -> width), activation, up Linear (width -> dim) with the up-projection
zero-initialised, so the untrained model is the base model exactly.

    peft-food-train peft=adaptformer peft.width=8 peft.scale=0.1
    peft-food-train peft=adapter peft.placement=houlsby peft.width=48

AdaptFormer runs parallel to each block's MLP, on the MLP's un-normalised input, its output times
s added to the block's: 12 x (768 w + w + 768 w + 768) on ViT-B/16 (156,768 at w = 8). An adapter
follows a sublayer's output projection with a residual (out + up(act(down(out)))): Houlsby after
the attention output and the MLP output (24 adapters on ViT-B), Pfeiffer after the MLP output only.

References differ in the details, so each is a key (docs/methods.md, "As each paper ran it"):
`peft.init` (BOTTLENECK_INITS; the default lora_kaiming is AdaptFormer's and PETL_Vision's),
the adapters' `peft.activation` (relu; Houlsby's adapter-bert uses gelu) and output `peft.scale`
(1.0; PETL_Vision's 0.1). AdaptFormer's width here is 8, the VTAB-1k tables' 0.16M; its code's
default (ShoufaChen/AdaptFormer main_image.py --ffn_num) is 64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from peft_food.errors import require
from peft_food.methods.added.base import AddedSpec
from peft_food.methods.base import (
    Resolve,
    register,
    require_fraction,
    require_method,
    require_positive,
)

# peft.activation -> the torch.nn activation an adapter's bottleneck uses.
ACTIVATIONS = {"relu": "ReLU", "gelu": "GELU", "swish": "SiLU"}
# Which sublayer outputs an adapter follows (module roles, resolved per backbone).
PLACEMENTS = {"houlsby": ["attn_out", "mlp_out"], "pfeiffer": ["mlp_out"]}
# peft.init -> whether the untrained bottleneck adds exactly nothing (its weights: methods/added/hooks.py
# init_bottleneck):
BOTTLENECK_INITS = {
    # down: Linear's kaiming-uniform(a=sqrt 5), up and biases zero: the identity at the start
    # (AdaptFormer's "lora", ShoufaChen/AdaptFormer models/adapter.py; PETL_Vision's "lora_kaiming").
    "lora_kaiming": True,
    # down: xavier-uniform, up and biases zero: the identity (PETL_Vision model/utils.py "lora_xavier").
    "lora_xavier": True,
    # both: truncated normal std 1e-3, biases zero: near the identity (google-research/adapter-bert
    # modeling.py feedforward_adapter, init_scale=1e-3).
    "houlsby": False,
    # both: xavier-uniform, biases N(0, 1e-6): not the identity (PETL_Vision's rand_h/rand_p adapters).
    "xavier": False,
}


def require_init(init: str) -> None:
    require(init in BOTTLENECK_INITS, f"peft.init={init!r} is invalid: use {', '.join(BOTTLENECK_INITS)}")


@register
@dataclass
class AdaptFormerSpec(AddedSpec):
    """A scaled bottleneck parallel to every block's MLP (AdaptFormer's AdaptMLP)."""

    method: str = "adaptformer"
    # Bottleneck width w: 1,537 w + 768 parameters per ViT-B block.
    width: int = 8
    # s: the branch's output is multiplied by it (AdaptFormer's fixed 0.1).
    scale: float = 0.1
    # Dropout between the activation and the up-projection while training (AdaptFormer's 0.1).
    dropout: float = 0.1
    # How the bottleneck starts (BOTTLENECK_INITS): lora_kaiming is AdaptFormer's own.
    init: str = "lora_kaiming"
    recommended_lr: float = 5e-3
    unfoldable: ClassVar[str] = "its ReLU bottleneck beside the MLP is not linear, so no weight of the base can hold it"

    def __post_init__(self) -> None:
        require_method(self)
        require_positive(self, "width")
        require(
            self.scale > 0,
            f"peft.scale={self.scale} is invalid: the branch's output scale s must be positive (AdaptFormer's is 0.1)",
        )
        require_fraction(self.dropout, "dropout")
        require_init(self.init)

    def attach(self, base: Any, *, resolve: Resolve, head: str) -> None:
        from peft_food.methods.added.hooks import attach_adaptformer

        attach_adaptformer(
            base,
            width=self.width,
            scale=self.scale,
            dropout=self.dropout,
            mlp_in=resolve(["mlp_in"])[0],
            init=self.init,
        )


@register
@dataclass
class BottleneckAdapterSpec(AddedSpec):
    """Residual bottleneck adapters after sublayer outputs: Houlsby (attention + MLP) or Pfeiffer (MLP)."""

    method: str = "adapter"
    # houlsby: after the attention output and the MLP output; pfeiffer: after the MLP output only.
    placement: str = "houlsby"
    # Bottleneck width: 1,537 w + 768 parameters per adapter on ViT-B (48 = 768 / 16, the adapters
    # library's reduction_factor=16).
    width: int = 48
    # relu (the adapters library's Pfeiffer config); Houlsby's adapter-bert: gelu.
    activation: str = "relu"
    # Dropout between the activation and the up-projection while training (PETL_Vision: 0.1).
    dropout: float = 0.0
    # The bottleneck's output is multiplied by it before the residual (PETL_Vision's adapter_scaler: 0.1).
    scale: float = 1.0
    # How the bottleneck starts (BOTTLENECK_INITS); lora_kaiming and lora_xavier start at the identity.
    init: str = "lora_kaiming"
    recommended_lr: float = 5e-3
    unfoldable: ClassVar[str] = "its bottleneck after each sublayer is not linear, so no weight of the base can hold it"

    def __post_init__(self) -> None:
        require_method(self)
        require(
            self.placement in PLACEMENTS, f"peft.placement={self.placement!r} is invalid: use {' or '.join(PLACEMENTS)}"
        )
        require_positive(self, "width")
        require(
            self.activation in ACTIVATIONS,
            f"peft.activation={self.activation!r} is invalid: use {', '.join(ACTIVATIONS)}",
        )
        require_fraction(self.dropout, "dropout")
        require(
            self.scale > 0,
            f"peft.scale={self.scale} is invalid: the adapter's output scale must be positive (PETL_Vision's is 0.1)",
        )
        require_init(self.init)

    def attach(self, base: Any, *, resolve: Resolve, head: str) -> None:
        from peft_food.methods.added.hooks import attach_bottleneck_adapters

        attach_bottleneck_adapters(
            base,
            after=resolve(PLACEMENTS[self.placement]),
            width=self.width,
            activation=ACTIVATIONS[self.activation],
            dropout=self.dropout,
            head=head,
            scale=self.scale,
            init=self.init,
        )
