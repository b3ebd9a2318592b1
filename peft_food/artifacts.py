"""The saved model: what a run writes to `<run dir>/model/` and how it is read back.

    model/                        adapter methods (lora, dora,    linear_probe         full
                                  loha, lokr, ia3, vera, oft)
      peft_food.json              method, labels, base model spec (all methods)
      adapter_config.json         + adapter_model.safetensors     head.safetensors     config.json +
                                    (adapter + trained head)                           model.safetensors
      preprocessor_config.json    the checkpoint's image processor
      base/                       only for a random-init base (model.pretrained=false), not for full

Reloading an adapter run is base + adapter + the saved classifier head; a reload that silently
kept a fresh head would predict at chance (peft #310, #577, #876, #1070), so `load_trained`
checks the head it loaded against the saved tensors (a linear probe's too). Only safetensors are
read (no pickle), and no remote code runs unless the saved spec asks for it."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
from transformers.utils import logging as hf_logging

from peft_food.config import ModelSpec
from peft_food.errors import UserError

SPEC_FILE = "peft_food.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_WEIGHTS = "head.safetensors"


@dataclass
class Trained:
    model: torch.nn.Module
    processor: Any
    labels: list[str]
    method: str
    model_dir: Path


def save_base(base: torch.nn.Module, *, model_dir: Path) -> None:
    """A random-init base exists nowhere else: keep it beside the adapter so the run reloads."""
    base.save_pretrained(str(model_dir / "base"))


def save_trained(model: torch.nn.Module, processor: Any, *, model_dir: Path, method: str,
                 labels: list[str], base: ModelSpec) -> None:
    """Only what trained: the adapter and head, a linear probe's head, or (full) the whole model."""
    model_dir.mkdir(parents=True, exist_ok=True)
    if method == "linear_probe":
        head = model.get_submodule(base.head)
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                  str(model_dir / HEAD_WEIGHTS))
    else:
        model.save_pretrained(str(model_dir))
    processor.save_pretrained(str(model_dir))
    spec = {"format": 1, "method": method, "labels": labels, "base": asdict(base)}
    (model_dir / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")


def find_model_dir(path: Path) -> Path:
    """A run dir (holding model/) or a model dir itself."""
    if not path.exists():
        raise UserError(f"{path} does not exist: pass a run dir (outputs/<date>/<time>) or its model/ dir")
    for candidate in (path, path / "model"):
        if any((candidate / name).is_file() for name in (SPEC_FILE, "adapter_config.json", "config.json")):
            return candidate
    raise UserError(f"{path} holds no saved model (no model/ with {SPEC_FILE}): the run may not have finished; "
                    f"check its metrics.json status")


def _read_spec(model_dir: Path) -> dict[str, Any]:
    if (model_dir / SPEC_FILE).is_file():
        return json.loads((model_dir / SPEC_FILE).read_text())
    if (model_dir / "adapter_config.json").is_file():
        raise UserError(f"{model_dir} has an adapter but no {SPEC_FILE} naming its base model and labels")
    config = AutoConfig.from_pretrained(model_dir)
    return {"method": "full", "labels": [config.id2label[i] for i in range(config.num_labels)]}


def _load_base(source: str | Path, *, labels: list[str], trust_remote_code: bool) -> torch.nn.Module:
    try:
        return AutoModelForImageClassification.from_pretrained(
            str(source), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
            ignore_mismatched_sizes=True, use_safetensors=True, trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as err:
        raise UserError(f"could not load the base model {str(source)!r}: {str(err).splitlines()[0]}") from None


# transformers >= 5.9 renamed ViT's modules and renames old checkpoints on load
# (conversion_mapping.py, "ViTModel"); adapters saved with the old names need the same mapping.
OLD_VIT_NAMES = [
    ("encoder.layer.", "layers."),
    ("attention.attention.query", "attention.q_proj"),
    ("attention.attention.key", "attention.k_proj"),
    ("attention.attention.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
]
OLD_TARGETS = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "dense": "o_proj"}


def _renamed_adapter(model_dir: Path, base: torch.nn.Module, scratch: Path) -> Path:
    """`model_dir`, or a copy in `scratch` with old ViT module names mapped onto the base's new ones."""
    config = json.loads((model_dir / "adapter_config.json").read_text())
    has_new = any(name.endswith(".q_proj") for name, _ in base.named_modules())
    targets = config.get("target_modules") or []
    if not has_new or not any(t in OLD_TARGETS for t in targets):
        return model_dir
    from safetensors.torch import load_file

    def rename(key: str) -> str:
        for old, new in OLD_VIT_NAMES:
            key = key.replace(old, new)
        return key

    tensors = {rename(k): v for k, v in load_file(str(model_dir / ADAPTER_WEIGHTS)).items()}
    config["target_modules"] = [OLD_TARGETS.get(t, t) for t in targets]
    scratch.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(scratch / ADAPTER_WEIGHTS))
    (scratch / "adapter_config.json").write_text(json.dumps(config))
    return scratch


def _base_source(model_dir: Path, spec: dict[str, Any], *, base_override: Path | None) -> str | Path:
    """Where the frozen base comes from: --base, the run's own random-init copy, or the Hub id."""
    labels = spec["labels"]
    if base_override is not None:
        source = find_model_dir(base_override)
        if (source / SPEC_FILE).is_file():
            base_labels = json.loads((source / SPEC_FILE).read_text())["labels"]
            if len(base_labels) != len(labels):
                raise UserError(f"the model in {model_dir} was trained for {len(labels)} labels but the base "
                                f"{source} has {len(base_labels)}: use the base it was trained on")
        return source / "base" if (source / "base").is_dir() else source
    if (model_dir / "base").is_dir():
        return model_dir / "base"
    return spec["base"]["name_or_path"]


def _saved_tensors(path: Path, *, head: str | None = None) -> dict[str, torch.Tensor]:
    """The file's tensors, or with `head` only that module's (an adapter file's head copy)."""
    if not path.is_file():
        raise UserError(f"{path} is missing: the trained weights were not saved or were removed; re-run "
                        f"training or restore the file")
    with safe_open(str(path), framework="pt") as f:
        keys = [k for k in f.keys() if head is None or (f".{head}." in k and "lora_" not in k)]
        return {k: f.get_tensor(k) for k in keys}


def _check_head_size(model_dir: Path, saved_head: dict[str, torch.Tensor], labels: list[str]) -> None:
    weight = next((t for k, t in saved_head.items() if k.endswith("weight")), None)
    if weight is not None and weight.shape[0] != len(labels):
        raise UserError(f"{model_dir}: the saved head has {weight.shape[0]} outputs but {len(labels)} labels are "
                        f"recorded; the weights and {SPEC_FILE} come from different runs")


def _base_for_head(model_dir: Path, spec: dict[str, Any], saved_head: dict[str, torch.Tensor], *,
                   base_override: Path | None) -> tuple[str | Path, torch.nn.Module]:
    """The frozen base a saved head goes onto (and where it came from), once the head is known to
    fit the recorded labels."""
    _check_head_size(model_dir, saved_head, spec["labels"])
    source = _base_source(model_dir, spec, base_override=base_override)
    base = _load_base(source, labels=spec["labels"], trust_remote_code=bool(spec["base"].get("trust_remote_code", False)))
    return source, base


def _load_probe(model_dir: Path, spec: dict[str, Any], *, base_override: Path | None) -> torch.nn.Module:
    """A frozen base with the trained head put back, tensor for tensor."""
    head = spec["base"].get("head", "classifier")
    saved = _saved_tensors(model_dir / HEAD_WEIGHTS)
    source, model = _base_for_head(model_dir, spec, saved, base_override=base_override)
    try:
        model.get_submodule(head).load_state_dict(saved, strict=True)
    except RuntimeError as err:
        raise UserError(f"the head in {model_dir} does not fit the base model {str(source)!r}: "
                        f"{str(err).splitlines()[-1].strip()}") from None
    return model


def _load_adapter(model_dir: Path, spec: dict[str, Any], *, base_override: Path | None) -> torch.nn.Module:
    from peft import PeftModel

    head = spec["base"].get("head", "classifier")
    saved_head = _saved_tensors(model_dir / ADAPTER_WEIGHTS, head=head)
    source, base = _base_for_head(model_dir, spec, saved_head, base_override=base_override)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            model = PeftModel.from_pretrained(base, str(_renamed_adapter(model_dir, base, Path(scratch))))
    except (RuntimeError, ValueError, KeyError) as err:
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line),
                      str(err).splitlines()[0])
        raise UserError(f"the adapter in {model_dir} does not fit the base model {str(source)!r} "
                        f"(another architecture or label count): {detail}") from None
    _check_head(model, saved_head, head=head)
    return model


def _check_head(model: torch.nn.Module, saved: dict[str, torch.Tensor], *, head: str) -> None:
    """The head that will predict must be the trained one, tensor for tensor."""
    wrapper = model.get_submodule(f"base_model.model.{head}")
    copies = getattr(wrapper, "modules_to_save", None)  # peft's ModulesToSaveWrapper
    active = copies["default"] if copies is not None and "default" in copies else wrapper
    for key, tensor in saved.items():
        loaded = getattr(active, key.rsplit(".", 1)[-1])
        if not torch.equal(loaded.detach().cpu(), tensor):
            raise UserError(f"the classifier head did not load from the adapter ({key}); refusing to predict "
                            f"with a randomly initialised head")


def load_trained(path: Path, *, base: Path | None = None) -> Trained:
    """Load a run's model for inference (eval mode, CPU). `base` overrides the recorded base."""
    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars drown the output
    model_dir = find_model_dir(path)
    spec = _read_spec(model_dir)
    if spec["method"] == "full":
        model = _load_base(model_dir, labels=spec["labels"], trust_remote_code=False)
    elif spec["method"] == "linear_probe":
        model = _load_probe(model_dir, spec, base_override=base)
    else:  # lora, dora, loha, lokr, ia3, vera, oft: peft reads the adapter type from adapter_config.json
        model = _load_adapter(model_dir, spec, base_override=base)
    processor = AutoImageProcessor.from_pretrained(str(model_dir))
    return Trained(model=model.eval(), processor=processor, labels=spec["labels"], method=spec["method"],
                   model_dir=model_dir)
