"""The modules VPT, SSF, AdaptFormer and the bottleneck adapters add to a transformers model, and
how each is attached: as a child module of the layer it changes (so its parameters are saved and
reloaded by name) run by forward hooks that are its own bound methods (so a deep copy of the model
stays wired). The model's code and its own parameter names are untouched.

    peft-food-train peft=ssf        # methods/added/ssf.py, vpt.py, bottleneck.py: the specs

Imported only when a method prepares a model (the specs stay torch-free for the command line).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from peft_food.errors import UserError
from peft_food.methods.added.layout import (
    blocks,
    hidden_of,
    mlp_norm,
    output_with,
)
from peft_food.model.modules import in_head
from peft_food.model.tokens import token_sequence

# The layers SSF follows: every Linear and LayerNorm, and the patch embedding's convolution.
SSF_HOSTS = (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Conv2d)
# peft.init of SSF -> the std of the normal draws around scale 1 and shift 0 (identity: none, exactly
# 1 and 0; paper: dongzelian/SSF models/vision_transformer.py init_ssf_scale_shift, N(1, .02), N(0, .02)).
SSF_INITS = {"identity": 0.0, "paper": 0.02}


class ScaleShift(torch.nn.Module):
    """y = x * scale + shift over the channels of its host's output (last dim; dim 1 for a conv)."""

    def __init__(self, channels: int, *, conv: bool, std: float = 0.0) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(channels))
        self.shift = torch.nn.Parameter(torch.zeros(channels))
        if std > 0:  # the paper's draws: the model starts near, not at, the base
            torch.nn.init.normal_(self.scale, mean=1.0, std=std)
            torch.nn.init.normal_(self.shift, mean=0.0, std=std)
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale.to(x.dtype), self.shift.to(x.dtype)
        if self.conv:
            return x * scale[:, None, None] + shift[:, None, None]
        return x * scale + shift

    def after(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        """The host's forward hook."""
        return self(output)


def attach_ssf(model: torch.nn.Module, *, head: str, init: str = "identity") -> None:
    """A ScaleShift (`<layer>.ssf`) after every Linear, LayerNorm and Conv2d outside the head,
    started as `init` says (SSF_INITS)."""
    hosts = [
        module
        for name, module in model.named_modules()
        if isinstance(module, SSF_HOSTS) and not in_head(name, head=head)
    ]
    for host in hosts:
        conv = isinstance(host, torch.nn.Conv2d)
        channels = host.out_channels if conv else getattr(host, "out_features", None) or host.normalized_shape[-1]
        host.ssf = ScaleShift(channels, conv=conv, std=SSF_INITS[init])
        host.register_forward_hook(host.ssf.after)


def fold_ssf(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every ScaleShift into the weight and bias it follows (W' = diag(s) W, b' = s b + t),
    then remove it and its hook: the plain architecture, with new weights."""
    for name, host in list(model.named_modules()):
        ssf = getattr(host, "ssf", None)
        if not isinstance(ssf, ScaleShift):
            continue
        if host.bias is None:
            raise UserError(
                f"peft=ssf cannot be exported: {name} has no bias to take the shift into; predict "
                f"with `peft-food-predict <run dir> photo.jpg` instead"
            )
        scale, shift = ssf.scale.detach(), ssf.shift.detach()
        with torch.no_grad():
            host.weight.mul_(scale.view((-1,) + (1,) * (host.weight.dim() - 1)))  # one scale per output
            host.bias.mul_(scale).add_(shift)
        for key, hook in list(host._forward_hooks.items()):
            if getattr(hook, "__self__", None) is ssf:
                del host._forward_hooks[key]
        del host.ssf
    return model


class Prompts(torch.nn.Module):
    """One set of prompt tokens (tokens x dim) and the hooks that put it into the sequence."""

    def __init__(self, *, tokens: int, dim: int, patch_area: int, dropout: float) -> None:
        super().__init__()
        self.prompts = torch.nn.Parameter(torch.empty(tokens, dim))
        bound = math.sqrt(6.0 / (3 * patch_area + dim))  # VPT's xavier-style uniform range
        torch.nn.init.uniform_(self.prompts, -bound, bound)
        self.dropout = torch.nn.Dropout(dropout)

    def batch(self, like: torch.Tensor) -> torch.Tensor:
        """The prompts for every image of the batch, each image with its own dropout mask (the
        authors' code drops after expanding: KMnP/vpt src/models/vit_prompt/vit.py)."""
        return self.dropout(self.prompts.to(like.dtype).expand(like.shape[0], -1, -1))

    def insert(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        """After the embeddings: [CLS], the prompts, then the rest."""
        hidden = hidden_of(output)
        return output_with(output, torch.cat([hidden[:, :1], self.batch(hidden), hidden[:, 1:]], dim=1))

    def replace(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Before a layer (deep VPT): this layer's prompts take the previous layer's places."""
        hidden = args[0] if args else kwargs["hidden_states"]
        hidden = torch.cat([hidden[:, :1], self.batch(hidden), hidden[:, 1 + len(self.prompts) :]], dim=1)
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    def strip(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        """Where the head reads the sequence: as the head expects it, prompts removed."""
        hidden = hidden_of(output)
        return output_with(output, torch.cat([hidden[:, :1], hidden[:, 1 + len(self.prompts) :]], dim=1))


def attach_prompts(model: torch.nn.Module, *, tokens: int, deep: bool, dropout: float, mlp_in: str) -> None:
    """Prompts after [CLS] at the input (`<backbone>.embeddings.vpt`; timm: `norm_pre.vpt`), removed
    where the head reads the sequence (model/tokens.py); deep: a set per later block (`<block>.vpt`)
    replacing the previous one before it runs."""
    sequence = token_sequence(model)  # or one line saying why this backbone takes no prompts

    def prompts() -> Prompts:
        return Prompts(tokens=tokens, dim=sequence.dim, patch_area=sequence.patch_area, dropout=dropout)

    embeddings = sequence.embedded
    embeddings.vpt = prompts()
    embeddings.register_forward_hook(embeddings.vpt.insert)
    sequence.read.register_forward_hook(embeddings.vpt.strip)
    if deep:
        for block in blocks(model, mlp_in=mlp_in)[1:]:
            block.vpt = prompts()
            block.register_forward_pre_hook(block.vpt.replace, with_kwargs=True)


class Bottleneck(torch.nn.Module):
    """scale * up(dropout(act(down(x)))), initialised as `init` says (init_bottleneck); its methods
    are the hooks that use it."""

    def __init__(
        self, *, dim: int, width: int, activation: str, dropout: float, scale: float, init: str = "lora_kaiming"
    ) -> None:
        super().__init__()
        self.down = torch.nn.Linear(dim, width)
        self.up = torch.nn.Linear(width, dim)
        init_bottleneck(self.down, self.up, init=init)
        self.act = getattr(torch.nn, activation)()  # a torch.nn activation's class name
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


def init_bottleneck(down: torch.nn.Linear, up: torch.nn.Linear, *, init: str) -> None:
    """A bottleneck's starting weights (peft.init, BOTTLENECK_INITS in methods/added/bottleneck.py)."""
    with torch.no_grad():
        if init in ("lora_kaiming", "lora_xavier", "houlsby"):
            for bias in (down.bias, up.bias):
                torch.nn.init.zeros_(bias)
        if init == "lora_kaiming":  # down keeps Linear's own kaiming-uniform(a=sqrt 5)
            torch.nn.init.zeros_(up.weight)  # the branch adds exactly nothing until it trains
        elif init == "lora_xavier":
            torch.nn.init.xavier_uniform_(down.weight)
            torch.nn.init.zeros_(up.weight)
        elif init == "houlsby":  # adapter-bert: truncated normal, std 1e-3, cut at 2 std (TF's)
            for linear in (down, up):
                torch.nn.init.trunc_normal_(linear.weight, std=1e-3, a=-2e-3, b=2e-3)
        elif init == "xavier":  # PETL_Vision's random adapters: not the identity at the start
            for linear in (down, up):
                torch.nn.init.xavier_uniform_(linear.weight)
                torch.nn.init.normal_(linear.bias, std=1e-6)
        else:
            raise ValueError(f"unknown bottleneck init {init!r}")


def attach_adaptformer(
    model: torch.nn.Module, *, width: int, scale: float, dropout: float, mlp_in: str, init: str = "lora_kaiming"
) -> None:
    """A Bottleneck (`<block>.adaptformer`) beside every block's MLP, on the MLP norm's input."""
    for block in blocks(model, mlp_in=mlp_in):
        norm = mlp_norm(block)
        block.adaptformer = Bottleneck(
            dim=norm.normalized_shape[-1], width=width, activation="ReLU", dropout=dropout, scale=scale, init=init
        )
        norm.register_forward_hook(block.adaptformer.branch)
        block.register_forward_hook(block.adaptformer.add)


def attach_bottleneck_adapters(
    model: torch.nn.Module,
    *,
    after: list[str],
    width: int,
    activation: str,
    dropout: float,
    head: str,
    scale: float = 1.0,
    init: str = "lora_kaiming",
) -> None:
    """A residual Bottleneck (`<layer>.adapter`) after every Linear named in `after`, outside the head."""
    hosts = [
        module
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in after and not in_head(name, head=head)
    ]
    for host in hosts:
        host.adapter = Bottleneck(
            dim=host.out_features, width=width, activation=activation, dropout=dropout, scale=scale, init=init
        )
        host.register_forward_hook(host.adapter.residual)
