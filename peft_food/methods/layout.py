"""Where the added-module methods hook into a transformers ViT-style model: its transformer blocks
and each block's norm before the MLP (the token sequence VPT changes: model/tokens.py). Found on the
model itself (transformers >= 5.9: `vit.layers.N`, `deit.layers.N`, `dinov2.encoder.layer.N`,
`swin.encoder.layers.S.blocks.N`, `vision_model.encoder.layers.N`, timm's `timm_model.blocks.N`),
never by copying its forward.

    peft-food-train peft=adaptformer model=dinov2_small    # blocks(): dinov2.encoder.layer.N, mlp_norm(): norm2
"""

from __future__ import annotations

import torch

from peft_food.errors import ConfigError

# Name of the LayerNorm in front of each block's MLP: ViT, DeiT, Swin and BEiT say layernorm_after,
# DINOv2 and timm's ViTs norm2, CLIP and SigLIP layer_norm2.
MLP_NORMS = ("layernorm_after", "norm2", "layer_norm2")
# What holds a backbone's blocks: transformers' ModuleList, timm's VisionTransformer's Sequential.
BLOCK_LISTS = (torch.nn.ModuleList, torch.nn.Sequential)


def blocks(model: torch.nn.Module, *, mlp_in: str) -> list[torch.nn.Module]:
    """The transformer blocks in order: the items of a ModuleList (or timm's Sequential) that hold the
    MLP's input Linear (`mlp_in`, resolved from the mlp_in role) and no such list of their own (Swin's
    stages do)."""
    found = [
        item
        for module in model.modules()
        if isinstance(module, BLOCK_LISTS)
        for item in module
        if any(name.rsplit(".", 1)[-1] == mlp_in for name, _ in item.named_modules())
        and not any(isinstance(inner, BLOCK_LISTS) for inner in item.modules())
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


def output_with(output: object, hidden: torch.Tensor) -> object:
    """A module's output with its hidden states replaced (some blocks return (hidden, weights))."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def hidden_of(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output
