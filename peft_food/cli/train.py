"""peft-food-train: compose the config with Hydra, then train (training/pipeline.py).

    peft-food-train experiment=quickstart                  # offline, CPU (conf/experiment/quickstart.yaml: how long)
    peft-food-train                                        # the seed recipe (needs the Hub)
    peft-food-train peft=full                              # full fine-tuning
    peft-food-train peft.r=8 peft.alpha=32 train.epochs=3 logger.project=my-proj
    peft-food-train model=dinov2_small peft=ia3            # any method on any backbone

`main` is a thin Hydra wrapper; tests and reproduce call `training.pipeline.train(cfg) -> RunRecord`. This module
imports no torch, transformers or peft: `--help`, tab completion and `--cfg job` answer at once
and print nothing but what was asked; the pipeline is imported when training starts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import hydra
import psutil
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from peft_food.cli import print_error
from peft_food.cli.help import TRAIN
from peft_food.cli.preflight import console_script
from peft_food.config import CONF_DIR, ENV, RunSpec, from_env, parse_config
from peft_food.errors import Interrupted, UserError
from peft_food.tracking.record import FILE as RECORD_FILE
from peft_food.tracking.record import RunRecord
from peft_food.tracking.sweep import is_multirun, job_labels, objective
from peft_food.training.claim import resume_search_root, sweep_dead_starts
from peft_food.training.distributed import is_main_process, quiet_other_ranks, share_run_dir

log = logging.getLogger(__name__)


_jobs_started = 0  # a multirun's basic launcher runs its jobs one after another in this process


def job_started() -> float:
    """When this job began: the process's start for its first job (imports included), the job's
    launch for later jobs of a multirun, which share the process and its imports."""
    global _jobs_started
    _jobs_started += 1
    return psutil.Process().create_time() if _jobs_started == 1 else time.time()


def record_failure(cfg: DictConfig, err: BaseException) -> None:
    """A sweep job that failed before run() started still leaves a metrics.json saying so, with the
    config as composed (unresolved: resolving may be what failed)."""
    path = Path(str(cfg.output_dir)) / RECORD_FILE
    if is_main_process() and path.parent.is_dir() and not path.is_file():
        config = OmegaConf.to_container(cfg, resolve=False)
        RunRecord(status="failed", error=f"{type(err).__name__}: {err}", config=config).write(path)


def forget_run_dir(run_dir: Path) -> None:
    """A single run stopped by a user mistake before it saved anything leaves no run dir behind
    (the mistake is on stderr). Imported here, not at the top: the pipeline (torch) is loaded by now,
    and --help must not load it."""
    from peft_food.training.rundir import discard_failed_start

    discard_failed_start(run_dir)


@contextmanager
def local_share(spec: RunSpec) -> Iterator[RunSpec]:
    """Under hydra/launcher=local (submitit's local executor, every job at once), the job's share of
    the cores: hydra.launcher.cpus_per_task threads and workers, and a slot among the jobs that fit
    (training/cores.py). Other launchers: the spec as it is."""
    hydra_cfg = HydraConfig.get()
    if not str(hydra_cfg.launcher.get("_target_", "")).endswith(".LocalLauncher"):
        yield spec
        return
    from peft_food.training.cores import default_workers, job_slot
    from peft_food.training.cores import local_share as share_of

    share = share_of(cpus_per_task=hydra_cfg.launcher.get("cpus_per_task"), cores=os.cpu_count() or 1)
    if spec.train.workers is None:
        spec = replace(spec, train=replace(spec.train, workers=default_workers(share.threads)))
    with job_slot(Path(hydra_cfg.sweep.dir) / ".submitit" / "slots", share=share):
        yield spec


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra edge: label multirun jobs for W&B, run, and turn failures into one line + exit code.

    Returns the monitored metric's best val value (what a sweeper such as Optuna optimises). In a
    multirun a failed job returns NaN instead of raising, so the remaining jobs still run;
    SweepSummary then lists the failures and exits non-zero."""
    started = job_started()
    quiet_other_ranks()  # under torchrun: rank 0's console only
    # A sweep's own labels are defaults: the config, then the user's WANDB_* variables, win.
    for key, value in job_labels(sweep_name=cfg.get("sweep_name")).items():
        if cfg.logger.get(key) is None and not (key in ENV and from_env(key)):
            cfg.logger[key] = value
    own_dir = HydraConfig.get().runtime.output_dir  # claimed for this launch (training/claim.py)
    # Same command again -> continue its unfinished run: look among the package's own run dirs
    # (outputs/<date>/<time>); a run dir the user names is its own run (None: nothing searched).
    search = None if is_multirun() else resume_search_root(Path(own_dir))
    cfg.output_dir = share_run_dir(own_dir)
    if search is not None and is_main_process():
        sweep_dead_starts(search)  # outputs/ keeps only runs
    try:
        spec = parse_config(cfg)  # before torch loads: a bad value fails at once
        from peft_food.training.pipeline import (
            run,  # torch, transformers and peft load only now
        )

        with local_share(spec) as spec:
            record = run(spec, resume_search=search, started=started)
    except Interrupted as err:
        print(f"peft-food-train: {err}", file=sys.stderr)
        sys.exit(128 + err.signum)
    except UserError as err:
        # A user mistake: one line that names the problem and the fix, no traceback.
        print_error("peft-food-train", err)
        if is_multirun():
            record_failure(cfg, err)  # the sweep's summary lists the failed job from its record
            return float("nan")
        if is_main_process():
            forget_run_dir(Path(str(cfg.output_dir)))
        sys.exit(2)
    except Exception as err:
        if not is_multirun():
            raise
        log.exception("job failed: %s", err)
        record_failure(cfg, err)
        return float("nan")
    if is_main_process():
        print(json.dumps(record.summary()))
    return objective(record)


def cli() -> None:
    """The console script (cli/preflight.py: --help, the checks, then Hydra)."""
    console_script(main, command=TRAIN, config_name="train")


if __name__ == "__main__":
    cli()
