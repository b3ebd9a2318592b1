"""A run's W&B run, opened here and finished by the caller even on error.

One W&B run per training job: HF's WandbCallback only opens a run when none is active and never
finishes it, so in a Hydra multirun every job after the first would otherwise log into the first
job's run. Trainer's metrics reach the run through `WandbMetrics`, not that callback, so the run's
config is ours alone. The user's WANDB_* environment is honoured unless the config says otherwise
(`wandb_settings`).

An online run that cannot start (W&B unreachable, a malformed or rejected key) fails once, within
INIT_TIMEOUT_S (or WANDB_INIT_TIMEOUT), with one line naming logger.mode=offline: wandb's own
default waits 90 s per attempt, and its retries can take minutes before a traceback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from peft_food.config import DEFAULTS, ENV, LoggerSpec, from_env
from peft_food.errors import UserError, first_line
from peft_food.tracking.login import require_login, resolve_mode
from peft_food.tracking.record import RunRecord

log = logging.getLogger(__name__)


# --- W&B -----------------------------------------------------------------------------------

# How long an online run waits for W&B to answer at start (wandb's own default: 90 s).
INIT_TIMEOUT_S = 30.0


class WandbUnavailable(UserError):
    """W&B could not start the run's online W&B run: the message says how to log offline."""


def init_timeout() -> float:
    """WANDB_INIT_TIMEOUT where the user set it (wandb's own variable), else INIT_TIMEOUT_S."""
    try:
        return float(os.environ.get("WANDB_INIT_TIMEOUT") or INIT_TIMEOUT_S)
    except ValueError:
        return INIT_TIMEOUT_S


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"peft": {"r": 8}} -> {"peft.r": 8}: the keys W&B's table, grouping and parallel plots use."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def wandb_settings(spec: LoggerSpec, *, run_dir: Path, tags: list[str]) -> dict[str, Any]:
    """wandb.init's arguments, each from the config if set there, else the user's WANDB_*
    environment, else this package's default; WANDB_TAGS are merged with the config's and ours."""
    settings = {
        key: next((v for v in (getattr(spec, key), from_env(key), DEFAULTS.get(key)) if v is not None), None)
        for key in ENV
    }
    settings["dir"] = settings["dir"] or str(run_dir)
    env_tags = [t.strip() for t in (os.environ.get("WANDB_TAGS") or "").split(",") if t.strip()]
    settings["tags"] = sorted({*spec.tags, *env_tags, *tags})
    settings["mode"] = resolve_mode(spec)
    return settings


def start_wandb(
    *,
    spec: LoggerSpec,
    run_dir: Path,
    config: dict[str, Any],
    tags: list[str],
    metrics: list[str],
    split: str = "val",
    run_id: str | None = None,
):
    """Open this job's own W&B run (its files under `run_dir/wandb` unless WANDB_DIR or
    logger.dir say otherwise), or return None for logger=none. `config` is all the run's W&B
    config holds; `split`: what the per-epoch evaluation is named (val/accuracy). `run_id` of an interrupted run resumes that W&B run instead of forking a new one."""
    if not spec.enabled:
        return None
    require_login(spec)  # one line, not wandb's 32 (the CLI asks before the run dir; train(cfg) here)
    import wandb

    settings = wandb_settings(spec, run_dir=run_dir, tags=tags)
    Path(settings["dir"]).mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(
            **settings,
            config=flatten(config),
            # A job that died without finishing must not swallow the next job's metrics.
            reinit="finish_previous",
            id=run_id,
            resume="allow" if run_id else None,
            settings=wandb.Settings(init_timeout=init_timeout(), **console_settings(settings["mode"])),
        )
    except wandb.errors.Error as err:
        wandb.teardown()  # its footer now, not after the error line at exit
        raise unavailable(err, mode=settings["mode"]) from None
    # Trainer's train/* scalars are plotted against train/global_step, every val metric per epoch.
    # (Exact names take precedence over the "*" rule.)
    run.define_metric("train/global_step")
    run.define_metric("*", step_metric="train/global_step", step_sync=True)
    run.define_metric("train/epoch")
    for name in dict.fromkeys([*metrics, "loss"]):
        run.define_metric(f"{split}/{name}", step_metric="train/epoch")
    if settings["mode"] == "offline":
        log.warning("W&B: no API key found, logging offline to %s", Path(run.dir).parent)
    return run


# The user's own say over W&B's console output, which this package then leaves alone.
CONSOLE_VARIABLES = ("WANDB_SILENT", "WANDB_QUIET")


def console_settings(mode: str) -> dict[str, bool]:
    """W&B's own console lines, cut to what the package does not say itself: offline runs print
    nothing of W&B's (its ~35 lines: header, history, summary, two sync hints; the package says where
    the run is and, once it has finished, the one `wandb sync` command: finish_wandb); online runs
    keep the run's link and drop the history and summary panels. WANDB_SILENT / WANDB_QUIET win."""
    if any(os.environ.get(name) for name in CONSOLE_VARIABLES):
        return {}
    return {"silent": True} if mode == "offline" else {"quiet": True}


def unavailable(err: BaseException, *, mode: str) -> WandbUnavailable:
    """wandb.init's error (its first line: wandb's own runs to several) with the way out."""
    where = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    if mode != "online":
        return WandbUnavailable(
            f"W&B could not start a {mode} run: {first_line(err)}; pass logger=none to train without W&B"
        )
    return WandbUnavailable(
        f"W&B could not start an online run at {where}: {first_line(err)}; check WANDB_API_KEY "
        f"and the network (`wandb login --relogin`), or pass logger.mode=offline to log offline "
        f"(upload later with `wandb sync`)"
    )


class WandbMetrics(TrainerCallback):
    """Trainer's logs into this run, named as transformers' WandbCallback names them (train/loss,
    train/global_step) but for the per-epoch evaluation, named by its split (val/accuracy; eval/
    under the seed protocol), without what that callback also does: merge every
    TrainingArguments field and the model config into the run's config (143 keys beside ours,
    `learning_rate` beside `train.lr`), so the run's config stays the resolved Hydra config."""

    # Whole-run figures go to the summary, not the history (as WandbCallback does).
    SUMMARY_ONLY = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")

    def __init__(self, run: Any, *, split: str = "val"):
        self.run, self.split = run, split

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        from transformers.integrations.integration_utils import rewrite_logs

        self.run.summary.update({k: v for k, v in logs.items() if k in self.SUMMARY_ONLY})
        history = rewrite_logs({k: v for k, v in logs.items() if k not in self.SUMMARY_ONLY})
        history = {f"{self.split}/{k[5:]}" if k.startswith("eval/") else k: v for k, v in history.items()}
        self.run.log({**history, "train/global_step": state.global_step})


def log_model(run: Any, *, model_dir: Path, record: RunRecord, base: str) -> None:
    """The saved model as a W&B artifact (type model, aliases best and latest): everything
    peft-food-predict and peft-food-export need, so a downloaded artifact dir loads like a run's
    model/. Offline runs stage it for `wandb sync`."""
    import wandb

    metadata = {
        "method": record.method,
        "base_model": base,
        "monitor": record.monitor,
        "best": record.best,
        "trainable_params": record.counts.trainable_params if record.counts else None,
        "num_labels": len(record.labels),
    }
    artifact = wandb.Artifact(
        name=f"model-{run.id}",
        type="model",
        metadata=metadata,
        description=f"{record.method} on {base}: best {record.monitor} {record.best}",
    )
    # File by file, as add_dir would add them: add_dir prints a line of its own.
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        artifact.add_file(str(path), name=path.relative_to(model_dir).as_posix())
    run.log_artifact(artifact, aliases=["best", "latest"])


def finish_wandb(run, *, summary: dict[str, Any], failed: bool) -> None:
    """Finish the run; an offline one that did not fail says, once, how to upload it (a failed start's
    run dir may be removed next: training/rundir.py)."""
    if run is None:
        return
    run.summary.update(summary)
    run.finish(exit_code=1 if failed else 0)
    if run.settings.mode in ("offline", "dryrun") and not failed:
        log.warning("W&B: upload this offline run with: wandb sync %s", run.settings.sync_dir)


def log_comparison(*, figure: Path, rows: list[dict[str, Any]], columns: list[str], name: str, out_dir: Path) -> Any:
    """One W&B run (job type `compare`) holding a sweep's comparison figure and table, named and
    placed by the user's WANDB_* variables like every run; offline without an API key."""
    import wandb

    settings = {**wandb_settings(LoggerSpec(), run_dir=out_dir, tags=["compare"]), "job_type": "compare", "name": name}
    run = wandb.init(**settings, reinit="finish_previous")
    run.log(
        {
            "compare": wandb.Image(str(figure)),
            "runs": wandb.Table(columns=columns, data=[[str(row[c]) for c in columns] for row in rows]),
        }
    )
    run.finish()
    return run
