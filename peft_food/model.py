"""Model stage: the backbone with a fresh head for the dataset's labels, its image processor, and
the one place where full fine-tuning and LoRA part ways (`apply_peft`).

    peft-food-train peft=lora peft.r=8     # LoRA on attention query/value + trained head
    peft-food-train peft=full              # every parameter trains
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PretrainedConfig,
)

from peft_food.config import FullSpec, LoraSpec, ModelSpec
from peft_food.errors import ConfigError, UserError

log = logging.getLogger(__name__)

# transformers >= 5.9 renamed ViT's attention projections (query -> q_proj, ...). Configs say
# either name; whichever the installed version has is used.
MODULE_ALIASES = {
    "query": "q_proj", "key": "k_proj", "value": "v_proj",
    "q_proj": "query", "k_proj": "key", "v_proj": "value",
}


def base_config(model: ModelSpec, *, labels: list[str] | None = None) -> PretrainedConfig:
    """The backbone's config: the checkpoint's (a small JSON from the Hub) or the shipped `arch`."""
    if model.pretrained:
        try:
            config = AutoConfig.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
        except OSError as err:
            raise UserError(
                f"could not load model {model.name_or_path!r} ({str(err).splitlines()[0]}); offline, pass "
                f"model.name_or_path=<local checkpoint dir> or model.pretrained=false"
            ) from None
    else:
        arch = dict(model.arch)
        config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    if labels is not None:
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    return config


def check_targets(model: ModelSpec, *, peft: LoraSpec | FullSpec) -> None:
    """Fail on unknown LoRA targets before any data is read: the layout is built on the meta
    device, which allocates nothing."""
    if isinstance(peft, LoraSpec):
        with torch.device("meta"):
            skeleton = AutoModelForImageClassification.from_config(base_config(model))
        resolve_target_modules(skeleton, requested=peft.target_modules, head=model.head)


def load_processor(model: ModelSpec) -> Any:
    """The image processor that feeds the backbone: the checkpoint's, or the shipped kwargs."""
    if not model.pretrained:
        kwargs = dict(model.processor)
        return getattr(transformers, kwargs.pop("image_processor_type"))(**kwargs)
    try:
        return AutoImageProcessor.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
    except OSError as err:
        raise UserError(f"could not load the image processor of {model.name_or_path!r} "
                        f"({str(err).splitlines()[0]})") from None


def load_base(*, model: ModelSpec, labels: list[str]) -> tuple[torch.nn.Module, Any]:
    """The backbone with a new `len(labels)`-way head, and the image processor that feeds it."""
    config = base_config(model, labels=labels)
    if not model.pretrained:
        log.warning(
            "model.pretrained=false: building %s from its config with RANDOM weights (not pretrained)",
            model.name_or_path or model.arch["model_type"],
        )
        base = AutoModelForImageClassification.from_config(config, attn_implementation=model.attn_implementation)
        return base, load_processor(model)
    # The in21k checkpoint has no classifier; ignore_mismatched_sizes also lets a fine-tuned
    # checkpoint get a head of another size. Safetensors only: no pickle from the Hub.
    try:
        base = AutoModelForImageClassification.from_pretrained(
            model.name_or_path, config=config, ignore_mismatched_sizes=True, use_safetensors=True,
            trust_remote_code=model.trust_remote_code, attn_implementation=model.attn_implementation,
        )
    except OSError as err:
        raise UserError(f"could not load the weights of {model.name_or_path!r} ({str(err).splitlines()[0]}); "
                        f"only .safetensors checkpoints are loaded") from None
    return base, load_processor(model)


def linear_module_names(model: torch.nn.Module, *, exclude: str) -> list[str]:
    """Short names (last path component) of the Linear layers LoRA could target."""
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.startswith(exclude) and f".{exclude}" not in name
    }
    return sorted(names)


def resolve_target_modules(model: torch.nn.Module, *, requested: list[str], head: str) -> list[str]:
    """Map configured names onto this transformers version's module names, or fail listing them."""
    available = linear_module_names(model, exclude=head)
    resolved = []
    for name in requested:
        if name in available:
            resolved.append(name)
        elif MODULE_ALIASES.get(name) in available:
            resolved.append(MODULE_ALIASES[name])
        else:
            raise ConfigError(
                f"peft.target_modules: no Linear module named {name!r} in this model; "
                f"choose from {', '.join(available)}"
            )
    return resolved


def apply_peft(base: torch.nn.Module, *, peft: LoraSpec | FullSpec, head: str) -> torch.nn.Module:
    """Full fine-tuning returns the model as is; LoRA wraps it, keeping the head trainable."""
    if isinstance(peft, FullSpec):
        for param in base.parameters():
            param.requires_grad_(True)
        return base
    lora = LoraConfig(
        r=peft.r,
        lora_alpha=peft.alpha,
        lora_dropout=peft.dropout,
        bias=peft.bias,
        target_modules=resolve_target_modules(base, requested=peft.target_modules, head=head),
        # Without this the new head stays frozen at its random init and is not saved
        # (peft #310, #577, #876, #1070).
        modules_to_save=[head],
    )
    return get_peft_model(base, lora)


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
