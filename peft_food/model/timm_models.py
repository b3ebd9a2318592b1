"""timm models through transformers' TimmWrapperForImageClassification (the optional `timm` extra):
the architecture an offline build creates, the image processor the package can read, and the
gradient-checkpointing input hook the wrapper lacks.

    peft-food-train model=timm model.name_or_path=timm/vit_small_patch16_224.augreg_in21k
    peft-food-train model=timm model.name_or_path=timm/vit_small_patch16_224.augreg_in21k model.pretrained=false

The wrapper builds `timm.create_model(architecture, pretrained=False, **model_args)` and loads the
checkpoint's safetensors itself, so a random-init build needs no Hub: with `model.arch.architecture`
null, the architecture is the Hub id's name without `timm/` and its pretrained tag.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from peft_food.errors import ConfigError

# The wrapper's model_type (transformers' AutoConfig name for it).
TIMM = "timm_wrapper"


def require_timm(model_type: str) -> None:
    """A timm model needs timm (an optional extra): one line saying how to install it."""
    if model_type != TIMM:
        return
    try:
        import timm  # noqa: F401
    except ImportError:
        raise ConfigError("model=timm and its named files need timm: pip install 'peft-food[timm]'") from None


def offline_arch(arch: dict[str, Any], *, name_or_path: str | None) -> dict[str, Any]:
    """`arch` with the timm architecture filled in from `timm/<architecture>.<tag>` when it is null."""
    if arch.get("model_type") != TIMM or arch.get("architecture"):
        return arch
    if not name_or_path:
        raise ConfigError(
            "model=timm model.pretrained=false needs the architecture: pass model.name_or_path=timm/<model> "
            "or model.arch.architecture=<timm model name> (e.g. vit_base_patch16_224)"
        )
    return {**arch, "architecture": name_or_path.removeprefix("timm/").split(".", 1)[0]}


def processor_from_timm(data_config: dict[str, Any]) -> Any:
    """timm's eval transform (resize the shorter side to size / crop_pct, centre-crop, normalise) as a
    transformers image processor. TimmWrapperImageProcessor keeps timm's transforms but no size or
    statistics, and saves nothing (its save_pretrained is disabled), so a run could not reload it."""
    from transformers import BitImageProcessor

    _, height, width = data_config["input_size"]
    resize = math.floor(height / data_config.get("crop_pct", 1.0))  # as timm's transforms_factory
    return BitImageProcessor(
        size={"shortest_edge": resize},
        do_center_crop=True,
        crop_size={"height": height, "width": width},
        image_mean=list(data_config["mean"]),
        image_std=list(data_config["std"]),
    )


def timm_processor(name_or_path: str | None) -> Any:
    """Offline, with no model.processor: timm's own pretrained_cfg for `timm/<architecture>.<tag>`
    (installed with timm: input size, crop_pct, mean, std)."""
    import timm
    from timm.data import resolve_data_config

    name = (name_or_path or "").removeprefix("timm/")
    pretrained_cfg = timm.models.get_pretrained_cfg(name) if name else None
    if pretrained_cfg is None:
        raise ConfigError(
            f"model.processor is empty and timm knows no pretrained config {name!r}: pass "
            f"model.name_or_path=timm/<architecture>.<tag> or the image processor's settings as model.processor"
        )
    return processor_from_timm(resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict(), verbose=False))


def is_timm(model: torch.nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == TIMM


def _pixels_require_grad(module: torch.nn.Module, args: tuple) -> tuple | None:
    """The timm model's forward pre-hook: while it checkpoints, its input requires grad. A
    reentrant checkpoint (timm's with TIMM_REENTRANT_CKPT=1) passes gradients only to blocks whose
    input requires grad; behind a frozen patch embedding none does, and adapters inside the blocks
    would get none. transformers does this for text models on their input embeddings
    (enable_input_require_grads), which the wrapper does not expose."""
    pixels = args[0]
    if not (getattr(module, "grad_checkpointing", False) and torch.is_grad_enabled()) or pixels.requires_grad:
        return None
    return (pixels.detach().requires_grad_(True), *args[1:])


def checkpoint_inputs(model: torch.nn.Module) -> None:
    """Have a timm model's input require grad while gradient checkpointing is on (a no-op otherwise)."""
    if is_timm(model):
        model.timm_model.register_forward_pre_hook(_pixels_require_grad)
