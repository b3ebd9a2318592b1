"""Model cards: the README.md of a run's model/ dir and of an export, written with
huggingface_hub's ModelCard so the Hub reads their metadata (library, pipeline, base model,
dataset, metrics, model-index with the accuracy). A pushed repo's card (saved/sharing.py) is this one
with the Hub's base model and how to load the repo:

    peft-food-push outputs/2026-11-22/10-00-00 <user>/food-vit-lora
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from peft_food.data.sources import SOURCES
from peft_food.tracking.record import RunRecord, portable

FOOD101_NOTE = (
    "Food-101 (Bossard, Guillaumin and Van Gool, ECCV 2014): 101,000 photos of 101 dishes from "
    "foodspotting.com. The authors note that the images are not theirs: they are distributed for "
    "research under fair use, subject to foodspotting.com's terms. Check those terms before any "
    "non-research use of a model trained on them."
)


def _dataset(data: dict[str, Any]) -> tuple[str | None, str, str | None]:
    """(Hub dataset id or None, a readable name, the eval split) of the run's data config, as its
    source says (a source no longer known, from an old record: named as it was configured)."""
    source = SOURCES.get(data.get("source"))
    if source is None:
        return None, f"data.source={data.get('source')}", None
    card = source.card(data)
    return card.hub_id, card.name, card.split


def model_card(record: RunRecord, *, library: str, exported: bool, unfoldable: str | None = None) -> ModelCard:
    """The card of a finished run: for its model/ dir (`library`: what reads what the method
    saved; `unfoldable`: why it cannot be exported, None where it can) or for its export (a plain
    transformers model)."""
    config = record.config
    model, data = config.get("model", {}), config.get("data", {})
    base = model.get("name_or_path") if model.get("pretrained", True) else None
    hub_dataset, dataset_name, split = _dataset(data)
    measured = record.epochs[0] if record.epochs else ((record.test or {}).get("final") or {})  # retrain: test only
    names = [key.split("_", 1)[1] for key in measured if key != "epoch"]
    # The model-index reports what the record reports: test, for the checkpoint chosen on val.
    reported = {name: record.reported(name) for name in names if name != "loss"}
    results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=hub_dataset or data.get("source", "images"),
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=name,
            metric_name=name,
            metric_value=round(value, 6),
        )
        for name, value in reported.items()
        if value is not None
    ]
    title = f"{record.method} on {base or model.get('name', 'a random-init backbone')}"
    card_data = ModelCardData(
        library_name="transformers" if exported else library,
        pipeline_tag="image-classification",
        base_model=base,
        datasets=[hub_dataset] if hub_dataset else None,
        metrics=[n for n in names if n != "loss"],
        tags=["image-classification", "peft-food", record.method],
        model_name=title,
        eval_results=results or None,
    )
    return ModelCard(
        f"---\n{card_data.to_yaml()}\n---\n\n{_body(record, title=title, dataset=dataset_name, split=split, base=base, exported=exported, unfoldable=unfoldable)}"
    )


def _body(
    record: RunRecord,
    *,
    title: str,
    dataset: str,
    split: str | None,
    base: str | None,
    exported: bool,
    unfoldable: str | None,
) -> str:
    config = record.config
    counts = record.counts
    settings = {k: v for k, v in config.get("peft", {}).items() if k not in ("method", "recommended_lr")}
    epochs = record.epochs
    columns = [k for k in (epochs[0] if epochs else {}) if k != "epoch"]
    table = ["| epoch | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    table += [f"| {e['epoch']:g} | " + " | ".join(f"{e[c]:.4f}" for c in columns) + " |" for e in epochs]
    git = record.provenance.git or {}
    load = "Load it with `peft-food-predict <this dir> photo.jpg`"
    how = (
        "A plain transformers model: the adapter is merged into the base weights (no peft needed)."
        if exported
        else f"{load} (it does not export as a plain model: {unfoldable})."
        if unfoldable
        else f"{load}, or export a merged model with `peft-food-export <this dir> out/`."
    )
    lines = [
        f"# {title}",
        "",
        f"Fine-tuned for image classification with peft_food: "
        f"method `{record.method}` on `{base or config.get('model', {}).get('name')}`"
        f"{'' if base else ' (randomly initialised: not a pretrained checkpoint)'}, "
        f"{counts.num_labels if counts else len(record.labels)} classes. {how}",
        "",
        "## Training",
        "",
        f"- Data: {dataset}; {_sizes(record)}; reported on {split}.",
        f"- Method `{record.method}`: {', '.join(f'{k}={v}' for k, v in settings.items()) or 'no settings'}.",
        f"- Trainable parameters: {counts.trainable_params:,} of {counts.total_params:,} ({counts.trainable_percent}%)."
        if counts
        else "- Trainable parameters: not recorded.",
        f"- Precision {record.provenance.precision}; {_saved(record)}.",
        "",
        "## Results",
        "",
        _results(record),
        "",
        f"## {record.selected_on.capitalize()} results per epoch",
        "",
        *table,
        "",
        "## Reproduce",
        "",
        f"Command: `{record.provenance.command}` at git commit `{git.get('sha')}`"
        f"{' (with uncommitted changes)' if git.get('dirty') else ''}. The resolved config:",
        "",
        "```yaml",
        yaml.safe_dump(portable(config), sort_keys=False).rstrip(),
        "```",
        "",
        "## Data licence",
        "",
        FOOD101_NOTE if "Food-101" in dataset else "The training images are your own.",
    ]
    return "\n".join(lines) + "\n"


def _saved(record: RunRecord) -> str:
    if record.protocol == "retrain":
        return "the saved model is the last epoch's (trained on train + val: nothing selected)"
    return f"the saved model is the epoch with the best {record.selected_on} `{record.monitor.removeprefix('eval_')}`"


def _sizes(record: RunRecord) -> str:
    counts = record.counts
    if counts is None:
        return "split sizes not recorded"
    if record.protocol == "seed":
        return f"{counts.num_train_samples} training images, {counts.num_eval_samples} held out"
    if record.protocol == "retrain":
        return f"{counts.num_train_samples} training images (train + val), {counts.num_test_samples} test (reported)"
    return (
        f"{counts.num_train_samples} training images, {counts.num_eval_samples} val (select the checkpoint), "
        f"{counts.num_test_samples} test (reported)"
    )


def _results(record: RunRecord) -> str:
    """The reported accuracy, and in words how it was obtained."""
    best, final = record.reported("accuracy"), record.reported("accuracy", checkpoint="final")
    if best is None:
        return "No result recorded."
    split = "held-out" if record.protocol == "seed" else "test"
    last = "" if record.protocol == "retrain" else f"; the last epoch's: {final:.4f}"
    return (
        f"{split.capitalize()} accuracy **{best:.4f}** ({record.describe_protocol()}){last}. "
        f"One run, seed {record.config.get('seed')}."
    )


def write_card(
    record: RunRecord, model_dir: Path, *, library: str, exported: bool = False, unfoldable: str | None = None
) -> None:
    model_card(record, library=library, exported=exported, unfoldable=unfoldable).save(str(model_dir / "README.md"))
