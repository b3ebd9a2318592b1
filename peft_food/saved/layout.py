"""Where a saved model is, found without torch: the commands that load one (peft-food-predict,
-export) name a wrong path in one line before torch and transformers load (artifacts.py reads it)."""

from __future__ import annotations

from pathlib import Path

from peft_food.errors import UserError, near_miss

SPEC_FILE = "peft_food.json"


def names_a_hub_repo(path: Path) -> bool:
    """`<user>/<repo>` that is no local path: a repo `peft-food-push` made, for peft-food-predict."""
    return not path.exists() and not path.is_absolute() and len(path.parts) == 2 and not str(path).startswith(".")


def find_model_dir(path: Path) -> Path:
    """A run dir (holding model/) or a model dir itself."""
    if not path.exists():
        raise UserError(
            f"{path} does not exist{near_miss(path)}: pass a run dir (outputs/<date>/<time>) or its model/ dir"
        )
    checkpoint = path if path.name.startswith("checkpoint-") or (path / "trainer_state.json").is_file() else None
    if checkpoint is not None or path.name == "checkpoints":
        # A Trainer checkpoint holds no peft_food.json (labels, base): the run dir's model/ does.
        run_dir = (checkpoint or path / "x").parent.parent
        raise UserError(
            f"{path} is a training checkpoint, not a saved model: pass the run dir ({run_dir}), "
            f"whose model/ holds the best checkpoint's weights with its labels and base"
        )
    for candidate in (path, path / "model"):
        if any((candidate / name).is_file() for name in (SPEC_FILE, "adapter_config.json", "config.json")):
            return candidate
    raise UserError(
        f"{path} holds no saved model (no model/ with {SPEC_FILE}): the run may not have finished; "
        f"check its metrics.json status"
    )
