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
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import Any, Callable


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

    def __init__(self, path: Path, *, wait: bool, on_wait: Callable[[], None] | None = None,
                 holder: str | None = None, remove: bool = False):
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
