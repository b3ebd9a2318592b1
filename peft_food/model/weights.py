"""Tensors on disk, for the methods' save and reload: safetensors only (no pickle), a head that is
checked tensor for tensor after loading, and adapters saved under transformers < 5.9's ViT names.

A reload that silently kept a fresh head would predict at chance (peft #310, #577, #876, #1070),
so every method's reload ends in `check_loaded`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification

from peft_food.errors import UserError, first_line
from peft_food.model.modules import OLD_TO_NEW, new_path
from peft_food.model.trust import require_trust

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def label_maps(labels: list[str]) -> dict[str, dict]:
    """id2label / label2id for a model config, from the label names in class-index order."""
    return {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


def load_model(source: str | Path, *, labels: list[str], trust_remote_code: bool = False) -> torch.nn.Module:
    """A saved or Hub image classifier with a `len(labels)`-way head, from safetensors only (no
    pickle), running code of its own only with `trust_remote_code` (the person's choice, passed
    explicitly: transformers would otherwise prompt on a terminal)."""
    try:
        return AutoModelForImageClassification.from_pretrained(
            str(source),
            **label_maps(labels),
            ignore_mismatched_sizes=True,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as err:
        if not trust_remote_code and "trust_remote_code" in str(err):  # a Hub base whose config names its code
            require_trust(f"the base model {str(source)!r} runs code of its own to load", trusted=False)
        raise UserError(
            f"could not load the base model {str(source)!r}: {first_line(err)}; offline, pass the base "
            f"as a local dir (peft-food-predict --base DIR) or have it in the Hugging Face cache"
        ) from None


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def read_tensors(path: Path, *, keep: Callable[[str], bool] = lambda key: True) -> dict[str, torch.Tensor]:
    """The file's tensors whose key `keep` accepts (reading only those)."""
    if not path.is_file():
        raise UserError(
            f"{path} is missing: the trained weights were not saved or were removed; re-run "
            f"training or restore the file"
        )
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if keep(k)}


def head_tensors(path: Path, *, head: str) -> dict[str, torch.Tensor]:
    """An adapter file's copy of the trained head: peft saves it as `...<head>.<param>` (weight,
    bias), beside whatever its tuner adds under the head's name (`<head>.lora_A.weight`, ...)."""
    return read_tensors(path, keep=lambda k: k.rsplit(".", 2)[-2] == head.rsplit(".", 1)[-1] and f".{head}." in k)


def check_loaded(model: torch.nn.Module, saved: dict[str, torch.Tensor], *, prefix: str = "") -> None:
    """Every saved tensor is what the model now holds (`prefix` + key names the parameter, or a
    buffer: a head norm's statistics)."""
    params = {**dict(model.named_buffers()), **dict(model.named_parameters())}
    for key, tensor in saved.items():
        name = prefix + key
        if name not in params or not torch.equal(params[name].detach().cpu(), tensor):
            raise UserError(
                f"the trained weights did not load ({key}); refusing to predict with a randomly "
                f"initialised head or layer"
            )


def active_head(model: torch.nn.Module, *, head: str) -> torch.nn.Module:
    """The head that predicts in a PeftModel: peft's trained copy (modules_to_save), not the original."""
    wrapper = model.get_submodule(f"base_model.model.{head}")
    copies = getattr(wrapper, "modules_to_save", None)  # peft's ModulesToSaveWrapper
    return copies["default"] if copies is not None and "default" in copies else wrapper


def renamed_adapter(model_dir: Path, base: torch.nn.Module, scratch: Path) -> Path:
    """`model_dir`, or a copy in `scratch` with old ViT module names mapped onto the base's new ones."""
    config = json.loads((model_dir / "adapter_config.json").read_text())
    has_new = any(name.endswith(".q_proj") for name, _ in base.named_modules())
    targets = config.get("target_modules") or []
    if not has_new or not any(t in OLD_TO_NEW for t in targets):
        return model_dir
    tensors = {new_path(k): v for k, v in load_file(str(model_dir / ADAPTER_WEIGHTS)).items()}
    config["target_modules"] = [OLD_TO_NEW.get(t, t) for t in targets]
    scratch.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(scratch / ADAPTER_WEIGHTS))
    (scratch / "adapter_config.json").write_text(json.dumps(config))
    return scratch
