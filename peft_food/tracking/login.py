"""The user's W&B environment: what each logger key falls back to (WANDB_PROJECT, ...), which W&B
mode a run gets, and whether it can log in. Torch- and wandb-free, so the command line checks it
before Hydra makes a run dir (an online run without a key otherwise fails only once
wandb.init runs, with 32 lines ending in `UsageError: No API key configured`)."""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse

from peft_food.config import LoggerSpec
from peft_food.errors import UserError

# logger.<key> -> the environment variable cluster scripts set for it.
ENV = {
    "project": "WANDB_PROJECT",
    "entity": "WANDB_ENTITY",
    "group": "WANDB_RUN_GROUP",
    "name": "WANDB_NAME",
    "job_type": "WANDB_JOB_TYPE",
    "notes": "WANDB_NOTES",
    "dir": "WANDB_DIR",
}
DEFAULTS = {"project": "peft-food", "job_type": "train"}


def from_env(key: str) -> str | None:
    """The user's W&B environment for logger.<key> (None when unset or empty)."""
    return os.environ.get(ENV[key]) or None


def has_wandb_credentials() -> bool:
    """An API key where wandb looks for one: WANDB_API_KEY, or ~/.netrc for the W&B host."""
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


def require_login(spec: LoggerSpec) -> None:
    """An online run needs an API key: say how to log in, or how to log offline."""
    if not spec.enabled or resolve_mode(spec) != "online" or has_wandb_credentials():
        return
    asked = "logger.mode=online" if spec.mode else "WANDB_MODE=online"
    raise UserError(
        f"{asked} but no W&B API key is configured (WANDB_API_KEY or ~/.netrc): run `wandb login`, "
        f"or pass logger.mode=offline (upload later with `wandb sync`)"
    )
