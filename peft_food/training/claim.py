"""Each launch's own run dir, claimed before Hydra writes into it. Torch-free: Hydra loads
`ClaimRunDir` (train.yaml's hydra.callbacks) in the command-line process.

Hydra names a run dir to the second (`outputs/<date>/<time>`) and makes it with exist_ok, so two
launches in one second would share one: the second would write its .hydra/ over the first's, and
its clean-up would remove the first's run. `ClaimRunDir` runs before Hydra makes the dir and makes
it itself with os.mkdir, which fails when the name is taken; a name made from the clock (`${now:...}`)
then becomes the next free one beside it (`<time>-01`, `-02`, ...). A name the user gives
(`hydra.run.dir=B`) is that run's own dir, made here or there already.

Either way the launch locks the dir at once (the `.lock` a run holds while it trains, released by
the kernel when the process dies) and remembers whether it made it: a launch removes only a dir it
made, and the dir of a launch that died during start-up (no live holder, nothing of a run in it) is
told from another launch's fresh one, which its live process holds.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from peft_food.errors import UserError
from peft_food.files import FileLock, LockBusy, holder_of
from peft_food.tracking.record import LOCK, RECORD_FILE, RunRecord

log = logging.getLogger(__name__)

# Suffixes tried after a clock-made name is taken: `12-00-00-01` sorts after `12-00-00`, before `12-00-01`.
MAX_SAME_NAME = 99


class RunDirInUse(UserError):
    """A live process holds the run dir."""


@dataclass
class Claim:
    path: Path  # absolute
    made: bool  # this launch made the dir: only then may it remove it
    fresh: bool  # named from the clock: a new run in the package's layout, never an old one
    lock: FileLock | None  # held from the claim until the run lets go of it


_claims: dict[Path, Claim] = {}  # this process's launches (a test may launch several)


def holder() -> str:
    """What a run dir's lock file says about its holder (for the "in use" line)."""
    return json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
    )


def in_use(run_dir: Path, holder_text: str) -> RunDirInUse:
    return RunDirInUse(
        f"{run_dir} is in use by a running training process ({_describe(holder_text)}); "
        f"wait for it to finish, or start a separate run with train.resume=false"
    )


def _describe(holder_text: str) -> str:
    try:
        info = json.loads(holder_text)
        return f"host {info['host']}, pid {info['pid']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def claim(path: Path, *, fresh: bool) -> Claim:
    """Make and lock this launch's run dir: `path`, or with `fresh` (a clock-made name) the first free
    name beside it. A dir the user named that a live process holds raises RunDirInUse, untouched."""
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [path, *(path.with_name(f"{path.name}-{i:02d}") for i in range(1, MAX_SAME_NAME + 1))]
    for candidate in names if fresh else [path]:
        try:
            os.mkdir(candidate)
            made = True
        except FileExistsError:
            if fresh:
                continue  # another launch's (this second's) dir
            made = False
        lock = FileLock(candidate / LOCK, wait=False, holder=holder(), remove=True)
        try:
            lock.__enter__()
        except LockBusy as busy:
            raise in_use(candidate, busy.holder) from None
        _claims[candidate] = found = Claim(path=candidate, made=made, fresh=fresh, lock=lock)
        return found
    raise UserError(
        f"{MAX_SAME_NAME + 1} runs were started in the second {path.name} under {path.parent}: "
        f"start fewer at once, or give each its own hydra.run.dir"
    )


def claimed(path: Path) -> Claim | None:
    """This process's claim on `path`, if it made one."""
    return _claims.get(Path(os.path.abspath(path)))


def take_over(path: Path) -> FileLock | None:
    """The claim's held lock on `path`, handed to the run that trains there (None: no claim here)."""
    found = claimed(path)
    if found is None or found.lock is None:
        return None
    lock, found.lock = found.lock, None
    return lock


def release(path: Path, *, remove: bool) -> bool:
    """Let go of this launch's claim on `path`; with `remove`, delete the dir if this launch made it
    (and its date folder if that is now empty). Returns whether it was removed."""
    found = claimed(path)
    if found is None:
        return False
    if found.lock is not None:
        found.lock.__exit__(None, None, None)
        found.lock = None
    if not (remove and found.made):
        return False
    shutil.rmtree(found.path, ignore_errors=True)
    if found.fresh:
        try:
            found.path.parent.rmdir()  # only if empty: other runs of that day stay
        except OSError:
            pass
    return True


def resume_search_root(run_dir: Path) -> Path | None:
    """Where the same command's unfinished runs are looked for: the package's `outputs/`, when this
    launch's run dir is a clock-made one there (outputs/<date>/<time>). A run dir the user names is its
    own run: nothing else is searched (None)."""
    found = claimed(run_dir)
    if found is None or not found.fresh:
        return None
    root = found.path.parent.parent
    return root if root.name == "outputs" else None


class ClaimRunDir(Callback):
    """Hydra callback (train.yaml): claims the run dir before Hydra makes it, and points Hydra at the
    name it got. A dir the user named that a live run holds: one line, exit 2, nothing written.
    `claim: false` (prepare.yaml): an app that writes no run dir claims none. The claim is let go when
    the app returns (a training run has taken its lock over by then: take_over)."""

    def __init__(self, claim: bool = True) -> None:
        self.claim = claim

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.claim:
            release(Path(str(config.hydra.run.dir)), remove=False)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.claim:
            return
        raw = str(OmegaConf.to_container(config.hydra.run, resolve=False)["dir"])
        wanted = Path(str(config.hydra.run.dir))
        try:
            got = claim(wanted, fresh="${now:" in raw)
        except UserError as err:
            print(f"peft-food-train: error: {err}", file=sys.stderr)
            sys.exit(2)
        if got.path != Path(os.path.abspath(wanted)):
            with read_write(config.hydra.run):
                config.hydra.run.dir = str(got.path)


# --- launches that died during start-up --------------------------------------------------------

STUB_ENTRIES = {".hydra", LOCK}
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")  # outputs/<date>/ (train.yaml's hydra.run.dir)


def holds_no_run(run_dir: Path) -> bool:
    """Only what a launch writes before training: .hydra/, its log, the lock, and at most a record
    still `starting` or `running` with no epoch (no checkpoint, no model, no W&B files)."""
    for entry in run_dir.iterdir():
        if entry.name in STUB_ENTRIES or entry.suffix == ".log":
            continue
        if entry.name != RECORD_FILE:
            return False
        try:
            record = RunRecord.load(entry)
        except UserError:
            return False  # a record this code cannot read: not ours to judge
        if record.status not in ("starting", "running") or record.epochs:
            return False
    return True


def sweep_dead_starts(search_root: Path) -> list[Path]:
    """Remove the run dirs under `search_root` (outputs/<date>/<time>) of launches that died during
    start-up: no live process holds them and they hold nothing of a run. A live launch's fresh dir is
    held by its process, so it stays. Returns the removed dirs."""
    removed = []
    for run_dir in sorted(search_root.glob("*/*/.hydra")):
        run_dir = run_dir.parent
        if DATE.fullmatch(run_dir.parent.name) and holder_of(run_dir / LOCK) is None and holds_no_run(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            removed.append(run_dir)
            try:
                run_dir.parent.rmdir()
            except OSError:
                pass
    if removed:
        log.warning(
            "removed %d run dir(s) of launches that died before training (nothing of a run in them): %s",
            len(removed),
            ", ".join(str(p) for p in removed),
        )
    return removed
