"""peft-food-bench: this package's data and training path against the seed recipe (bench/).

peft-food-bench data=food101_local data.root=../shared/data/food101-mini model=vit_tiny
peft-food-bench model=vit_base model.pretrained=false data=food101_local data.root=... train.precision=bf16
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from peft_food.cli import one_line_errors
from peft_food.cli.help import BENCH
from peft_food.cli.preflight import console_script
from peft_food.config import CONF_DIR


@one_line_errors("peft-food-bench")
def bench_and_say(cfg: DictConfig, *, out_dir: Path, passed: list[str]) -> int:
    # torch loads once Hydra has composed: --help answers at once.
    from peft_food.bench.report import table
    from peft_food.bench.run import run_bench

    result = run_bench(cfg, out_dir=out_dir, passed=passed)
    print(table(result))
    for method, ratio in result.get("peak_mem_over_full", {}).items():
        print(f"peak memory {method} / full fine-tuning: {ratio:.2f}")
    print(f"wrote {out_dir / 'bench.json'}")
    return 0


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    # The model and precision the command line chose, for the startup section's training jobs.
    passed = [
        o
        for o in HydraConfig.get().overrides.task
        if o.split("=")[0].lstrip("+~").startswith(("model", "train.precision"))
    ]
    if status := bench_and_say(cfg, out_dir=out_dir, passed=passed):
        sys.exit(status)


def cli() -> None:
    """The console script (cli/preflight.py: --help, the checks, then Hydra)."""
    console_script(main, command=BENCH, config_name="bench", extra_keys=("bench",))


if __name__ == "__main__":
    cli()
