"""Where a backbone's token sequence can be reached from outside its code, for a method that changes
the sequence (VPT): the module whose output is the embedded sequence, [CLS] first, and the module
whose output is the sequence the head pools, after the last block and the final norm where there is
one. Which token or pooling each head then reads is in docs/backbones.md.

    peft-food-train model=clip_b16 peft=vpt      # prompts after CLIP's [CLS], out before its patch mean

A backbone without a [CLS] token to put prompts after, or whose attention places every token by
its grid position, is refused in one line that says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from peft_food.errors import ConfigError
from peft_food.model.timm_models import TIMM

# model_type -> why no tokens can be inserted into its sequence.
NO_PROMPTS = {
    "siglip": "SigLIP has no [CLS] token for prompts to follow (SiglipForImageClassification averages every token)",
    "beit": "BEiT's relative position bias is sized for [CLS] + the patch grid, so an inserted token has none",
    "swin": "Swin attends within windows of the patch grid and has no global token sequence to prompt",
}


@dataclass(frozen=True)
class TokenSequence:
    # Output: [CLS], then the other tokens (a tensor, or a tuple whose first item is one).
    embedded: torch.nn.Module
    # Output: the whole sequence the head pools or reads a token of.
    read: torch.nn.Module
    # Token width and patch area (pixels per patch, per channel).
    dim: int
    patch_area: int


def area(patch: int | tuple | list) -> int:
    return patch * patch if isinstance(patch, int) else math.prod(patch)


def refuse(kind: str, reason: str) -> ConfigError:
    return ConfigError(
        f"peft=vpt supports ViT, DeiT, DINOv2 backbones and CLIP's and timm's ViTs (prompts after [CLS]), "
        f"not {kind}: {reason}; choose another method (e.g. peft=lora) for it"
    )


def token_sequence(model: torch.nn.Module) -> TokenSequence:
    """The embedded and read points of `model`'s sequence, or a ConfigError saying why it has none."""
    config = model.config
    kind = config.model_type
    if kind in ("vit", "deit", "dinov2"):
        backbone = model.base_model
        [norm] = [m for _, m in backbone.named_children() if isinstance(m, torch.nn.LayerNorm)]
        return TokenSequence(backbone.embeddings, norm, config.hidden_size, area(config.patch_size))
    if kind == "clip":
        # CLIPForImageClassification averages the last layer's patch tokens (post_layernorm only
        # normalises the pooled [CLS], which it does not read): out after the last layer.
        vision = model.vision_model
        return TokenSequence(
            vision.embeddings,
            vision.encoder.layers[-1],
            config.vision_config.hidden_size,
            area(config.vision_config.patch_size),
        )
    if kind == TIMM:
        return timm_sequence(model.timm_model)
    raise refuse(kind, NO_PROMPTS.get(kind, f"{type(model).__name__} is not a ViT with a [CLS] token"))


def timm_sequence(net: torch.nn.Module) -> TokenSequence:
    """timm's ViTs (VisionTransformer, Eva): the sequence leaves `norm_pre` (after the position
    embedding) with the prefix tokens first, and `norm` before forward_head pools it."""
    name = type(net).__name__
    if not all(hasattr(net, attr) for attr in ("norm_pre", "norm", "blocks", "patch_embed")):
        raise refuse(f"timm's {name}", "it is not a ViT with a token sequence")
    if getattr(net, "cls_token", None) is None:
        raise refuse(f"timm's {name}", "it has no [CLS] token for prompts to follow")
    if getattr(net, "rope", None) is not None:
        raise refuse(
            f"timm's {name}", "its rotary position embedding (RoPE) rotates every token after [CLS] by its grid place"
        )
    return TokenSequence(net.norm_pre, net.norm, net.embed_dim, area(net.patch_embed.patch_size))
