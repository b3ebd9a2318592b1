"""The run dir's life: one process at a time (a lock), resume, one dir per run (stopping on a
signal: training/signals.py).

    peft-food-train experiment=quickstart           # Ctrl-C half-way: stops cleanly, exit 130
    peft-food-train experiment=quickstart           # finds that unfinished run, continues it

`train.resume`: null/auto (continue an unfinished run of the same command if one has a
checkpoint; refuse while the same command is still training, whatever its epoch), true (require
one), false (always start fresh, beside a live copy too).

A run holds its dir's lock (`.lock`: an flock, which the kernel drops when the process dies, and
the holder's host and pid for the message) from its launch (training/claim.py) to its end, so the
same command started while the first is still training stops with one line naming the holder
instead of training into the same dir; a holder that died leaves no lock behind. A resumed run
continues in its own dir: the log Hydra started in this launch's new dir is moved over and that
stub removed, so the run dir holds the whole log, the model and the record. A launch removes only
a dir it made itself.

"The same command" is the same overrides *and* the same resolved config: an unfinished run whose
config differs (an experiment file edited since) is refused in one line naming the keys, never
continued into a record that mixes two configs. It resumes from its newest *complete* checkpoint
(Trainer writes `checkpoint-N/` in place, so a kill or a full disk can tear the newest one).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from peft_food.errors import UserError
from peft_food.files import FileLock, LockBusy, holder_of, point_latest
from peft_food.tracking.record import FILE as RECORD_FILE
from peft_food.tracking.record import LOCK, RunRecord
from peft_food.training.checkpoints import latest_checkpoint
from peft_food.training.claim import RunDirInUse, claimed, holder, in_use, release, take_over

log = logging.getLogger(__name__)

# Also named here for the pipeline: training/claim.py's RunDirInUse, checkpoints.py's latest_checkpoint.
__all__ = ["RunDirInUse", "RunDirLock", "in_use", "latest_checkpoint", "point_latest"]


def resumed_record(run_dir: Path) -> RunRecord | None:
    """The record of the launch being resumed, read once this process holds the run dir: a record
    still `running` was left by a process that died without a word, `dead` (as record.status_now
    reads it)."""
    path = run_dir / RECORD_FILE
    if not path.is_file():
        return None
    record = RunRecord.load(path)
    record.status = "dead" if record.status == "running" else record.status
    return record


# --- which run to continue -----------------------------------------------------------------------


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


# Keys a resume may change: where the launch started (output_dir), how it resumes, what is shown or
# logged, and the DataLoader processes (the data and its order are the seed's). train.epochs may grow.
RESUME_MAY_CHANGE = ("output_dir", "train.resume", "progress", "logger.", "train.workers")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _ran_with(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config the unfinished run trained with: its record's, else Hydra's copy."""
    path = run_dir / RECORD_FILE
    if path.is_file() and (config := RunRecord.load(path).config):
        return config
    try:
        saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        saved.pop("output_dir", None)  # ${hydra:...}: only Hydra's own run can resolve it
        return OmegaConf.to_container(saved, resolve=True)
    except Exception:  # no copy, or one that no longer resolves: nothing to compare against
        return None


def config_changes(run_dir: Path, *, config: dict[str, Any]) -> list[str]:
    """`key (then -> now)` for every key of the resolved config that differs from the run's own,
    except those a resume may change (train.epochs only upwards)."""
    theirs = _ran_with(run_dir)
    if theirs is None:
        return []
    old, new = _flat(theirs), _flat(json.loads(json.dumps(config, default=str)))  # as the record holds it
    changed = []
    for key in sorted(old.keys() | new.keys()):
        then, now = old.get(key, "<unset>"), new.get(key, "<unset>")
        grows = (
            key == "train.epochs" and isinstance(then, (int, float)) and isinstance(now, (int, float)) and now >= then
        )
        if then != now and not grows and not key.startswith(RESUME_MAY_CHANGE):
            changed.append(f"{key} ({_short(then)} -> {_short(now)})")
    return changed


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def refuse_changed_config(run_dir: Path, *, config: dict[str, Any] | None) -> None:
    if config is not None and (changed := config_changes(run_dir, config=config)):
        raise UserError(
            f"{run_dir} is an unfinished run of this command but its config differs: "
            f"{', '.join(changed)}; restore those values to resume it, or start a separate "
            f"run with train.resume=false"
        )


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
    """A live process training the same command (same overrides) in an older run dir, at any epoch
    (before its first checkpoint too, from its launch on), refuses this launch: one line naming its
    host and pid. Of two copies launched together, the one with the later name (`<time>-01`) stops."""
    if search_root is None or not search_root.is_dir():
        return
    mine = _overrides(run_dir)
    for other in sorted(search_root.glob("*/*"), reverse=True):
        if other.is_dir() and str(other) < str(run_dir) and (holder := holder_of(other / LOCK)) is not None:
            if _overrides(other) == mine:
                raise in_use(other, holder)


def plan_resume(
    run_dir: Path, *, mode: bool | None, search_root: Path | None, config: dict[str, Any] | None = None
) -> Path | None:
    """The run dir to continue in, or None to start fresh (mode: None = auto, True, False).
    Unless mode is False (a separate run on purpose), the same command still training elsewhere
    refuses, and so does an unfinished run of the same overrides whose resolved config differs
    from `config` (this launch's)."""
    if mode is False:
        return None
    refuse_a_second_copy(run_dir, search_root=search_root)
    found = find_resumable(run_dir, search_root=search_root)
    if found is None and mode is True:
        raise UserError(
            f"train.resume=true but no unfinished run with a checkpoint was found for this command "
            f"(looked in {run_dir} and {search_root}); drop train.resume to start fresh"
        )
    if found is not None:
        refuse_changed_config(found, config=config)
    return found


class RunDirLock:
    """Held by the process training in a run dir; a second process gets a UserError naming it. In
    this launch's own dir, the lock its launch took (training/claim.py) is carried on."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK

    def __enter__(self) -> "RunDirLock":
        self._lock = take_over(self.path.parent)
        if self._lock is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.path, wait=False, holder=holder(), remove=True)
        try:
            self._lock.__enter__()
        except LockBusy as busy:
            raise in_use(self.path.parent, busy.holder) from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)


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
    """Remove this launch's own new run dir (Hydra's .hydra/ and log in it): only one it made."""
    release(stub, remove=True)


def discard_failed_start(stub: Path) -> bool:
    """Remove this launch's run dir when its run stopped on a user mistake before training saved
    anything (no checkpoint, no model, no epoch in its record): a failed metrics.json beside a log
    is no run, and such dirs would soon outnumber the real ones. The date
    dir Hydra made for it goes too if nothing else is in it. Only a dir this launch made (a dir the
    user named that was there already stays). Returns whether it was removed."""
    if claimed(stub) is None or (stub / "checkpoints").exists() or (stub / "model").exists():
        return False
    path = stub / RECORD_FILE
    try:
        if path.is_file() and RunRecord.load(path).epochs:
            return False
    except (OSError, ValueError, TypeError, KeyError, UserError):
        return False  # a record this code cannot read: not ours to judge
    return release(stub, remove=True)
