"""Committed experiment records: record a finished run or sweep, re-run it, check the numbers.

    peft-food-reproduce experiments/quickstart                 # re-run, compare, exit 0 if it matches
    peft-food-reproduce experiments/my_exp --record outputs/2026-11-22/10-00-00 --description "..."
    peft-food-reproduce experiments/my_gpu_exp --pending experiment=seed_lora   # config now, results later

A record is a folder: `experiment.yaml` (what it is, how it was made, its tolerance) and one
`runs/<name>/` per job holding the resolved `config.yaml` that ran and the `metrics.json` it
produced. Paths in a record (data.root) are relative to the repository root.

A re-run trains each job in `<out>/<run name>/` (out: outputs/reproduce/<record>/<time>/ unless
--out says otherwise). Stopped (a signal, a failure), the same command continues it: it takes the
newest re-run of that record with a job left to do (`unfinished_rerun`), reads back the jobs
completed there and resumes the interrupted one from its last epoch checkpoint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from peft_food.data.sources import recorded_data
from peft_food.errors import UserError, near_miss
from peft_food.tracking.record import FILE as RECORD_FILE
from peft_food.tracking.record import RunRecord, portable
from peft_food.tracking.sweep import job_records

# On the same CPU kind and the same package versions the same seed gives the same numbers to the
# last digit.
CPU_TOLERANCE = {"eval_accuracy": 0.0, "eval_loss": 1e-6}
# GPU kernels are not bit-exact across runs and cards: allow one point of accuracy.
GPU_TOLERANCE = {"eval_accuracy": 0.01, "eval_loss": 0.05}
# Another release of a package below changes float rounding somewhere (a kernel, a resize, an
# init), and training amplifies it. A record made under other versions is checked within
# ACROSS_VERSIONS: the largest per-epoch gap measured when torch moved one release (experiments/
# README.md, "Across versions"), rounded up.
ACROSS_VERSIONS = {"eval_accuracy": 0.05, "eval_loss": 0.03}
# The packages whose release can move a run's numbers; the others (wandb, hydra-core, ...) are
# reported when they differ but do not loosen the check.
NUMERIC_PACKAGES = ("python", "torch", "torchvision", "transformers", "peft", "datasets", "numpy", "pillow")
# The exact environment the committed records were made in (README, Reproducing).
LOCK_FILE = "experiments/requirements.lock"
EXACT_KEYS = (
    "trainable_params",
    "total_params",
    "num_labels",
    "num_train_samples",
    "num_eval_samples",
    "num_test_samples",
)


def tolerance(*, on_gpu: bool, monitor: str, across_versions: bool = False) -> dict[str, float]:
    """What a re-run may differ by: the monitored metric (at accuracy's tolerance) and the loss."""
    base = GPU_TOLERANCE if on_gpu else CPU_TOLERANCE
    if across_versions:
        base = {key: max(base[key], ACROSS_VERSIONS[key]) for key in base}
    return {monitor: base["eval_loss" if monitor == "eval_loss" else "eval_accuracy"], "eval_loss": base["eval_loss"]}


def version_changes(recorded: dict[str, Any], installed: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What differs between a record's package versions and the installed ones: (the changes that
    can move numbers, the others), each as "torch 2.15.0 recorded, 2.14.1 installed"."""
    changed = [name for name in recorded if name != "peft-food" and recorded[name] != installed.get(name)]
    line = [f"{name} {recorded[name]} recorded, {installed.get(name) or 'not'} installed" for name in changed]
    numeric = [text for name, text in zip(changed, line) if name in NUMERIC_PACKAGES]
    return numeric, [text for name, text in zip(changed, line) if name not in NUMERIC_PACKAGES]


def committed(record: RunRecord) -> dict[str, Any]:
    """The record as committed: without the config (config.yaml beside it holds it, portable) or
    the command line that ran it (experiment.yaml says how to run it)."""
    body = record.to_json()
    body.pop("config")
    body["provenance"]["command"] = None
    return body


def run_name(config: dict[str, Any], fallback: str) -> str:
    name = config.get("logger", {}).get("name") or fallback
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("=", ""))


def repo_root(record_dir: Path) -> Path:
    return record_dir.resolve().parent.parent


def record(source: Path, record_dir: Path, *, description: str) -> Path:
    """Write a record from a finished run dir or a multirun sweep dir."""
    if (source / RECORD_FILE).is_file():
        jobs = [(source, RunRecord.load(source / RECORD_FILE))]
    else:
        jobs = job_records(source)
    unfinished = [d.name for d, m in jobs if m.status != "completed"]
    if not jobs or unfinished:
        raise UserError(
            f"{source} has {'no runs' if not jobs else 'unfinished jobs: ' + ', '.join(unfinished)}; "
            f"record a finished run or sweep dir"
        )
    root = repo_root(record_dir)
    for job_dir, metrics in jobs:
        config = portable(metrics.config, root=root)
        out = record_dir / "runs" / run_name(config, fallback=job_dir.name if len(jobs) > 1 else "run")
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(config), out / "config.yaml")
        (out / RECORD_FILE).write_text(json.dumps(committed(metrics), indent=2) + "\n")
    first = jobs[0][1]
    on_gpu = any(m.provenance.hardware.get("gpu_count") for _, m in jobs)
    meta = {
        "description": description,
        "status": "recorded",
        "command": first.provenance.command,
        "hardware": first.provenance.hardware.get("device"),
        "tolerance": tolerance(on_gpu=on_gpu, monitor=first.monitor),
        "tolerance_across_versions": tolerance(on_gpu=on_gpu, monitor=first.monitor, across_versions=True),
    }
    OmegaConf.save(OmegaConf.create(meta), record_dir / "experiment.yaml")
    return record_dir


def record_pending(record_dir: Path, *, overrides: list[str], description: str, hardware: str) -> Path:
    """A record whose config is committed and whose results await a run (e.g. on a GPU). A sweep
    (`experiment=` or `+sweep=` with hydra.sweeper.params) gets one run config per job."""
    from hydra import compose, initialize_config_dir

    from peft_food.config import CONF_DIR, resolve
    from peft_food.tracking.sweep import grid_jobs

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        hydra_cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True).hydra
        jobs = grid_jobs(hydra_cfg) if hydra_cfg.sweeper.get("params") else [(overrides, "")]
        for job, label in jobs:
            cfg = compose(config_name="train", overrides=[*job, "output_dir=unused"])
            config = portable(resolve(cfg), root=repo_root(record_dir))
            out = record_dir / "runs" / (run_name({}, fallback=label.replace(" ", ",")) if label else "run")
            out.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(OmegaConf.create(config), out / "config.yaml")
    multirun = ["-m"] if len(jobs) > 1 else []
    meta = {
        "description": description,
        "status": f"awaiting a run on {hardware}",
        "command": " ".join(["peft-food-train", *multirun, *overrides]),
        "hardware": hardware,
        "tolerance": GPU_TOLERANCE,
        "tolerance_across_versions": tolerance(on_gpu=True, monitor="eval_accuracy", across_versions=True),
    }
    OmegaConf.save(OmegaConf.create(meta), record_dir / "experiment.yaml")
    return record_dir


def compare(name: str, recorded: RunRecord, new: RunRecord, tolerance: dict[str, float]) -> list[str]:
    """Human-readable differences beyond tolerance (empty: the run reproduced)."""
    diffs = [
        f"{name}: {key} recorded {getattr(recorded.counts, key, None)}, now {getattr(new.counts, key, None)}"
        for key in EXACT_KEYS
        if getattr(recorded.counts, key, None) != getattr(new.counts, key, None)
    ]
    if recorded.monitor not in tolerance:
        diffs.append(f"{name}: the record's monitor {recorded.monitor} has no tolerance in experiment.yaml")
    old_epochs, new_epochs = recorded.epochs, new.epochs
    if len(old_epochs) != len(new_epochs):
        diffs.append(f"{name}: {len(old_epochs)} epochs recorded, {len(new_epochs)} now")
    for old, now in zip(old_epochs, new_epochs):
        diffs += _beyond(f"{name}: epoch {old['epoch']:g}", old, now, tolerance)
    # Test, once for the selected checkpoint and once for the last epoch, at the same tolerance.
    test_tolerance = {f"test_{key.removeprefix('eval_')}": tol for key, tol in tolerance.items()}
    for checkpoint in ("best", "final"):
        old, now = ((record.test or {}).get(checkpoint) for record in (recorded, new))
        if (old is None) != (now is None):
            diffs.append(
                f"{name}: test of the {checkpoint} checkpoint {'recorded' if old else 'not recorded'}, "
                f"{'measured' if now else 'not measured'} now"
            )
        elif old is not None:
            diffs += _beyond(f"{name}: {checkpoint} checkpoint", old, now, test_tolerance)
    return diffs


def _beyond(where: str, old: dict[str, float], now: dict[str, float], tolerance: dict[str, float]) -> list[str]:
    diffs = []
    for key, tol in tolerance.items():
        gap = abs(old[key] - now[key])
        if gap > tol:
            diffs.append(
                f"{where} {key} recorded {old[key]:.6g}, now {now[key]:.6g} (|diff| {gap:.3g} > tolerance {tol:g})"
            )
    return diffs


def load_record(record_dir: Path) -> tuple[dict[str, Any], list[Path]]:
    meta_file = record_dir / "experiment.yaml"
    if not meta_file.is_file():
        raise UserError(
            f"{meta_file} is missing{near_miss(record_dir)}: pass a folder under experiments/ "
            f"(e.g. experiments/quickstart)"
        )
    runs = sorted(d for d in (record_dir / "runs").glob("*") if (d / "config.yaml").is_file())
    if not runs:
        raise UserError(f"{record_dir}/runs/ holds no run configs")
    return OmegaConf.to_container(OmegaConf.load(meta_file)), runs


@dataclass
class Outcome:
    """What a re-run of a record found: the differences beyond tolerance, and the package versions
    that differ from the record's (the numeric ones are why a check was not exact)."""

    diffs: list[str] = field(default_factory=list)
    numeric_changes: set[str] = field(default_factory=set)
    # The record's cross-version tolerance (what the check was where a numeric package differs).
    across: dict[str, float] = field(default_factory=dict)
    other_changes: set[str] = field(default_factory=set)


def across_versions(meta: dict[str, Any]) -> dict[str, float]:
    """The record's cross-version tolerance (records written before it had none: the measured one)."""
    if "tolerance_across_versions" in meta:
        return meta["tolerance_across_versions"]
    return {
        key: max(value, ACROSS_VERSIONS.get(key, ACROSS_VERSIONS["eval_accuracy"]))
        for key, value in meta["tolerance"].items()
    }


def describe(tol: dict[str, float]) -> str:
    return ", ".join(f"{key} +-{value:g}" for key, value in tol.items())


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
        new = _completed(out_dir / run_dir.name)  # a stopped re-run continues where it was
        if new is None:
            print(f"{run_dir.name} ({number} of {len(runs)}): training in {out_dir / run_dir.name}", flush=True)
            new = train(cfg)
        found = compare(run_dir.name, recorded, new, tol)
        values = " ".join(f"{e[new.monitor]:.4f}" for e in new.epochs)
        check = "within the cross-version tolerance" if numeric else "exact check"
        reported = new.reported("accuracy")
        test = (
            f"; {'test' if new.protocol != 'seed' else 'reported'} accuracy {reported:.4f}"
            if reported is not None
            else ""
        )
        print(
            f"{run_dir.name}: {'MATCH' if not found else 'DIFFERS'} ({check})  {new.selected_on} "
            f"{new.monitor.removeprefix('eval_')} per epoch: {values}{test}"
        )
        outcome.diffs += found
    return outcome


def explain_versions(outcome: Outcome) -> list[str]:
    """Lines saying which package versions differ from the record's and what that means for the check."""
    if not outcome.numeric_changes:
        lines = ["versions: the record's (exact check)"]
    else:
        lines = [
            f"versions differ from the record's: {'; '.join(sorted(outcome.numeric_changes))}",
            f"so the check is within the cross-version tolerance ({describe(outcome.across)}), not exact; "
            f"for the exact check install the versions it was made with (the committed records' "
            f"environment: pip install -r {LOCK_FILE} -e .)",
        ]
    if outcome.other_changes:
        lines.append(f"also differ (cannot move the numbers): {'; '.join(sorted(outcome.other_changes))}")
    return lines
