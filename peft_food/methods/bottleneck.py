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
"""

from __future__ import annotations

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
from peft_food.methods.layout import blocks, hidden_of, mlp_norm, output_with

ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "swish": torch.nn.SiLU}
# Which sublayer outputs an adapter follows (module roles, resolved per backbone).
PLACEMENTS = {"houlsby": ["attn_out", "mlp_out"], "pfeiffer": ["mlp_out"]}


class Bottleneck(torch.nn.Module):
    """scale * up(dropout(act(down(x)))), up zero-initialised; its methods are the hooks that use it."""

    def __init__(self, *, dim: int, width: int, activation: str, dropout: float, scale: float) -> None:
        super().__init__()
        self.down = torch.nn.Linear(dim, width)  # Linear's own (kaiming-uniform) init
        self.up = torch.nn.Linear(width, dim)
        torch.nn.init.zeros_(self.down.bias)
        torch.nn.init.zeros_(self.up.weight)  # the branch adds exactly nothing until it trains
        torch.nn.init.zeros_(self.up.bias)
        self.act = ACTIVATIONS[activation]()
        self.dropout = torch.nn.Dropout(dropout)
        self.scale = scale
        self.pending: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.dropout(self.act(self.down(x))))

    def residual(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        """A host's forward hook (adapter): out + bottleneck(out)."""
        hidden = hidden_of(output)
        return output_with(output, hidden + self(hidden))

    def branch(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        """The pre-MLP norm's forward hook (AdaptFormer): the branch reads the norm's input."""
        self.pending = self(args[0])

    def add(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        """The block's forward hook (AdaptFormer): block output + the branch, x + MLP(LN(x)) + s f(x)."""
        pending, self.pending = self.pending, None
        return output_with(output, hidden_of(output) + pending)


def host_names(model: torch.nn.Module, *, short: list[str], head: str) -> list[str]:
    """Full names of the modules whose last name component is one of `short`, outside the head."""
    return [name for name, _ in model.named_modules()
            if name.rsplit(".", 1)[-1] in short and name != head and not name.startswith(f"{head}.")]


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
    recommended_lr: float = 5e-3
    child: ClassVar[str] = "adaptformer"
    unfoldable: ClassVar[str] = "its ReLU bottleneck beside the MLP is not linear, so no weight of the base can hold it"

    def __post_init__(self) -> None:
        require_method(self, "adaptformer")
        require_positive(self, "width")
        require(self.scale > 0, f"peft.scale={self.scale} is invalid: the branch's output scale s must be positive "
                                f"(AdaptFormer's is 0.1)")
        require_fraction(self.dropout, "dropout")

    def attach(self, base: torch.nn.Module, *, resolve: Resolve, head: str) -> None:
        for block in blocks(base, mlp_in=resolve(["mlp_in"])[0]):
            norm = mlp_norm(block)
            block.adaptformer = Bottleneck(dim=norm.normalized_shape[-1], width=self.width, activation="relu",
                                           dropout=self.dropout, scale=self.scale)
            norm.register_forward_hook(block.adaptformer.branch)
            block.register_forward_hook(block.adaptformer.add)


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
    activation: str = "relu"
    dropout: float = 0.0
    recommended_lr: float = 5e-3
    child: ClassVar[str] = "adapter"
    unfoldable: ClassVar[str] = "its bottleneck after each sublayer is not linear, so no weight of the base can hold it"

    def __post_init__(self) -> None:
        require_method(self, "adapter")
        require(self.placement in PLACEMENTS, f"peft.placement={self.placement!r} is invalid: use "
                                              f"{' or '.join(PLACEMENTS)}")
        require_positive(self, "width")
        require(self.activation in ACTIVATIONS, f"peft.activation={self.activation!r} is invalid: use "
                                                f"{', '.join(ACTIVATIONS)}")
        require_fraction(self.dropout, "dropout")

    def attach(self, base: torch.nn.Module, *, resolve: Resolve, head: str) -> None:
        for name in host_names(base, short=resolve(PLACEMENTS[self.placement]), head=head):
            host = base.get_submodule(name)
            host.adapter = Bottleneck(dim=host.out_features, width=self.width, activation=self.activation,
                                      dropout=self.dropout, scale=1.0)
            host.register_forward_hook(host.adapter.residual)
