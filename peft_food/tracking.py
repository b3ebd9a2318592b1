"""Records of a run: where it came from (git, versions, hardware) and its W&B run.

One W&B run per training job, opened here and finished by the caller even on error: HF's
WandbCallback only opens a run when none is active and never finishes it, so in a Hydra multirun
every job after the first would otherwise log into the first job's run.
"""

from __future__ import annotations

import logging
import netrc
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from peft_food.config import LoggerSpec
from peft_food.record import Provenance

log = logging.getLogger(__name__)

PACKAGES = ("peft-food", "torch", "torchvision", "transformers", "peft", "datasets",
            "hydra-core", "wandb", "numpy", "pillow")


# --- provenance ----------------------------------------------------------------------------


def git_state(path: Path) -> dict[str, Any]:
    """Commit and dirty flag of the checkout holding `path` (None outside a git checkout)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()

    try:
        return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def provenance(*, precision: str, world_size: int, effective_batch_size: int) -> Provenance:
    return Provenance(git=git_state(Path(__file__).resolve().parent), versions=package_versions(),
                      hardware=hardware(), command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                      precision=precision, world_size=world_size, effective_batch_size=effective_batch_size)


# --- W&B -----------------------------------------------------------------------------------


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


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(spec: LoggerSpec) -> str:
    """An explicit logger.mode wins, then WANDB_MODE; otherwise online only with credentials."""
    if spec.mode:
        return spec.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if has_wandb_credentials() else "offline"


def start_wandb(*, spec: LoggerSpec, run_dir: Path, config: dict[str, Any], tags: list[str], metrics: list[str],
                run_id: str | None = None):
    """Open this job's own W&B run under `run_dir/wandb`, or return None for logger=none.
    `run_id` of an interrupted run resumes that W&B run instead of forking a new one."""
    if not spec.enabled:
        return None
    import wandb

    mode = resolve_mode(spec)
    run = wandb.init(
        project=spec.project,
        entity=spec.entity,
        group=spec.group,
        name=spec.name,
        tags=sorted({*spec.tags, *tags}),
        mode=mode,
        dir=str(run_dir),
        config=flatten(config),
        # A job that died without finishing must not swallow the next job's metrics.
        reinit="finish_previous",
        id=run_id,
        resume="allow" if run_id else None,
    )
    # Eval metrics are plotted per epoch; Trainer's train/loss keeps train/global_step.
    # (Exact names: they take precedence over the "*" -> global_step rule the callback adds.)
    run.define_metric("train/epoch")
    for name in dict.fromkeys([*metrics, "loss"]):
        run.define_metric(f"eval/{name}", step_metric="train/epoch")
    if mode == "offline":
        log.warning("W&B: no API key found, logging offline to %s (upload later: wandb sync %s)",
                    run.dir, Path(run.dir).parent)
    return run


def finish_wandb(run, *, summary: dict[str, Any], failed: bool) -> None:
    if run is None:
        return
    run.summary.update(summary)
    run.finish(exit_code=1 if failed else 0)

