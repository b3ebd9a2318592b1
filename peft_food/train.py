"""Training stage's command line: compose the config with Hydra, then train (runner.py).

    peft-food-train experiment=quickstart                  # offline, CPU, ~1 minute
    peft-food-train                                        # the seed recipe (needs the Hub)
    peft-food-train peft=full                              # full fine-tuning
    peft-food-train peft.r=8 peft.alpha=32 train.epochs=3 logger.project=my-proj
    peft-food-train model=dinov2_small peft=ia3            # any method on any backbone

`main` is a thin Hydra wrapper; tests and sweepers call `train(cfg) -> RunRecord`. This module
imports no torch, transformers or peft: `--help`, tab completion and `--cfg job` answer at once
and print nothing but what was asked; the pipeline is imported when training starts.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import hydra
import psutil
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from peft_food.cli_help import print_help
from peft_food.config import CONF_DIR, ENV, from_env, parse_config
from peft_food.distributed import is_main_process, share_run_dir
from peft_food.errors import Interrupted, UserError
from peft_food.record import FILE as RECORD_FILE
from peft_food.record import RunRecord
from peft_food.sweep import is_multirun, job_labels

log = logging.getLogger(__name__)


def train(cfg: DictConfig, *, resume_search: Path | None = None, started: float | None = None) -> RunRecord:
    """Validate the composed config (before any compute), then train. Returns the run's record.
    `resume_search`: where to look for an unfinished run of the same command (the CLI's outputs/);
    `started`: when the job began (time.time(); None: now), for the record's startup_s."""
    # torch, transformers and peft are imported only now, when training starts.
    from peft_food.runner import run

    return run(parse_config(cfg), resume_search=resume_search, started=started)


_jobs_started = 0  # a multirun's basic launcher runs its jobs one after another in this process


def job_started() -> float:
    """When this job began: the process's start for its first job (imports included), the job's
    launch for later jobs of a multirun, which share the process and its imports."""
    global _jobs_started
    _jobs_started += 1
    return psutil.Process().create_time() if _jobs_started == 1 else time.time()


def record_failure(cfg: DictConfig, err: BaseException) -> None:
    """A job that failed before run() started still leaves a metrics.json saying so, with the
    config as composed (unresolved: resolving may be what failed)."""
    path = Path(str(cfg.output_dir)) / RECORD_FILE
    if is_main_process() and path.parent.is_dir() and not path.is_file():
        config = OmegaConf.to_container(cfg, resolve=False)
        RunRecord(status="failed", error=f"{type(err).__name__}: {err}", config=config).write(path)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra edge: label multirun jobs for W&B, run, and turn failures into one line + exit code.

    Returns the monitored metric's best value (what a sweeper such as Optuna optimises). In a
    multirun a failed job returns NaN instead of raising, so the remaining jobs still run;
    SweepSummary then lists the failures and exits non-zero."""
    started = job_started()
    # A sweep's own labels are defaults: the config, then the user's WANDB_* variables, win.
    for key, value in job_labels(sweep_name=cfg.get("sweep_name")).items():
        if cfg.logger.get(key) is None and not (key in ENV and from_env(key)):
            cfg.logger[key] = value
    cfg.output_dir = share_run_dir(HydraConfig.get().runtime.output_dir)
    # Same command again -> continue its unfinished run: look among the timestamped run dirs.
    search = None if is_multirun() else Path(cfg.output_dir).parent.parent
    try:
        record = train(cfg, resume_search=search, started=started)
    except Interrupted as err:
        print(f"peft-food-train: {err}", file=sys.stderr)
        sys.exit(128 + err.signum)
    except UserError as err:
        # A user mistake: one line that names the problem and the fix, no traceback.
        print(f"peft-food-train: error: {err}", file=sys.stderr)
        record_failure(cfg, err)
        if is_multirun():
            return float("nan")
        sys.exit(2)
    except Exception as err:
        if not is_multirun():
            raise
        log.exception("job failed: %s", err)
        record_failure(cfg, err)
        return float("nan")
    if is_main_process():
        print(json.dumps(record.summary()))
    return record.best


def cli() -> None:
    """The console script: our own --help (fast, no Hydra internals), everything else to Hydra."""
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        print_help("peft-food-train")
        return
    main()


if __name__ == "__main__":
    cli()
