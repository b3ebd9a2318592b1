"""Shared fixtures: compose the real peft_food/conf/ (as the CLI would) with small overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from peft_food.config import CONF_DIR

REPO = Path(__file__).resolve().parent.parent
MINI = REPO.parent / "shared" / "data" / "food101-mini"

# Tiny ViT on CPU in fp32 with no workers, and few synthetic images (TINY = both).
TINY_TRAIN = [
    "model=vit_tiny",
    "train.epochs=2",
    "train.batch_size=16",
    "train.eval_batch_size=32",
    "train.grad_accum=1",
    "train.precision=fp32",
    "train.workers=0",
    "train.logging_steps=2",
]
SYNTHETIC = ["data=synthetic", "data.num_classes=4", "data.per_class=16", "data.eval_per_class=8", "data.image_size=32"]
TINY = TINY_TRAIN + SYNTHETIC


def compose_config(*overrides: str, output_dir: Path | None = None):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        extra = [f"output_dir={output_dir}"] if output_dir is not None else []
        return compose(config_name="train", overrides=[*overrides, *extra])


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path_factory):
    """W&B as a user without an account has it: no API key, no ~/.netrc login, no forced mode."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
