"""The run dir's life: one process at a time (a lock), resume, one dir per run (stopping on a
signal: training/signals.py).

    peft-food-train experiment=quickstart           # Ctrl-C half-way: stops cleanly, exit 130
    peft-food-train experiment=quickstart           # finds that unfinished run, continues it

`train.resume`: null/auto (continue an unfinished run of the same command if one has a
checkpoint; refuse while the same command is still training, whatever its epoch), true (require
one), false (always start fresh, beside a live copy too).

A run holds its dir's lock (`.lock`: an flock, which the kernel drops when the process dies, and
the holder's host and pid for the message) from start to end, so the same command started while
the first is still training stops with one line naming the holder instead of training into the
same dir; a holder that died leaves no lock behind. A resumed run continues in its own dir: the
log Hydra started in the new timestamped dir is moved over and that stub removed, so the run dir
holds the whole log, the model and the record.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

from peft_food.errors import UserError
from peft_food.files import FileLock, LockBusy, holder_of, write_atomic
from peft_food.tracking.record import FILE as RECORD_FILE
from peft_food.tracking.record import RunRecord

log = logging.getLogger(__name__)


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None


def _overrides(run_dir: Path) -> list[str] | None:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    lines = [line[2:].strip() for line in path.read_text().splitlines() if line.startswith("- ")]
    return sorted(line for line in lines if not line.startswith("train.resume="))


def _unfinished(run_dir: Path) -> bool:
    if latest_checkpoint(run_dir) is None:
        return False
    path = run_dir / RECORD_FILE
    return not path.is_file() or RunRecord.load(path).status != "completed"


def find_resumable(run_dir: Path, *, search_root: Path | None) -> Path | None:
    """This run dir if it holds an unfinished run, else the newest unfinished run of the same
    command (same overrides) among the timestamped dirs under `search_root`."""
    if _unfinished(run_dir):
        return run_dir
    if search_root is None or not search_root.is_dir():
        return None
    mine = _overrides(run_dir)
    candidates = sorted((d for d in search_root.glob("*/*") if d != run_dir and d.is_dir()), reverse=True)
    return next((d for d in candidates if _overrides(d) == mine and _unfinished(d)), None)


def refuse_a_second_copy(run_dir: Path, *, search_root: Path | None) -> None:
    """A live process training the same command (same overrides) in another run dir, at any epoch
    (before its first checkpoint too), refuses this launch: one line naming its host and pid."""
    if search_root is None or not search_root.is_dir():
        return
    mine = _overrides(run_dir)
    for other in sorted(search_root.glob("*/*"), reverse=True):
        if other != run_dir and other.is_dir() and (holder := holder_of(other / RunDirLock.FILE)) is not None:
            if _overrides(other) == mine:
                raise in_use(other, holder)


def plan_resume(run_dir: Path, *, mode: bool | None, search_root: Path | None) -> Path | None:
    """The run dir to continue in, or None to start fresh (mode: None = auto, True, False).
    Unless mode is False (a separate run on purpose), the same command still training elsewhere refuses."""
    if mode is False:
        return None
    refuse_a_second_copy(run_dir, search_root=search_root)
    found = find_resumable(run_dir, search_root=search_root)
    if found is None and mode is True:
        raise UserError(f"train.resume=true but no unfinished run with a checkpoint was found for this command "
                        f"(looked in {run_dir} and {search_root}); drop train.resume to start fresh")
    return found


# outputs/latest: the newest finished run's dir, as a line of text (README, Predicting:
# `RUN=$(cat outputs/latest)`). A file, not a link: a link to a dir would put that run's model/,
# checkpoints/ and wandb/ among `outputs/*/*`, which resuming and users' scripts read as run dirs.
LATEST = "latest"


def point_latest(search_root: Path, *, run_dir: Path) -> None:
    """Write `search_root/latest`: `run_dir`, a run that has just finished, relative to the folder
    holding outputs/ (where the commands run), written atomically. `ls -d outputs/*/* | tail -1`
    would pick outputs/reproduce/ or outputs/bench/ instead."""
    where = os.path.relpath(run_dir.resolve(), search_root.resolve().parent)
    write_atomic(search_root / LATEST, f"{where}\n".encode())


class RunDirInUse(UserError):
    """A live process holds the run dir."""


class RunDirLock:
    """Held by the process training in a run dir; a second process gets a UserError naming it."""

    FILE = ".lock"

    def __init__(self, run_dir: Path):
        self.path = run_dir / self.FILE

    def __enter__(self) -> "RunDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "since": datetime.datetime.now().isoformat(timespec="seconds")}
        self._lock = FileLock(self.path, wait=False, holder=json.dumps(holder), remove=True)
        try:
            self._lock.__enter__()
        except LockBusy as busy:
            raise in_use(self.path.parent, busy.holder) from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)


def in_use(run_dir: Path, holder: str) -> RunDirInUse:
    return RunDirInUse(f"{run_dir} is in use by a running training process ({_describe(holder)}); "
                       f"wait for it to finish, or start a separate run with train.resume=false")


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"host {info['host']}, pid {info['pid']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def adopt_stub(stub: Path, *, run_dir: Path) -> None:
    """Continue the log Hydra opened in `stub` (this launch's new, otherwise empty run dir) in
    `run_dir`'s own log, then remove the stub: one run, one dir, the whole log."""
    if stub.resolve() == run_dir.resolve() or not stub.is_dir():
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == stub.resolve():
            handler.acquire()
            try:
                handler.flush()
                handler.close()
                started = Path(handler.baseFilename)
                target = run_dir / started.name
                with target.open("a") as log_file:
                    log_file.write(started.read_text() if started.is_file() else "")
                handler.baseFilename, handler.mode = str(target.resolve()), "a"
                handler.stream = handler._open()
            finally:
                handler.release()
    discard_stub(stub)
    log.warning("continuing in %s (this launch's new run dir %s was folded into it)", run_dir, stub)


def discard_stub(stub: Path) -> None:
    """Remove a run dir Hydra made that holds nothing of a run (only .hydra/ and its log)."""
    if stub.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in stub.iterdir()):
        shutil.rmtree(stub, ignore_errors=True)


def discard_failed_start(stub: Path) -> bool:
    """Remove this launch's run dir when its run stopped on a user mistake before training saved
    anything (no checkpoint, no model, no epoch in its record): a failed metrics.json beside a log
    is no run, and such dirs would outnumber the real ones (20 of 27 in one afternoon). The date
    dir Hydra made for it goes too if nothing else is in it. Returns whether it was removed."""
    if not stub.is_dir() or (stub / "checkpoints").exists() or (stub / "model").exists():
        return False
    path = stub / RECORD_FILE
    try:
        if path.is_file() and RunRecord.load(path).epochs:
            return False
    except (OSError, ValueError, TypeError, KeyError):
        return False  # a record this code cannot read: not ours to judge
    shutil.rmtree(stub, ignore_errors=True)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", stub.parent.name):  # outputs/<date>/ (train.yaml's hydra.run.dir)
        try:
            stub.parent.rmdir()  # only if empty: other runs of that day stay
        except OSError:
            pass
    return True
