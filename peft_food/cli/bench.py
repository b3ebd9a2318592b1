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
from peft_food.cli.help import BENCH, answered_help
from peft_food.cli.hub import offline_unless_reachable
from peft_food.cli.preflight import preflight
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
    passed = [o for o in HydraConfig.get().overrides.task if o.split("=")[0].lstrip("+~").startswith(("model", "train.precision"))]
    if status := bench_and_say(cfg, out_dir=out_dir, passed=passed):
        sys.exit(status)


@one_line_errors("peft-food-bench")
def checked() -> int:
    """Hydra's composition errors and bad values as one line, before anything runs (cli/preflight.py)."""
    if preflight(sys.argv[1:], config_name="bench", prog="peft-food-bench", extra_keys=("bench",)):
        offline_unless_reachable()  # no Hub: fail (or use the cache) at once, not after retries
    return 0


def cli() -> None:
    """The console script: our own --help (fast, no Hydra internals), then the checks, then Hydra."""
    if answered_help(BENCH):
        return
    if status := checked():
        sys.exit(status)
    main()


if __name__ == "__main__":
    cli()
