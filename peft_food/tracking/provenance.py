"""Where a run came from: the git commit (and whether the checkout was dirty), package versions,
hardware and the command, as the record's `provenance` holds them.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from peft_food.tracking.record import Provenance

PACKAGES = (
    "peft-food",
    "torch",
    "torchvision",
    "transformers",
    "peft",
    "datasets",
    "hydra-core",
    "wandb",
    "numpy",
    "pillow",
)


def git_state(path: Path) -> dict[str, Any]:
    """Commit of the checkout holding `path`, whether its tracked files differ from that commit
    (`dirty`), and how many untracked files it has (None each outside a git checkout).

    Untracked files do not make a run dirty: the docs' own `my_conf/` and `exported/` (and any
    outputs/ a .gitignore misses) would otherwise mark every later run "with uncommitted changes"
    though the code that ran is the commit's."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        status = git("status", "--porcelain", "--untracked-files=all").splitlines()
        untracked = sum(line.startswith("??") for line in status)
        return {"sha": git("rev-parse", "HEAD"), "dirty": len(status) > untracked, "untracked": untracked}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None, "untracked": None}


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
        "torch_threads": torch.get_num_threads(),  # a local sweep job's share of the cores (training/cores.py)
        "platform": platform.platform(),
    }


def provenance(*, precision: str, world_size: int, effective_batch_size: int) -> Provenance:
    return Provenance(
        git=git_state(Path(__file__).resolve().parent),
        versions=package_versions(),
        hardware=hardware(),
        command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        precision=precision,
        world_size=world_size,
        effective_batch_size=effective_batch_size,
    )
