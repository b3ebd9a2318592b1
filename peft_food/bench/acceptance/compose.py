"""The real peft_food/conf/ composed for each acceptance part, with the part's overrides (as tests
and sweeps compose it), and the shipped method configs the checks go through."""

from __future__ import annotations

from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from peft_food.config import CONF_DIR, RunSpec, parse_config

# Every part logs nothing to W&B: the GPU machine has no wandb, and nothing to log to.
QUIET = ("logger=none", "progress=false")


def compose(*overrides: str, output_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[*QUIET, *overrides, f"output_dir={output_dir}"])


def run_spec(*overrides: str, output_dir: Path) -> RunSpec:
    return parse_config(compose(*overrides, output_dir=output_dir))


def shipped_methods() -> list[str]:
    """Each peft_food/conf/peft/<name>.yaml: what `peft=<name>` gives (dora is LoRA's flag, a file of its own)."""
    return sorted(path.stem for path in (Path(CONF_DIR) / "peft").glob("*.yaml"))
