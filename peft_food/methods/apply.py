"""The one place a method meets a backbone: full vs LoRA vs the rest is decided by the method's
spec here (`apply_peft`), and checked on a skeleton before any data is read (`check_targets`).

    peft-food-train peft=lora peft.r=8     # LoRA on attention query/value + trained head
    peft-food-train peft=full              # every parameter trains
"""

from __future__ import annotations

import torch
from transformers import AutoModelForImageClassification

from peft_food.errors import ConfigError, first_line
from peft_food.methods.base import PeftSpec, peft_wrapping
from peft_food.model.backbone import base_config, head_module, target_resolver
from peft_food.model.spec import ModelSpec


def check_targets(model: ModelSpec, *, peft: PeftSpec) -> None:
    """Fail on unknown targets or head, or a method that cannot fit this backbone, before any data
    is read: the method prepares a skeleton on the meta device, which allocates nothing."""
    with torch.device("meta"):
        skeleton = AutoModelForImageClassification.from_config(base_config(model, labels=["a", "b"]))
        try:
            apply_peft(skeleton, peft=peft, model=model)
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:  # e.g. OFT's block size not dividing a layer's width
            raise ConfigError(f"peft={peft.method} does not fit model={model.name}: {first_line(err)}") from None


def apply_peft(base: torch.nn.Module, *, peft: PeftSpec, model: ModelSpec) -> torch.nn.Module:
    """The one place a method meets a backbone: the method's spec prepares it (full: as is; a
    linear probe or BitFit: a frozen base with some of its own parameters trainable; the others:
    peft's adapter with the head trainable and saved beside it)."""
    head_module(base, head=model.head)  # a wrong model.head fails here, naming the real modules
    with peft_wrapping():
        return peft.prepare(base, resolve=target_resolver(base, model=model), head=model.head)
