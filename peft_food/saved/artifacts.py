"""The saved model: what a run writes to `<run dir>/model/` and how it is read back.

    model/
      peft_food.json              format, method, its peft settings, labels, base model spec
      (what the method saved)     by family (methods/__init__.py lists each family's methods):
                                  peft's tuners (TunerSpec):  adapter_config.json +
                                    adapter_model.safetensors (adapter + head)
                                  PartialSpec: trained.safetensors (the head, the chosen tensors)
                                  AddedSpec: trained.safetensors (their added modules + the
                                    head, attached again on reload)
                                  FullSpec: config.json + model.safetensors
      preprocessor_config.json    the checkpoint's image processor
      base/                       only for a random-init base (model.pretrained=false), not for full

Each method's spec (methods/) decides what it saves and how it is read back; this module owns
the folder around it: the spec file, where the frozen base comes from (--base, the run's own
random-init copy, or the base the spec names), and the check that a saved head fits the recorded
labels. Only safetensors are read (no pickle), and a saved dir is data, never code: no code it
names runs unless the person loading it asks (`trust_remote_code`, the commands' --trust-remote-code;
model/trust.py)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoImageProcessor
from transformers.utils import logging as hf_logging

from peft_food.errors import UserError, first_line
from peft_food.files import share_safetensors
from peft_food.methods import METHODS, BaseLoader, MethodSpec, spec_of
from peft_food.model.head import with_head_norm
from peft_food.model.spec import ModelSpec
from peft_food.model.trust import code_named_in, require_trust
from peft_food.model.weights import load_model
from peft_food.saved.layout import SPEC_FILE, find_model_dir

FORMAT = 2  # 2: the method's peft settings are saved too (1: its label only)


@dataclass
class Trained:
    model: torch.nn.Module
    processor: Any
    labels: list[str]
    peft: MethodSpec
    model_dir: Path
    base_note: str | None = None  # which base was loaded, when not a copy saved with the model


def save_base(base: torch.nn.Module, *, model_dir: Path) -> None:
    """A random-init base exists nowhere else: keep it beside the adapter so the run reloads."""
    base.save_pretrained(str(model_dir / "base"))
    share_safetensors(model_dir / "base")


def save_trained(
    model: torch.nn.Module, processor: Any, *, model_dir: Path, peft: MethodSpec, labels: list[str], base: ModelSpec
) -> None:
    """What the method trained (its spec decides), the image processor and the spec file."""
    model_dir.mkdir(parents=True, exist_ok=True)
    peft.save(model, model_dir=model_dir, head=base.head)
    share_safetensors(model_dir)
    processor.save_pretrained(str(model_dir))
    spec = {"format": FORMAT, "method": peft.label, "peft": asdict(peft), "labels": labels, "base": asdict(base)}
    (model_dir / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")


def read_spec_file(path: Path) -> dict[str, Any]:
    """A saved `peft_food.json`, checked for the shape every reader relies on: labels, a base, a
    method; a truncated or hand-edited file is one line naming it."""

    def damaged(detail: str) -> UserError:
        return UserError(
            f"{path} is damaged ({detail}): restore it from the run (it is written with the model), or train again"
        )

    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise damaged(f"{type(err).__name__}: {first_line(err)}") from None
    if not isinstance(spec, dict):
        raise damaged("not a JSON object")
    labels, base, settings = spec.get("labels"), spec.get("base"), spec.get("peft", {"method": spec.get("method")})
    if not (isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels)):
        raise damaged("labels must be a non-empty list of class names")
    if not (
        isinstance(base, dict) and isinstance(base.get("head", ""), str) and isinstance(base.get("modules") or {}, dict)
    ):
        raise damaged("base must be an object naming the base model, its head and module roles")
    if not (isinstance(settings, dict) and isinstance(settings.get("method"), str)):
        raise damaged("it names no method")
    return spec


def _read_spec(model_dir: Path, *, trust_remote_code: bool) -> dict[str, Any]:
    if (model_dir / SPEC_FILE).is_file():
        return read_spec_file(model_dir / SPEC_FILE)
    if (model_dir / "adapter_config.json").is_file():
        raise UserError(f"{model_dir} has an adapter but no {SPEC_FILE} naming its base model and labels")
    # A plain transformers model (e.g. an export).
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    return {"method": "full", "labels": [config.id2label[i] for i in range(config.num_labels)], "base": {}}


def _peft_of(spec: dict[str, Any], *, model_dir: Path) -> MethodSpec:
    """The method spec the file names, or one line saying why it names none this version has."""
    where = model_dir / SPEC_FILE
    try:
        return spec_of(spec)
    except KeyError as err:
        raise UserError(
            f"{where} names method {err.args[0]!r}, which this version of peft_food does not have "
            f"(it has {', '.join(METHODS)}): load it with the version that trained it"
        ) from None
    except (TypeError, ValueError) as err:  # a key the method does not take, or a bad value
        raise UserError(
            f"{where} holds peft settings its method does not accept ({first_line(err)}): load it with "
            f"the version that trained it, or restore the file"
        ) from None


def _base_source(model_dir: Path, spec: dict[str, Any], *, peft: MethodSpec, base_override: Path | None) -> str | Path:
    """Where the base comes from: the saved model itself (a method that saves the whole model),
    --base, the run's own random-init copy, or the base the spec names (a Hub id or a path)."""
    labels = spec["labels"]
    if peft.saves_whole_model:
        return model_dir
    if base_override is not None:
        source = find_model_dir(base_override)
        if (source / SPEC_FILE).is_file():
            base_labels = read_spec_file(source / SPEC_FILE)["labels"]
            if len(base_labels) != len(labels):
                raise UserError(
                    f"the model in {model_dir} was trained for {len(labels)} labels but the base "
                    f"{source} has {len(base_labels)}: use the base it was trained on"
                )
        return source / "base" if (source / "base").is_dir() else source
    if (model_dir / "base").is_dir():
        return model_dir / "base"
    named = spec["base"].get("name_or_path")
    if not isinstance(named, str) or not named:
        raise UserError(
            f"{model_dir / SPEC_FILE} names no base model and {model_dir} holds no base/: pass the "
            f"base it was trained on with --base DIR"
        )
    return named


def _base_loader(source: str | Path, *, model_dir: Path, labels: list[str], trust_remote_code: bool) -> BaseLoader:
    """What a method calls with its saved head's tensors to get the base they go onto, once the
    head is known to fit the recorded labels: from safetensors only, with no code of its own
    unless the person asked for it on the command line."""

    def load(saved_head: dict[str, torch.Tensor]) -> torch.nn.Module:
        weight = next((t for k, t in saved_head.items() if k.endswith("weight")), None)
        if weight is not None and weight.shape[0] != len(labels):
            raise UserError(
                f"{model_dir}: the saved head has {weight.shape[0]} outputs but {len(labels)} labels "
                f"are recorded; the weights and {SPEC_FILE} come from different runs"
            )
        return load_model(source, labels=labels, trust_remote_code=trust_remote_code)

    return load


def base_note(source: str | Path, *, model_dir: Path, base_override: Path | None) -> str | None:
    """What to tell the person when the base is not a copy saved in the model dir: which base
    was loaded, and who named it (None when it is the dir's own)."""
    if Path(source) in (model_dir, model_dir / "base"):
        return None
    named_by = "--base" if base_override is not None else f"named by {model_dir / SPEC_FILE}"
    return f"base model {source} ({named_by}; not a copy saved with the model)"


def load_trained(path: Path, *, base: Path | None = None, trust_remote_code: bool = False) -> Trained:
    """Load a run's model for inference (eval mode, CPU). `base` overrides the recorded base.
    `trust_remote_code`: run code the saved files name (the person's own choice, never a file's)."""
    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars drown the output
    model_dir = find_model_dir(path)
    # Before anything is read with transformers: a config there may name a module to import.
    for folder in (model_dir, model_dir / "base"):
        require_trust(code_named_in(folder), trusted=trust_remote_code)
    spec = _read_spec(model_dir, trust_remote_code=trust_remote_code)
    if spec["base"].get("trust_remote_code"):
        require_trust(
            f"{model_dir / SPEC_FILE} says its base model was trained with model.trust_remote_code=true "
            f"(it runs code of its own)",
            trusted=trust_remote_code,
        )
    peft = _peft_of(spec, model_dir=model_dir)
    source = _base_source(model_dir, spec, peft=peft, base_override=base)
    if Path(source).is_dir():
        require_trust(code_named_in(Path(source)), trusted=trust_remote_code)
    loader = _base_loader(source, model_dir=model_dir, labels=spec["labels"], trust_remote_code=trust_remote_code)
    head = spec["base"].get("head", "classifier")
    if spec["base"].get("head_norm"):  # the head's BatchNorm is no part of the architecture: attach it again
        loader = with_head_norm(loader, source=source, head=head)
    model = peft.load(
        model_dir,
        base=loader,
        labels=spec["labels"],
        head=head,
        roles=spec["base"].get("modules"),
    )
    processor = AutoImageProcessor.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    return Trained(
        model=model.eval(),
        processor=processor,
        labels=spec["labels"],
        peft=peft,
        model_dir=model_dir,
        base_note=base_note(source, model_dir=model_dir, base_override=base),
    )
