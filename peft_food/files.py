"""Files on disk, safely, for every stage: an exclusive lock a process holds while it works, and
writes that readers see whole or not at all. Torch-free.

- `FileLock`: flock on a lock file, released by the kernel if its holder dies (no stale locks).
  The data store's build waits for it (other jobs then reuse what the builder wrote); a run dir's
  lock refuses a second process at once, naming the holder it wrote into the file; `holder_of`
  asks who holds one without taking it.
- `write_atomic`: a temp file beside the target, fsync, rename over it (POSIX rename is atomic), with
  the mode the umask gives (mkstemp's 0600 would hide the file from a teammate).
- `share_safetensors`: the same mode for the .safetensors files that transformers, peft, Trainer's
  checkpoints and this package write through safetensors, which creates them 0600.
- `point_latest`: `outputs/latest` and `multirun/latest`, the newest finished run or sweep as a line.
- `disk_full`: whether a failed write was a full disk (each library says so differently), as a
  one-line `DiskFull` naming the path and what to do.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import Any, Callable

from peft_food.errors import UserError


class LockBusy(Exception):
    """Another live process holds the lock; `holder` is what it wrote into the lock file."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


class FileLock:
    """An exclusive flock on `path` (created if missing) from __enter__ to __exit__.

    wait: block until the holder is done (`on_wait` is called first, to say so); otherwise raise
    LockBusy at once. holder: written into the file once held (who holds it). remove: delete the
    file on release (only for locks nobody waits on: a waiter would hold a deleted file's lock)."""

    def __init__(
        self,
        path: Path,
        *,
        wait: bool,
        on_wait: Callable[[], None] | None = None,
        holder: str | None = None,
        remove: bool = False,
    ):
        self.path, self.wait, self.on_wait, self.holder, self.remove = path, wait, on_wait, holder, remove
        self._fd: int | None = None

    def __enter__(self) -> "FileLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not self.wait:
                holder = os.read(fd, 4096).decode(errors="replace")
                os.close(fd)
                raise LockBusy(holder) from None
            if self.on_wait:
                self.on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        if self.holder is not None:
            os.ftruncate(fd, 0)
            os.write(fd, self.holder.encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            if self.remove:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)  # drops the flock
            self._fd = None


def holder_of(path: Path) -> str | None:
    """What the live holder of `path`'s lock wrote into it, or None when nobody holds it (no file,
    or one a dead process left): asks the kernel without taking the lock or touching the file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 4096).decode(errors="replace")
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the previous file or this one, never part of one."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # the umask decides the mode
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# outputs/latest (the newest finished run's dir) and multirun/latest (the newest finished sweep's), as
# a line of text (README, Predicting: `RUN=$(cat outputs/latest)`). A file, not a link: a link to a dir
# would put that run's model/, checkpoints/ and wandb/ among `outputs/*/*`, which resuming and users'
# scripts read as run dirs.
LATEST = "latest"


def point_latest(search_root: Path, *, run_dir: Path) -> None:
    """Write `search_root/latest`: `run_dir` (a run or sweep that has just finished), relative to the
    folder holding `search_root` (where the commands run), written atomically. `ls -d outputs/*/* |
    tail -1` would pick outputs/reproduce/ or outputs/bench/ instead, and `ls multirun/*/* | tail -1`
    whatever sorts last, finished or not."""
    where = os.path.relpath(run_dir.resolve(), search_root.resolve().parent)
    write_atomic(search_root / LATEST, f"{where}\n".encode())


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (the directory entry, not only the file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def umask_mode() -> int:
    """The mode a new file gets from the process's umask (0644 under umask 022), read without
    changing the umask (os.umask sets it, racing every thread that creates a file meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # no /proc (macOS): set and restore at once, private meanwhile
    os.umask(mask)
    return 0o666 & ~mask


def share_safetensors(folder: Path) -> None:
    """Give every .safetensors under `folder` the mode the umask gives any other file: safetensors
    writes through a private temp file, so its files come out 0600, unreadable to a teammate while
    the rest of the run beside them is not. Call it on a folder just saved into."""
    mode = umask_mode()
    for path in folder.rglob("*.safetensors"):
        if not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)


# A full disk, as each writer reports it: OSError ENOSPC/EDQUOT, safetensors' "os error 28", and torch.save's
# RuntimeError, which names no cause ("unexpected pos 576 vs 534"): that one is told by the free space left.
_FULL = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")
NEARLY_FULL_BYTES = 2**20  # a write that fills a disk leaves less than a block or so


class DiskFull(UserError):
    """A write failed for want of space; the message is one line: where, and what to do."""


def disk_full(err: BaseException, *, where: Path) -> DiskFull | None:
    """`err` as a DiskFull if a full disk (the one holding `where`) caused it, else None."""
    import errno
    import shutil

    chain = [err, *(e for e in (err.__cause__, err.__context__) if e is not None)]
    said = any(
        getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(t in str(e) for t in _FULL) for e in chain
    )
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    if not said and not (isinstance(err, (OSError, RuntimeError)) and free is not None and free < NEARLY_FULL_BYTES):
        return None
    path = next((e.filename for e in chain if getattr(e, "filename", None)), None) or where
    left = f", {free / 2**20:.1f} MiB free" if free is not None else ""
    return DiskFull(
        f"no space left on the disk holding {path}{left}: free space there (old runs' checkpoints/ "
        f"under outputs/ are the largest files) and run the same command again to resume, or start "
        f"over on another disk with hydra.run.dir=DIR"
    )
