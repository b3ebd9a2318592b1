"""The classifier head as a paper starts and shapes it: `model.head_init` (how its Linear starts) and
`model.head_norm` (a BatchNorm without affine parameters in front of it, as MAE's linear probing
and AdaptFormer run it). Applied to every new base (model/backbone.py load_base) and to every
reloaded one (saved/artifacts.py), whatever the method.

    peft-food-train peft=vpt model.head_init=vpt                               # VPT's head
    peft-food-train peft=adaptformer model.head_init=trunc_normal model.head_norm=true  # AdaptFormer's

The norm is a child of the head's Linear (`<head>.norm`: running mean, running variance, batch
count), run by a forward pre-hook that is its own bound method, as the added methods' modules are
(methods/added/hooks.py): the head's parameter names stay transformers', and what saves the head saves
the norm's statistics with it. Export folds it into the Linear (fold_head_norm).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

import torch

from peft_food.errors import ConfigError

# KMnP/vpt src/models/mlp.py (special_bias=True, which src/models/vit_models.py setup_head passes):
# the bias of a prior probability of 0.01 per class.
VPT_HEAD_BIAS = -math.log((1 - 0.01) / 0.01)
# MAE main_linprobe.py / ShoufaChen/AdaptFormer main_image.py: trunc_normal_(head.weight, std=0.01)
# (timm's, cut at +-2 absolute: no cut at that std) and BatchNorm1d(affine=False, eps=1e-6).
TRUNC_NORMAL_STD = 0.01
HEAD_NORM_EPS = 1e-6


class HeadNorm(torch.nn.BatchNorm1d):
    """BatchNorm1d without affine parameters over the head's input features: batch statistics in
    training (which also update the running ones), the running statistics in eval."""

    def __init__(self, features: int) -> None:
        super().__init__(features, eps=HEAD_NORM_EPS, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            # A last training batch of one image has no batch variance (BatchNorm1d raises): that
            # image is normalised with the running statistics, which it leaves as they are.
            return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(x)

    def before(self, module: torch.nn.Module, args: tuple) -> tuple:
        """The head Linear's forward pre-hook."""
        return (self(args[0]), *args[1:])


def head_linear(model: torch.nn.Module, *, head: str) -> torch.nn.Linear:
    linear = model.get_submodule(head)
    if not isinstance(linear, torch.nn.Linear):
        raise ConfigError(
            f"model.head_init / model.head_norm need a Linear head, but model.head={head!r} is a "
            f"{type(linear).__name__}: use model.head_init=transformers model.head_norm=false on this backbone"
        )
    return linear


def init_head(linear: torch.nn.Linear, *, how: str) -> None:
    """Start the head's Linear as `how` says (model.head_init; transformers: leave it as built)."""
    with torch.no_grad():
        if how == "vpt":
            torch.nn.init.kaiming_normal_(linear.weight, a=0, mode="fan_out")
            torch.nn.init.constant_(linear.bias, VPT_HEAD_BIAS)
        elif how == "trunc_normal":
            torch.nn.init.trunc_normal_(linear.weight, std=TRUNC_NORMAL_STD)
            torch.nn.init.zeros_(linear.bias)


def attach_head_norm(linear: torch.nn.Linear) -> HeadNorm:
    linear.norm = HeadNorm(linear.in_features)
    linear.register_forward_pre_hook(linear.norm.before)
    return linear.norm


def shape_head(model: torch.nn.Module, *, head: str, head_init: str, head_norm: bool) -> torch.nn.Module:
    """A new base's head, started and shaped as the model keys say."""
    if head_init == "transformers" and not head_norm:
        return model
    linear = head_linear(model, head=head)
    init_head(linear, how=head_init)
    if head_norm:
        attach_head_norm(linear)
    return model


def with_head_norm(load: Callable[[Any], torch.nn.Module], *, source: str | Path, head: str) -> Callable:
    """A base loader (methods/base.py BaseLoader) whose bases get the head norm back: its statistics
    from the loaded checkpoint when it holds them (a whole saved model), else fresh, for the method
    to load its saved ones onto."""
    from peft_food.model.weights import read_tensors

    prefix = f"{head}.norm."

    def loader(saved_head: dict[str, torch.Tensor]) -> torch.nn.Module:
        quiet = OnlyTheseUnexpected(prefix)
        transformers_log = logging.getLogger("transformers.modeling_utils")
        transformers_log.addFilter(quiet)
        try:
            model = load(saved_head)
        finally:
            transformers_log.removeFilter(quiet)
        norm = attach_head_norm(head_linear(model, head=head))
        weights = Path(source) / "model.safetensors"
        if weights.is_file():
            stats = read_tensors(weights, keep=lambda key: key.startswith(prefix))
            if stats:
                norm.load_state_dict({k.removeprefix(prefix): v for k, v in stats.items()})
        return model

    return loader


class OnlyTheseUnexpected(logging.Filter):
    """Drops transformers' load report when all it lists are the head norm's statistics (a whole
    saved model holds them; the architecture has no place for them until the norm is attached)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        keys = [line.split("|")[0].strip() for line in message.splitlines()[1:] if "|" in line]
        keys = [key for key in keys if key and key != "Key" and not key.startswith("-")]
        return not (keys and all(key.startswith(self.prefix) for key in keys))


def fold_head_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every head norm into the Linear it feeds (eval statistics: W' = W / s, b' = b - W' m with
    s = sqrt(var + eps)), then remove it and its hook: the plain architecture, with new weights."""
    for linear in list(model.modules()):
        norm = getattr(linear, "norm", None)
        if not isinstance(norm, HeadNorm):
            continue
        inverse = torch.rsqrt(norm.running_var + norm.eps)
        with torch.no_grad():
            linear.weight.mul_(inverse.to(linear.weight.dtype))
            linear.bias.sub_(linear.weight @ norm.running_mean.to(linear.weight.dtype))
        for key, hook in list(linear._forward_pre_hooks.items()):
            if getattr(hook, "__self__", None) is norm:
                del linear._forward_pre_hooks[key]
        del linear.norm
    return model
