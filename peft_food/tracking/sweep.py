"""Sweep bookkeeping: W&B group and run names for multirun jobs, and the end-of-sweep summary.

    peft-food-train -m peft.r=4,8,16,32 peft.alpha=8,16,32      # 12 jobs, one W&B group
    peft-food-train -m +sweep=lora_rank_alpha                   # the same grid, from peft_food/conf/sweep/

Every job of a sweep shares the W&B group `<sweep_name>-<sweep dir>` and is named by the keys the
sweep varies (`r=8,alpha=32`), so the dashboard groups and labels runs with no manual setup.

Before the first job starts, every job of a grid is composed: a key one of the swept methods does
not have (`-m peft=lora,ia3 peft.r=4,16`: IA3 has no rank) stops the sweep with one line naming the
job and the keys that method takes, instead of failing halfway through.
"""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from peft_food.errors import first_line
from peft_food.files import point_latest
from peft_food.tracking.record import FILE as RECORD_FILE
from peft_food.tracking.record import RunRecord, read_or_damaged, status_now

log = logging.getLogger(__name__)


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def swept_keys(hydra_cfg: Any) -> list[str]:
    """Keys the sweep varies: `a=1,2` on the command line (as saved in multirun.yaml) and
    hydra.sweeper.params from a committed sweep file, in the order they were given."""
    keys = list(hydra_cfg.sweeper.get("params") or {})
    saved = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
    if saved.is_file():
        task = OmegaConf.load(saved).hydra.overrides.task
        parsed = OverridesParser.create().parse_overrides(list(task))
        keys += [o.key_or_group for o in parsed if o.is_sweep_override() and o.key_or_group not in keys]
    return keys


def job_labels(*, sweep_name: str | None) -> dict[str, str]:
    """W&B labels of this multirun job (empty outside a multirun): its group, its name from the
    swept keys (`r=8,seed=2`), its setting (the name without the seed: `r=8`) and job type."""
    if not is_multirun():
        return {}
    hydra_cfg = HydraConfig.get()
    values = {
        o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    }
    parts = [(key, f"{key.rsplit('.', 1)[-1]}={values[key]}") for key in swept_keys(hydra_cfg) if key in values]
    name = ",".join(part for _, part in parts) or f"job{hydra_cfg.job.num}"
    setting = ",".join(part for key, part in parts if key != "seed") or name
    sweep_dir = Path(hydra_cfg.sweep.dir)
    group = f"{sweep_name or 'sweep'}-{'_'.join(sweep_dir.parts[-2:])}"
    return {"group": group, "name": name, "setting": setting, "job_type": "sweep"}


def is_run_dir(path: Path) -> bool:
    """One run's own dir (outputs/<date>/<time>, or a sweep's job dir): Hydra's .hydra/ is in it."""
    return (path / ".hydra").is_dir()


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs of a multirun dir (each with .hydra/) or of a committed experiment record
    (experiments/<name>/runs/*, each with config.yaml), in job order; a run dir is its one job
    (its own .hydra/, which holds a config.yaml too, is no job)."""
    if is_run_dir(sweep_dir):
        return [sweep_dir]
    if (sweep_dir / "runs").is_dir():
        sweep_dir = sweep_dir / "runs"
    found = (
        d
        for d in sweep_dir.iterdir()
        if not d.name.startswith(".") and (is_run_dir(d) or (d / "config.yaml").is_file())
    )
    return sorted(found, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else d.name))


def job_records(sweep_dir: Path) -> list[tuple[Path, RunRecord]]:
    """(job dir, its record) for every job that has started (job_dirs). A job dir without
    metrics.json is `starting`; one whose metrics.json cannot be read is `damaged`; one `running`
    that no live process holds is `dead` (killed)."""
    jobs = []
    for job_dir in job_dirs(sweep_dir):
        path = job_dir / RECORD_FILE
        record = read_or_damaged(path) if path.is_file() else RunRecord(status="starting")
        record.status = status_now(job_dir, record)  # `running` with no live process: dead
        if not record.config and (job_dir / "config.yaml").is_file():  # a committed record keeps it beside
            record.config = OmegaConf.to_container(OmegaConf.load(job_dir / "config.yaml"))
        jobs.append((job_dir, record))
    return jobs


def objective(record: RunRecord) -> float:
    """What every sweeper optimises: the monitored metric's best value over the epochs, which are
    evaluated on val (never on test). Optuna gets it as the job's return value; W&B Sweeps read it
    from the run summary, as `objective_key`."""
    return float("nan") if record.best is None else record.best  # nan: nothing to optimise (retrain)


def objective_key(record: RunRecord) -> str:
    """The run-summary key holding `objective` (best_val_accuracy; best_eval_... under the seed
    protocol): the `metric.name` of a W&B sweep file."""
    return f"best_{record.selected_on}_{record.monitor.removeprefix('eval_')}"


def grid_jobs(hydra_cfg: Any) -> list[tuple[list[str], str]]:
    """(override list, label from the swept keys) of every job the basic sweeper will launch, in its
    launch order: the sweep file's params plus the command line."""
    params = [f"{key}={value}" for key, value in (hydra_cfg.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *hydra_cfg.overrides.task])
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    jobs = [list(job) for job in itertools.product(*_choices(parsed).values())]
    return [(job, " ".join(o for o in job if o.split("=", 1)[0].lstrip("+~") in swept)) for job in jobs]


def _choices(parsed: list[Override]) -> dict[str, list[str]]:
    """Each key's `key=value` choices, as Hydra's basic sweeper expands them (its split_arguments,
    through Override's public methods only): keys in the order first given (a key given again keeps
    its place, its last values win), values in sweep order; the product of these is the job list."""
    choices: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:  # interval(0,1): only a search sweeper (optuna) samples it; the basic sweeper says so
            raise HydraException(f"BasicSweeper does not support sweep type : {override.value_type.name}")
    return choices


def _method_keys(job: list[str], default: str) -> str:
    """ "peft=<option> takes k1, k2, ..." for the job's method, to say what it would accept."""
    from hydra import compose

    from peft_food.methods import keys_of

    option = next((o.split("=", 1)[1] for o in job if o.startswith("peft=")), default)
    method = compose(config_name="train", overrides=[f"peft={option}"]).peft.method
    return f"peft={option} takes {', '.join(keys_of(method)) or 'no peft.* keys'}"


def check_grid(hydra_cfg: Any) -> None:
    """Compose every job of the grid now, so a key that one swept method rejects costs nothing.
    Values are still checked by each job (a bad value fails that job alone, recorded)."""
    from hydra import compose

    for job, label in grid_jobs(hydra_cfg):
        try:
            compose(config_name="train", overrides=job)
        except Exception as err:
            reason = first_line(err)
            hint = _method_keys(job, hydra_cfg.runtime.choices.get("peft", "lora")) if "peft." in reason else ""
            print(
                f"peft-food-train: error: sweep job `{label}` is not a valid config: {reason}"
                f"{f' ({hint})' if hint else ''}; no job was run",
                file=sys.stderr,
            )
            sys.exit(2)


class SweepSummary(Callback):
    """Before the first job: every job of the grid composes. After the last: one line per failed
    job, and a non-zero exit if any job failed.

    Jobs catch their own errors so the rest of the sweep still runs (a raised exception would
    otherwise surface only as the first failure's traceback)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "BasicSweeper" in str(config.hydra.sweeper.get("_target_", "")):
            check_grid(config.hydra)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = job_records(sweep_dir)
        failed = [(d, m) for d, m in jobs if m.status != "completed"]
        log.info("sweep finished: %d of %d jobs completed (%s)", len(jobs) - len(failed), len(jobs), sweep_dir)
        # multirun/latest beside outputs/latest: the newest finished sweep (failed jobs and all, as
        # peft-food-compare shows them). Only in the default layout (multirun/<date>/<time>): a sweep
        # dir of the user's own (hydra.sweep.dir=...) has no multirun/ of ours to point from.
        if sweep_dir.parent.parent.name == "multirun":
            point_latest(sweep_dir.parent.parent, run_dir=sweep_dir)
        for job_dir, record in failed:
            log.error("job %s %s: %s", job_dir.name, record.status, record.error or "no error recorded")
        if failed:
            sys.exit(1)
