"""Where the added-module methods hook into a transformers ViT-style model: its backbone, token
embeddings, transformer blocks, final norm, and each block's norm before the MLP. Found on the
model itself (transformers >= 5.9: `vit.layers.N`, `deit.layers.N`, `dinov2.encoder.layer.N`,
`swin.encoder.layers.S.blocks.N`), never by copying its forward.

    peft-food-train peft=adaptformer model=dinov2_small    # blocks(): dinov2.encoder.layer.N, mlp_norm(): norm2
"""

from __future__ import annotations

import torch

from peft_food.errors import ConfigError

# Name of the LayerNorm in front of each block's MLP: ViT, DeiT and Swin say layernorm_after, DINOv2 norm2.
MLP_NORMS = ("layernorm_after", "norm2")


def backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The headless model under an image classifier (`model.vit`, `model.dinov2`, ...)."""
    return model.base_model


def blocks(model: torch.nn.Module, *, mlp_in: str) -> list[torch.nn.Module]:
    """The transformer blocks in order: the items of a ModuleList that hold the MLP's input Linear
    (`mlp_in`, resolved from the mlp_in role) and no ModuleList of their own (Swin's stages do)."""
    found = [
        item
        for module in model.modules()
        if isinstance(module, torch.nn.ModuleList)
        for item in module
        if any(name.rsplit(".", 1)[-1] == mlp_in for name, _ in item.named_modules())
        and not any(isinstance(inner, torch.nn.ModuleList) for inner in item.modules())
    ]
    if not found:
        raise ConfigError(f"this model has no transformer blocks with an MLP Linear named {mlp_in!r}")
    return found


def mlp_norm(block: torch.nn.Module) -> torch.nn.LayerNorm:
    """The LayerNorm in front of the block's MLP (its input is the block's residual stream)."""
    for name in MLP_NORMS:
        norm = getattr(block, name, None)
        if isinstance(norm, torch.nn.LayerNorm):
            return norm
    children = ", ".join(name for name, _ in block.named_children())
    raise ConfigError(
        f"{type(block).__name__} has no LayerNorm named {' or '.join(MLP_NORMS)} before its MLP "
        f"(its modules: {children})"
    )


def final_norm(model: torch.nn.Module) -> torch.nn.LayerNorm:
    """The LayerNorm the backbone applies to the whole sequence before the head reads it."""
    [norm] = [m for _, m in backbone(model).named_children() if isinstance(m, torch.nn.LayerNorm)]
    return norm


def output_with(output: object, hidden: torch.Tensor) -> object:
    """A module's output with its hidden states replaced (some blocks return (hidden, weights))."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def hidden_of(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output
