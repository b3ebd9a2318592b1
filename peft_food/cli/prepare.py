"""`peft-food-prepare`: build the data stores a run will read (data/store.py) ahead of time, e.g. once
before a SLURM array whose tasks would otherwise queue on the build lock.

    peft-food-prepare data=food101_local data.root=../shared/data/food101-mini model=vit_base
    peft-food-prepare data.store_dir=/scratch/$USER/stores                  # Food-101 from the Hub

Composes the same peft_food/conf/ as training (the model sets the stored sizes), so the stores it
builds are exactly the ones `peft-food-train ... data.store=true` with the same data, model and
data.store_* keys opens. Prints one line per store; builds nothing that is already there.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import hydra
from omegaconf import DictConfig

from peft_food.cli import one_line_errors
from peft_food.cli.help import PREPARE
from peft_food.cli.preflight import console_script
from peft_food.config import CONF_DIR, parse_config
from peft_food.errors import UserError


def prepare(cfg: DictConfig) -> list[str]:
    """Build (or find) the stores of the composed config; one line about each."""
    from peft_food.data.splits import load_splits
    from peft_food.training.pipeline import data_plan

    spec = parse_config(cfg)
    spec = replace(spec, data=replace(spec.data, store=True))
    splits = load_splits(spec.data, seed=spec.seed, plan=data_plan(spec))
    if not splits.stores:
        raise UserError(f"data={spec.data.source} is generated in memory: there is nothing to store")
    lines = []
    for kind, store in splits.stores.items():
        bad = f", {len(store.bad)} unusable (listed in its meta.json)" if store.bad else ""
        lines.append(f"{kind}: {store.path} ({len(store)} images, {store.nbytes / 2**20:,.0f} MB{bad})")
    return lines


@one_line_errors("peft-food-prepare")
def prepare_and_say(cfg: DictConfig) -> int:
    print("\n".join(prepare(cfg)))
    return 0


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="prepare")
def main(cfg: DictConfig) -> None:
    if status := prepare_and_say(cfg):
        sys.exit(status)


def cli() -> None:
    """The console script (cli/preflight.py: --help, the checks, then Hydra)."""
    console_script(main, command=PREPARE, config_name="prepare")


if __name__ == "__main__":
    cli()
