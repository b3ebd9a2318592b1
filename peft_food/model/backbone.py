"""Model stage: the backbone with a fresh head for the dataset's labels, its image processor, and
the module names a method's target roles resolve to (methods/apply.py is where a method meets it).

    peft-food-train model=dinov2_small      # a Hub checkpoint
    peft-food-train model=vit_tiny          # a toy built from its config, random weights
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PretrainedConfig,
)

from peft_food.errors import ConfigError, UserError, first_line
from peft_food.model.head import shape_head
from peft_food.model.modules import in_head, other_name
from peft_food.model.spec import ModelSpec
from peft_food.model.timm_models import (
    checkpoint_inputs,
    offline_arch,
    processor_from_timm,
    require_timm,
    timm_processor,
)
from peft_food.model.weights import label_maps

log = logging.getLogger(__name__)

# What every Hub model error says to do without a connection (the CLIs go offline at once then: cli/hub.py).
# Not model.pretrained=false alone: the default data (Food-101) is on the Hub too, so that run fails
# next on the dataset; the real-photo command needs neither.
OFFLINE_FIX = (
    "offline, train on local photos with experiment=food101_mini data.root=<a folder in Food-101's layout> "
    "(or experiment=quickstart, generated images), or pass model.name_or_path=<local checkpoint dir>"
)


def base_config(model: ModelSpec, *, labels: list[str] | None = None) -> PretrainedConfig:
    """The backbone's config: the checkpoint's (a small JSON from the Hub) or the shipped `arch`."""
    if model.pretrained:
        try:
            config = AutoConfig.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
        except (OSError, ValueError) as err:  # ValueError: a directory whose config.json names no model type
            if Path(model.name_or_path).is_dir():
                raise UserError(
                    f"model.name_or_path={model.name_or_path} is not a transformers checkpoint "
                    f"({first_line(err)}): point it at the folder holding config.json and "
                    f"model.safetensors"
                ) from None
            raise UserError(f"could not load model {model.name_or_path!r} ({first_line(err)}); {OFFLINE_FIX}") from None
    else:
        arch = offline_arch(dict(model.arch), name_or_path=model.name_or_path)
        config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    require_timm(config.model_type)
    override(config, model.config_overrides)
    if "architectures" in model.arch:
        # Picks the class among several for one model type (DeiT: not the loss-less ...WithTeacher).
        config.architectures = list(model.arch["architectures"])
    if labels is not None:
        for key, value in label_maps(labels).items():
            setattr(config, key, value)
    return config


def override(config: PretrainedConfig, values: dict[str, Any]) -> None:
    """Set model.config_overrides on a config; a dict value goes into the sub-config of that name."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(getattr(config, key, None), PretrainedConfig):
            override(getattr(config, key), value)
        else:
            setattr(config, key, value)


def load_processor(model: ModelSpec) -> Any:
    """The image processor that feeds the backbone: the checkpoint's, or the shipped kwargs."""
    if not model.pretrained:
        return processor_from(model.processor) if model.processor else timm_processor(model.name_or_path)
    try:
        processor = AutoImageProcessor.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
        data_config = getattr(processor, "data_config", None)  # timm's: TimmWrapperImageProcessor
        return processor if data_config is None else processor_from_timm(data_config)
    except (OSError, ValueError) as err:
        if not Path(model.name_or_path).is_dir():
            raise UserError(
                f"could not load the image processor of {model.name_or_path!r} ({first_line(err)}); {OFFLINE_FIX}"
            ) from None
        # A local checkpoint saved without its processor (e.g. model.save_pretrained alone).
        if model.processor:
            log.warning(
                "%s has no image processor config (preprocessor_config.json): using model.processor (%s)",
                model.name_or_path,
                model.processor.get("image_processor_type"),
            )
            return processor_from(model.processor)
        raise UserError(
            f"{model.name_or_path} has no image processor config (preprocessor_config.json): save the "
            f"checkpoint's processor there, or give its settings as model.processor (e.g. "
            f"model=vit_base model.name_or_path=... supplies ViT-B/16's)"
        ) from None


def processor_from(kwargs: dict[str, Any]) -> Any:
    """An image processor from model.processor's kwargs (image_processor_type first)."""
    kwargs = dict(kwargs)
    return getattr(transformers, kwargs.pop("image_processor_type"))(**kwargs)


def load_base(*, model: ModelSpec, labels: list[str]) -> tuple[torch.nn.Module, Any]:
    """The backbone with a new `len(labels)`-way head, started and shaped as model.head_init and
    model.head_norm say (model/head.py), and the image processor that feeds it."""
    base, processor = _load_base(model=model, labels=labels)
    return shape_head(base, head=model.head, head_init=model.head_init, head_norm=model.head_norm), processor


def _load_base(*, model: ModelSpec, labels: list[str]) -> tuple[torch.nn.Module, Any]:
    config = base_config(model, labels=labels)
    if not model.pretrained:
        log.warning(
            "model.pretrained=false: building %s from its config with RANDOM weights (not pretrained)",
            model.name_or_path or model.arch["model_type"],
        )
        base = AutoModelForImageClassification.from_config(config, attn_implementation=model.attn_implementation)
        checkpoint_inputs(base)
        return base, load_processor(model)
    # The in21k checkpoint has no classifier; ignore_mismatched_sizes also lets a fine-tuned
    # checkpoint get a head of another size. Safetensors only: no pickle from the Hub.
    try:
        base = AutoModelForImageClassification.from_pretrained(
            model.name_or_path,
            config=config,
            ignore_mismatched_sizes=True,
            use_safetensors=True,
            trust_remote_code=model.trust_remote_code,
            attn_implementation=model.attn_implementation,
        )
    except OSError as err:
        raise UserError(
            f"could not load the weights of {model.name_or_path!r} ({first_line(err)}); "
            f"only .safetensors checkpoints are loaded; {OFFLINE_FIX}"
        ) from None
    checkpoint_inputs(base)
    return base, load_processor(model)


def module_names(model: torch.nn.Module, *, kind: type[torch.nn.Module], head: str) -> list[str]:
    """Short names (last path component) of the `kind` modules outside the head: the Linear layers a
    method can target, or the LayerNorms LN tuning trains (found by type: every shipped backbone uses
    torch's own LayerNorm, whatever it names them)."""
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, kind) and not in_head(name, head=head)
        }
    )


def head_module(model: torch.nn.Module, *, head: str) -> torch.nn.Module:
    try:
        return model.get_submodule(head)
    except AttributeError:
        children = ", ".join(name for name, _ in model.named_children())
        raise ConfigError(
            f"model.head={head!r} is not a module of this model; its top-level modules are {children}"
        ) from None


def resolve_target_modules(
    model: torch.nn.Module, *, requested: list[str], head: str, roles: dict[str, str] | None = None
) -> list[str]:
    """Map roles (query, value, mlp_out, ...) and raw names onto this model's Linear module names,
    or fail listing what there is."""
    roles = roles or {}
    available = module_names(model, kind=torch.nn.Linear, head=head)
    resolved = []
    for name in requested:
        candidates = [roles.get(name), name, other_name(roles.get(name, name))]
        found = next((c for c in candidates if c in available), None)
        if found is None:
            known = sorted(role for role, module in roles.items() if module in available)
            raise ConfigError(
                f"peft.target_modules: {name!r} is neither a module role of this model ({', '.join(known)}) "
                f"nor one of its Linear modules ({', '.join(available)})"
            )
        resolved.append(found)
    return resolved


def target_resolver(base: torch.nn.Module, *, model: ModelSpec) -> Callable[[list[str]], list[str]]:
    """What a method spec calls to turn its target roles into this backbone's module names."""
    return lambda requested: resolve_target_modules(base, requested=requested, head=model.head, roles=model.modules)


def count_parameters(model: torch.nn.Module) -> dict[str, Any]:
    """Trainable and total parameters, counted as peft's print_trainable_parameters does.

    For LoRA the total includes the adapter and the saved copy of the head, so ViT-B/16 with
    101 labels and r=16 on q/v gives 667,493 of 86,543,818 (0.7713%), as the seed tutorial prints.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4),
    }
