"""The method axis: one typed spec per fine-tuning method, and each spec owns its method's behaviour.

    peft-food-train peft=lora peft.r=8                  # LoRA on query/value + trained head
    peft-food-train peft=lora peft.use_dora=true        # DoRA (also: peft=dora)
    peft-food-train peft=ia3                            # IA3 on key/value/mlp_out
    peft-food-train peft=bitfit                         # every bias term + the head
    peft-food-train peft=linear_probe                   # only the classifier head trains
    peft-food-train peft=vpt peft.prompts=10            # VPT (peft.deep=true: prompts at every layer)
    peft-food-train peft=ssf                            # a scale and shift after every layer
    peft-food-train peft=adaptformer peft.width=8       # a bottleneck beside every MLP
    peft-food-train peft=adapter peft.placement=pfeiffer  # bottleneck adapters (or houlsby)
    peft-food-train peft=adalora                        # LoRA whose ranks are pruned while it trains
    peft-food-train peft=lora peft.init_lora_weights=pissa  # LoRA started at each weight's top singular part
    peft-food-train peft=peft_config 'peft.config={peft_type: C3A, block_size: 64}'  # any other peft tuner
    peft-food-train -m peft=lora,dora,loha peft.r=4,16  # methods x ranks in one sweep

Each spec holds only the keys its method understands (Hydra rejects the rest, e.g. `peft=ia3
peft.r=4`) and checks their values in `__post_init__`. It also says how the method prepares a
base (`prepare`), what it saves (`save`), how it is read back (`load`) and how it folds into a
plain model (`merge`); the rest of the package asks the spec and never branches on a method name.
Three families share that behaviour, one folder each:

- `own_weights/`: the base's own parameters train, nothing is added. `FullSpec` (full): every
  parameter trains; the whole model is saved. `PartialSpec` (linear_probe, bitfit): a chosen subset
  trains; those tensors alone are saved (`trained.safetensors`, `trained.py`) and put back onto the
  base on reload.
- `peft_tuners/`: `TunerSpec`, peft's own tuners, one module each (lora and dora, loha, lokr, ia3, vera,
  oft, boft, ln_tuning, fourierft, hra, adalora; any other peft tuner as data, `peft=peft_config`),
  with the classifier head trainable and saved beside it (modules_to_save). A method may add Trainer
  callbacks (`callbacks`): AdaLoRA's rank budget is updated after every optimizer step.
- `added/`: `AddedSpec` (vpt, ssf, adaptformer, adapter): modules of the method's own (`hooks.py`)
  attached to transformers' model and run by forward hooks (`layout.py` finds where); they and the
  head are saved (`trained.safetensors`, the same `trained.py`) and attached again on reload.

`target_modules` names module *roles* (query, key, value, attn_out, mlp_in, mlp_out) that each
backbone's `model.modules` maps to its own Linear names, so one method config works on ViT,
DeiT, DINOv2 and Swin alike. A new method is one class with `@register` (methods/base.py) in a
module of its family's folder, that module imported below, and one file in peft_food/conf/peft/.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

# Importing each method's module fills METHODS (each class registers itself).
from peft_food.methods.added import bottleneck, ssf, vpt  # noqa: F401
from peft_food.methods.base import METHODS, BaseLoader, MethodSpec
from peft_food.methods.own_weights import full, partial  # noqa: F401
from peft_food.methods.peft_tuners import (  # noqa: F401
    adalora,
    boft,
    fourierft,
    hra,
    ia3,
    ln_tuning,
    loha,
    lokr,
    lora,
    oft,
    peft_config,
    vera,
)
from peft_food.methods.peft_tuners.lora import LoraSpec

__all__ = ["METHODS", "BaseLoader", "MethodSpec", "method_keys", "spec_of"]


def method_keys(method: str) -> list[str]:
    """The keys `peft=<method>` understands (for error messages)."""
    return [f.name for f in fields(METHODS[method]) if f.name not in ("method", "recommended_lr")]


def spec_of(saved: dict[str, Any]) -> MethodSpec:
    """The spec a model dir was saved with: its `peft` settings (format 2), or only the method's
    label (format 1, before specs were saved: `dora`, `rslora`, ... were LoRA's flags)."""
    if "peft" in saved:
        settings = dict(saved["peft"])
        return METHODS[settings["method"]](**settings)
    label = saved["method"]
    if label in METHODS:
        return METHODS[label]()
    return LoraSpec(use_dora=label.endswith("dora"), use_rslora=label.startswith("rs"))
