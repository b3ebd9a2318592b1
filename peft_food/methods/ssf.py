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
from typing import Any, ClassVar

import torch

from peft_food.errors import UserError
from peft_food.methods.added import AddedSpec
from peft_food.methods.base import Resolve, register, require_method

# The layers SSF follows: every Linear and LayerNorm, and the patch embedding's convolution.
HOSTS = (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Conv2d)


class ScaleShift(torch.nn.Module):
    """y = x * scale + shift over the channels of its host's output (last dim; dim 1 for a conv)."""

    def __init__(self, channels: int, *, conv: bool) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(channels))
        self.shift = torch.nn.Parameter(torch.zeros(channels))
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale.to(x.dtype), self.shift.to(x.dtype)
        if self.conv:
            return x * scale[:, None, None] + shift[:, None, None]
        return x * scale + shift

    def after(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        """The host's forward hook (a bound method, so a deep copy of the model keeps it wired)."""
        return self(output)


def channels_of(host: torch.nn.Module) -> int:
    if isinstance(host, torch.nn.Linear):
        return host.out_features
    if isinstance(host, torch.nn.Conv2d):
        return host.out_channels
    return host.normalized_shape[-1]


def hosts(model: torch.nn.Module, *, head: str) -> list[str]:
    """Names of the modules SSF follows: every Linear, LayerNorm and Conv2d outside the head."""
    return [name for name, module in model.named_modules()
            if isinstance(module, HOSTS) and name != head and not name.startswith(f"{head}.")]


def fold(host: torch.nn.Module, name: str) -> None:
    """Fold the host's ScaleShift into its own weight and bias, then remove it and its hook."""
    ssf: ScaleShift = host.ssf
    scale, shift = ssf.scale.detach(), ssf.shift.detach()
    if host.bias is None:
        raise UserError(f"peft=ssf cannot be exported: {name} has no bias to take the shift into; predict with "
                        f"`peft-food-predict <run dir> photo.jpg` instead")
    view = (-1,) + (1,) * (host.weight.dim() - 1)  # one scale per output channel
    with torch.no_grad():
        host.weight.mul_(scale.view(view) if host.weight.dim() > 1 else scale)
        host.bias.mul_(scale).add_(shift)
    for key, hook in list(host._forward_hooks.items()):
        if getattr(hook, "__self__", None) is ssf:
            del host._forward_hooks[key]
    del host.ssf


@register
@dataclass
class SsfSpec(AddedSpec):
    """A learned scale and shift after every Linear, LayerNorm and the patch embedding."""

    method: str = "ssf"
    # Vectors that start at the identity, like BitFit's biases: the same step.
    recommended_lr: float = 5e-3
    child: ClassVar[str] = "ssf"

    def __post_init__(self) -> None:
        require_method(self, "ssf")

    def attach(self, base: torch.nn.Module, *, resolve: Resolve, head: str) -> None:
        for name in hosts(base, head=head):
            host = base.get_submodule(name)
            host.ssf = ScaleShift(channels_of(host), conv=isinstance(host, torch.nn.Conv2d))
            host.register_forward_hook(host.ssf.after)

    def merge(self, model: Any) -> Any:
        for name, host in list(model.named_modules()):
            if isinstance(getattr(host, "ssf", None), ScaleShift):
                fold(host, name)
        return model
