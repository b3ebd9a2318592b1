"""Export: merge a run into a standalone model that needs neither peft nor this package.

    peft-food-export outputs/2026-11-22/10-00-00 exported/food-vit
    python -c "from transformers import pipeline; print(pipeline('image-classification', model='exported/food-vit')('photo.jpg'))"

Each method's spec merges its own run (methods/ `merge`; which methods fold is docs/methods.md's
"exports as a plain model" column): peft's tuners fold their update into the base weights with
peft's merge_and_unload and the trained head replaces the base's; SSF folds its scales and shifts
into the layers they follow; full and partial runs already are plain models. The result is saved
as safetensors with its image processor and id2label, so every such method exports alike. The
methods that change the forward pass (AddedSpec's VPT, AdaptFormer, the bottleneck adapters) do not
fold: their `merge` stops with one line pointing at peft-food-predict, which reloads them exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from huggingface_hub import ModelCard

from peft_food.data.geometry import eval_processor
from peft_food.files import share_safetensors
from peft_food.model.head import fold_head_norm
from peft_food.model.weights import label_maps
from peft_food.saved.artifacts import load_trained
from peft_food.saved.cards import write_card
from peft_food.tracking.record import RECORD_FILE, RunRecord


def export(
    run: Path, out_dir: Path, *, trust_remote_code: bool = False, say: Callable[[str], None] = lambda note: None
) -> Path:
    """`trust_remote_code`: run code the saved files name (the person's choice); `say` gets the
    base model loaded when it is not a copy saved with the run."""
    trained = load_trained(run, trust_remote_code=trust_remote_code)
    if trained.base_note:
        say(trained.base_note)
    model = fold_head_norm(trained.peft.merge(trained.model))  # a head's BatchNorm into its Linear
    for key, value in label_maps(trained.labels).items():
        setattr(model.config, key, value)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    share_safetensors(out_dir)
    eval_processor(trained.processor).save_pretrained(str(out_dir))  # scores as the run evaluated
    export_card(trained.model_dir, out_dir)
    return out_dir


def export_card(model_dir: Path, out_dir: Path) -> None:
    """The export's model card: from the run's record when the run dir is there, else the model
    dir's own card (a downloaded W&B artifact) marked as a plain transformers model."""
    record_file = model_dir.parent / RECORD_FILE
    if record_file.is_file():
        write_card(RunRecord.load(record_file), out_dir, library="transformers", exported=True)
    elif (model_dir / "README.md").is_file():
        card = ModelCard.load(str(model_dir / "README.md"))
        card.data.library_name = "transformers"
        card.save(str(out_dir / "README.md"))
