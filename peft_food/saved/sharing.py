"""What a finished run pushes to the Hugging Face Hub, built into a local folder first: the folder is
what `peft-food-push --dry-run` shows and what saved/hub.py uploads in one commit.

    peft-food-push outputs/2026-11-22/10-00-00 <user>/food-vit-lora            # the adapter (peft repo)
    peft-food-push outputs/2026-11-22/10-00-00 <user>/food-vit --merged        # the merged model
    peft-food-train hub.push=true hub.repo_id=<user>/food-vit-lora             # at the end of training

What is pushed, by what the method saved (its spec's `library` and `unfoldable`):

- a peft tuner (LoRA, DoRA, LoHa, ..., `peft_config`): a peft repo, the adapter with the trained head
  (modules_to_save) in adapter_model.safetensors, adapter_config.json naming the base, the label maps
  (label_maps.json), the run's eval image processor and peft_food.json (so peft-food-predict reads it
  too). It loads with `PeftModel.from_pretrained(base, repo)`. The card says `library_name: peft`,
  `base_model: <the Hub id trained from>`, `base_model_relation: adapter`.
- `--merged`, and every method that is no peft tuner but folds into the base (full, linear_probe,
  bitfit, ssf): the export (saved/export.py), a plain transformers model that
  `pipeline("image-classification", model=repo)` loads; `library_name: transformers`.
- VPT, AdaptFormer and the bottleneck adapters: refused in one line. Their modules are this
  package's own, not a peft tuner's, and do not fold into the base, so no library on the Hub loads them.

A base with no Hub id cannot be named as `base_model`: a random-init base (model.pretrained=false) is
pushed beside the adapter in base/ (it exists nowhere else); a local checkpoint (model.name_or_path=
/path) pushes the merged model instead, since no one else has that base.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peft_food.errors import UserError
from peft_food.methods import METHODS, spec_of
from peft_food.model.spec import looks_local
from peft_food.saved.artifacts import SPEC_FILE, find_model_dir, read_spec_file
from peft_food.saved.cards import model_card
from peft_food.saved.hub import read_metadata, require_online, require_token, upload
from peft_food.tracking.record import RECORD_FILE, RunRecord

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", SPEC_FILE)
LABEL_MAPS = "label_maps.json"


@dataclass
class Staged:
    """The folder that would be pushed: its files, the card's metadata and what was decided why."""

    folder: Path
    kind: str  # adapter | merged
    metadata: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file())

    def describe(self) -> str:
        """What --dry-run prints: the files with their sizes, then the card's metadata (the notes are said
        as they are decided)."""
        import yaml

        sizes = [f"  {name}  ({(self.folder / name).stat().st_size:,} bytes)" for name in self.files]
        return "\n".join(
            [
                f"{self.kind} repo staged in {self.folder}:",
                *sizes,
                "card metadata (README.md):",
                yaml.safe_dump(self.metadata, sort_keys=False).rstrip(),
            ]
        )


@dataclass
class Plan:
    kind: str  # adapter | merged
    base_model: str | None  # the Hub id the card names, None where there is none
    notes: list[str]


def completed_record(model_dir: Path) -> RunRecord:
    """The run's record, which the card reports: only a completed run is pushed."""
    path = model_dir.parent / RECORD_FILE
    if not path.is_file():
        raise UserError(
            f"{model_dir.parent} holds no {RECORD_FILE}: pass the run dir (outputs/<date>/<time>), whose "
            f"record the model card reports"
        )
    record = RunRecord.load(path)
    if record.status != "completed":
        raise UserError(f"{path} says the run is {record.status}: only a completed run is pushed")
    return record


def plan(saved: dict[str, Any], *, merged: bool) -> Plan:
    """What this saved model pushes, and the card's base_model: one line of why for each exception."""
    try:
        peft = spec_of(saved)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(
            f"the saved model names a method or settings this version of peft_food does not have ({err}): "
            f"push it with the version that trained it (it has {', '.join(METHODS)})"
        ) from None
    base = saved.get("base") or {}
    name = base.get("name_or_path")
    notes = []
    if not base:  # a plain transformers model (an export): nothing names its base
        return Plan("merged", None, ["the model dir is an export, which names no base model: base_model is left out"])
    local = bool(base.get("pretrained", True)) and looks_local(name)
    if not base.get("pretrained", True):
        notes.append(
            "model.pretrained=false: the base was initialised at random, not taken from the Hub, so the card "
            "names no base_model; "
            + (
                "the random-init base is pushed beside the adapter, in base/"
                if peft.library == "peft" and not merged
                else "the whole model is pushed"
            )
        )
    elif local:
        notes.append(
            f"model.name_or_path={name} is a local path, not a Hub id, so the card names no base_model and "
            f"no one else has that base: the merged model is pushed instead (library_name: transformers)"
        )
    if peft.library == "peft" and not merged and not local:
        return Plan("adapter", None if not base.get("pretrained", True) else name, notes)
    if peft.unfoldable:
        raise UserError(
            f"peft={peft.label} is not pushed: its modules are this package's own, not a peft tuner's, and do not "
            f"fold into the base ({peft.unfoldable}), so no library on the Hub loads them; share the run dir "
            f"(peft-food-predict serves it) or its W&B artifact"
        )
    return Plan("merged", None if local or not base.get("pretrained", True) else name, notes)


def stage(
    run: Path,
    folder: Path,
    *,
    repo_id: str,
    merged: bool = False,
    trust_remote_code: bool = False,
    say: Callable[[str], None] = lambda note: None,
) -> Staged:
    """Build in `folder` (new or empty) what `repo_id` would get, its card checked as the Hub reads it."""
    model_dir = find_model_dir(run)
    record = completed_record(model_dir)
    saved = read_spec_file(model_dir / SPEC_FILE) if (model_dir / SPEC_FILE).is_file() else {"method": "full"}
    chosen = plan(saved, merged=merged)
    for note in chosen.notes:
        say(note)
    if folder.exists() and any(folder.iterdir()):
        raise UserError(f"{folder} exists and is not empty: choose a new folder to stage the push in")
    folder.mkdir(parents=True, exist_ok=True)
    if chosen.kind == "adapter":
        _stage_adapter(model_dir, folder, saved=saved, base_model=chosen.base_model)
    else:
        _stage_merged(run, folder, trust_remote_code=trust_remote_code, say=say)
    write_hub_card(record, folder, repo_id=repo_id, kind=chosen.kind, base_model=chosen.base_model, notes=chosen.notes)
    return Staged(folder=folder, kind=chosen.kind, metadata=read_metadata(folder / "README.md"), notes=chosen.notes)


def _stage_adapter(model_dir: Path, folder: Path, *, saved: dict[str, Any], base_model: str | None) -> None:
    """The adapter and head as saved, the base's Hub id in adapter_config.json (peft's own field), the
    label maps, the run's eval processor, and for a random-init base the base itself in base/."""
    from transformers import AutoImageProcessor

    from peft_food.data.geometry import eval_processor
    from peft_food.model.weights import label_maps

    for name in ADAPTER_FILES:
        shutil.copy2(model_dir / name, folder / name)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_model
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / LABEL_MAPS).write_text(json.dumps(label_maps(saved["labels"]), indent=2) + "\n")
    eval_processor(AutoImageProcessor.from_pretrained(str(model_dir))).save_pretrained(str(folder))
    if (model_dir / "base").is_dir():
        shutil.copytree(model_dir / "base", folder / "base")


def _stage_merged(run: Path, folder: Path, *, trust_remote_code: bool, say: Callable[[str], None]) -> None:
    import torch

    from peft_food.saved.export import export

    with torch.no_grad():
        export(run, folder, trust_remote_code=trust_remote_code, say=say)


def write_hub_card(
    record: RunRecord, folder: Path, *, repo_id: str, kind: str, base_model: str | None, notes: list[str]
) -> None:
    """The run's card (data, protocol, test result with its split, the command to reproduce) with the
    Hub's metadata for this repo, and how to load it: as an adapter and merged."""
    adapter = kind == "adapter"
    card = model_card(record, library="peft" if adapter else "transformers", exported=not adapter)
    card.data.base_model = base_model
    card.data.base_model_relation = ("adapter" if adapter else "finetune") if base_model else None
    intro, training, rest = card.text.partition("## Training")
    section = load_section(repo_id, kind=kind, base_model=base_model, notes=notes)
    card.text = f"{intro}{section}\n{training}{rest}"  # how to load it, first after the summary
    card.save(str(folder / "README.md"))


def load_section(repo_id: str, *, kind: str, base_model: str | None, notes: list[str]) -> str:
    """The card's "Load it" section: the two ways to load this repo, as code that runs."""
    if kind == "adapter":
        base = (
            f'AutoModelForImageClassification.from_pretrained(\n    "{base_model}", **maps, ignore_mismatched_sizes=True\n)'
            if base_model
            # Not from_pretrained(repo, subfolder="base"): transformers sees the repo's adapter_config.json
            # and loads the base that names (none) instead; the downloaded base/ folder has no adapter.
            else f'AutoModelForImageClassification.from_pretrained(\n    snapshot_download("{repo_id}", allow_patterns="base/*") + "/base"\n)  # the random-init base'
        )
        adapter = f"""```python
import json

from huggingface_hub import hf_hub_download, snapshot_download
from peft import PeftModel
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

maps = json.load(open(hf_hub_download("{repo_id}", "{LABEL_MAPS}")))  # id2label, label2id
base = {base}
model = PeftModel.from_pretrained(base, "{repo_id}").eval()  # the adapter and the trained head
processor = AutoImageProcessor.from_pretrained("{repo_id}")  # resize + centre crop, as the run evaluated
```"""
        merged = """```python
merged = model.merge_and_unload()  # a plain transformers model, no peft needed to run it
classify = pipeline("image-classification", model=merged, image_processor=processor)
print(classify("photo.jpg"))
```"""
        heads = (
            "As a peft adapter on its base:",
            "Merged into the base (or push it merged: `peft-food-push <run dir> <repo> --merged`):",
        )
    else:
        adapter = f"""```python
from transformers import pipeline

classify = pipeline("image-classification", model="{repo_id}")
print(classify("photo.jpg"))
```"""
        merged = f"""```python
from transformers import AutoImageProcessor, AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained("{repo_id}").eval()
processor = AutoImageProcessor.from_pretrained("{repo_id}")  # resize + centre crop, as the run evaluated
```"""
        heads = (
            "With `pipeline` (a plain transformers model: the method's weights are merged in):",
            "As a model and its image processor:",
        )
    lines = ["## Load it", "", heads[0], "", adapter, "", heads[1], "", merged, ""]
    lines += [f"Also with this package: `peft-food-predict {repo_id} photo.jpg`.", ""]
    if notes:
        lines += [f"Note: {note}." for note in notes] + [""]
    return "\n".join(lines)


def push(
    run: Path,
    *,
    repo_id: str,
    merged: bool = False,
    private: bool = False,
    revision: str | None = None,
    staging: Path | None = None,
    trust_remote_code: bool = False,
    say: Callable[[str], None] = lambda note: None,
) -> str:
    """Stage `run` and push it to `repo_id` in one commit; returns the commit's URL. No token or no Hub:
    one line before anything is built. `staging`: keep the staged folder there (else a temporary one)."""
    import tempfile

    token = require_token()
    require_online()
    with tempfile.TemporaryDirectory(prefix="peft-food-push-") as scratch:
        staged = stage(
            run,
            staging or Path(scratch) / "repo",
            repo_id=repo_id,
            merged=merged,
            trust_remote_code=trust_remote_code,
            say=say,
        )
        return upload(
            staged.folder,
            repo_id=repo_id,
            token=token,
            private=private,
            revision=revision,
            message=f"peft-food-push: {staged.kind} of run {run.resolve().name}",
        )
