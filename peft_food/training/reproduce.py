"""Re-running a committed experiment record and checking its numbers (the record itself, its
tolerances and the comparison: tracking/experiments.py).

    peft-food-reproduce experiments/quickstart                 # re-run, compare, exit 0 if it matches

A re-run trains each job in `<out>/<run name>/` (out: outputs/reproduce/<record>/<time>/ unless
--out says otherwise). Stopped (a signal, a failure), the same command continues it: it takes the
newest re-run of that record with a job left to do (`unfinished_rerun`), reads back the jobs
completed there and resumes the interrupted one from its last epoch checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from peft_food.errors import UserError
from peft_food.tracking.experiments import (
    Outcome,
    across_versions,
    compare,
    load_record,
    repo_root,
    version_changes,
)
from peft_food.tracking.record import RECORD_FILE, RunRecord, recorded_data


def _completed(job_dir: Path) -> RunRecord | None:
    """The record of a job a previous re-run completed in `job_dir`, else None."""
    path = job_dir / RECORD_FILE
    try:
        found = RunRecord.load(path) if path.is_file() else None
    except (OSError, ValueError, TypeError, KeyError):
        return None  # unreadable: the job runs again
    return found if found is not None and found.status == "completed" else None


def unfinished_rerun(reruns: Path, record_dir: Path) -> Path | None:
    """The newest re-run of `record_dir` under `reruns` (outputs/reproduce/<record>/) that has a job
    left to do, to continue; None when the newest one finished (or there is none): start anew."""
    dirs = sorted((d for d in reruns.glob("*") if d.is_dir()), reverse=True) if reruns.is_dir() else []
    if not dirs:
        return None
    _, runs = load_record(record_dir)
    newest = dirs[0]
    return newest if any(_completed(newest / run.name) is None for run in runs) else None


def reproduce(record_dir: Path, *, out_dir: Path, wandb: bool) -> Outcome:
    """Re-run every run of the record; return the differences beyond its tolerance: exact where
    the installed package versions are the record's, within the cross-version tolerance where not."""
    meta, runs = load_record(record_dir)
    if meta.get("status") != "recorded":
        raise UserError(
            f"{record_dir.name} has no recorded results yet ({meta.get('status')}): "
            f"run `{meta.get('command')}`, then record it with "
            f"`peft-food-reproduce {record_dir} --record <run dir>`"
        )
    from peft_food.tracking.provenance import package_versions
    from peft_food.training.pipeline import train  # heavy imports only when training, once the record is read

    installed = package_versions()
    outcome = Outcome(across=across_versions(meta))
    for number, run_dir in enumerate(runs, 1):
        recorded = RunRecord.load(run_dir / RECORD_FILE)
        numeric, other = version_changes(recorded.provenance.versions, installed)
        outcome.numeric_changes.update(numeric)
        outcome.other_changes.update(other)
        tol = outcome.across if numeric else meta["tolerance"]
        new = _completed(out_dir / run_dir.name)  # a stopped re-run continues where it was
        if new is None:
            print(f"{run_dir.name} ({number} of {len(runs)}): training in {out_dir / run_dir.name}", flush=True)
            new = train(_rerun_config(run_dir, record_dir=record_dir, out_dir=out_dir, wandb=wandb))
        found = compare(run_dir.name, recorded, new, tol)
        print(_match_line(run_dir.name, new, matched=not found, across_versions=bool(numeric)))
        outcome.diffs += found
    return outcome


def _rerun_config(run_dir: Path, *, record_dir: Path, out_dir: Path, wandb: bool) -> DictConfig:
    """The recorded run's config as a re-run trains it: its data root resolved from the checkout,
    its own output dir, W&B grouped as a reproduction, and never a push to the Hub."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.data = recorded_data(OmegaConf.to_container(cfg.data))
    if cfg.data.get("root") and not Path(cfg.data.root).is_absolute():
        cfg.data.root = str((repo_root(record_dir) / cfg.data.root).resolve())
    cfg.output_dir = str(out_dir / run_dir.name)
    cfg.logger.enabled = wandb and cfg.logger.enabled
    cfg.logger.group = f"reproduce-{record_dir.name}"
    cfg.logger.job_type = "reproduce"
    if "hub" in cfg:
        cfg.hub.push = False  # a re-run checks the numbers; it never publishes over the original
    return cfg


def _match_line(name: str, new: RunRecord, *, matched: bool, across_versions: bool) -> str:
    """One run's verdict with the re-run's numbers: the monitored value per epoch and the reported accuracy."""
    values = " ".join(f"{e[new.monitor]:.4f}" for e in new.epochs)
    check = "within the cross-version tolerance" if across_versions else "exact check"
    reported = new.reported("accuracy")
    test = (
        f"; {'test' if new.protocol != 'seed' else 'reported'} accuracy {reported:.4f}" if reported is not None else ""
    )
    return (
        f"{name}: {'MATCH' if matched else 'DIFFERS'} ({check})  {new.selected_on} "
        f"{new.monitor.removeprefix('eval_')} per epoch: {values}{test}"
    )
