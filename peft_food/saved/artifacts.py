"""The saved model: what a run writes to `<run dir>/model/` and how it is read back.

    model/
      peft_food.json              format, method, its peft settings, labels, base model spec
      (what the method saved)     adapters (lora, dora, loha, lokr, ia3, vera, oft):
                                    adapter_config.json + adapter_model.safetensors (adapter + head)
                                  linear_probe, bitfit: trained.safetensors (the head, the biases)
                                  vpt, ssf, adaptformer, adapter: trained.safetensors (their
                                    added modules + the head, attached again on reload)
                                  full: config.json + model.safetensors
      preprocessor_config.json    the checkpoint's image processor
      base/                       only for a random-init base (model.pretrained=false), not for full

Each method's spec (methods/) decides what it saves and how it is read back; this module owns
the folder around it: the spec file, where the frozen base comes from (--base, the run's own
random-init copy, or the Hub id), and the check that a saved head fits the recorded labels. Only
safetensors are read (no pickle), and no remote code runs unless the saved spec asks for it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoImageProcessor
from transformers.utils import logging as hf_logging

from peft_food.errors import UserError
from peft_food.methods import BaseLoader, PeftSpec, spec_of
from peft_food.model.spec import ModelSpec
from peft_food.model.weights import load_model

SPEC_FILE = "peft_food.json"
FORMAT = 2  # 2: the method's peft settings are saved too (1: its label only)


@dataclass
class Trained:
    model: torch.nn.Module
    processor: Any
    labels: list[str]
    peft: PeftSpec
    model_dir: Path


def save_base(base: torch.nn.Module, *, model_dir: Path) -> None:
    """A random-init base exists nowhere else: keep it beside the adapter so the run reloads."""
    base.save_pretrained(str(model_dir / "base"))


def save_trained(model: torch.nn.Module, processor: Any, *, model_dir: Path, peft: PeftSpec,
                 labels: list[str], base: ModelSpec) -> None:
    """What the method trained (its spec decides), the image processor and the spec file."""
    model_dir.mkdir(parents=True, exist_ok=True)
    peft.save(model, model_dir=model_dir, head=base.head)
    processor.save_pretrained(str(model_dir))
    spec = {"format": FORMAT, "method": peft.label, "peft": asdict(peft), "labels": labels, "base": asdict(base)}
    (model_dir / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")


def find_model_dir(path: Path) -> Path:
    """A run dir (holding model/) or a model dir itself."""
    if not path.exists():
        raise UserError(f"{path} does not exist: pass a run dir (outputs/<date>/<time>) or its model/ dir")
    checkpoint = path if path.name.startswith("checkpoint-") or (path / "trainer_state.json").is_file() else None
    if checkpoint is not None or path.name == "checkpoints":
        # A Trainer checkpoint holds no peft_food.json (labels, base): the run dir's model/ does.
        run_dir = (checkpoint or path / "x").parent.parent
        raise UserError(f"{path} is a training checkpoint, not a saved model: pass the run dir ({run_dir}), "
                        f"whose model/ holds the best checkpoint's weights with its labels and base")
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
    config = AutoConfig.from_pretrained(model_dir)  # a plain transformers model (e.g. an export)
    return {"method": "full", "labels": [config.id2label[i] for i in range(config.num_labels)], "base": {}}


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


def _base_loader(model_dir: Path, spec: dict[str, Any], *, base_override: Path | None) -> BaseLoader:
    """What a method calls with its saved head's tensors to get the frozen base they go onto,
    once the head is known to fit the recorded labels."""
    labels = spec["labels"]

    def load(saved_head: dict[str, torch.Tensor]) -> torch.nn.Module:
        weight = next((t for k, t in saved_head.items() if k.endswith("weight")), None)
        if weight is not None and weight.shape[0] != len(labels):
            raise UserError(f"{model_dir}: the saved head has {weight.shape[0]} outputs but {len(labels)} labels "
                            f"are recorded; the weights and {SPEC_FILE} come from different runs")
        source = _base_source(model_dir, spec, base_override=base_override)
        return load_model(source, labels=labels, trust_remote_code=bool(spec["base"].get("trust_remote_code")))

    return load


def load_trained(path: Path, *, base: Path | None = None) -> Trained:
    """Load a run's model for inference (eval mode, CPU). `base` overrides the recorded base."""
    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars drown the output
    model_dir = find_model_dir(path)
    spec = _read_spec(model_dir)
    peft = spec_of(spec)
    model = peft.load(model_dir, base=_base_loader(model_dir, spec, base_override=base), labels=spec["labels"],
                      head=spec["base"].get("head", "classifier"), roles=spec["base"].get("modules"))
    processor = AutoImageProcessor.from_pretrained(str(model_dir))
    return Trained(model=model.eval(), processor=processor, labels=spec["labels"], peft=peft, model_dir=model_dir)
