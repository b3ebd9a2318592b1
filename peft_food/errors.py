"""Errors that mean "the user asked for something that cannot work": shown as one line, no traceback;
and `Interrupted`, a run stopped on a signal after saving a checkpoint."""

import difflib
import signal
from pathlib import Path


class UserError(Exception):
    """Base class: the CLI prints `peft-food: error: <message>` and exits non-zero."""


class ConfigError(UserError, ValueError):
    """A config value that is missing, mistyped or out of range."""


class DataError(UserError):
    """A dataset that cannot be found, read or labelled."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): what a one-line
    error quotes of a library's multi-line one."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def near_miss(path: Path) -> str:
    """` (did you mean <sibling>?)` for a path that does not exist but whose folder holds a close name
    (a typo in the last part); empty otherwise."""
    try:
        names = [p.name for p in path.parent.iterdir()] if path.name else []
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1)
    return f" (did you mean {path.parent / close[0]}?)" if close else ""


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless `ok`: how every config check states its rule."""
    if not ok:
        raise ConfigError(message)


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, signum: int, checkpoint: Path | None):
        self.signum, self.checkpoint = signum, checkpoint
        where = f"last checkpoint: {checkpoint}" if checkpoint else "no checkpoint yet (first epoch unfinished)"
        super().__init__(f"stopped by {signal.Signals(signum).name}; {where}; run the same command again to resume")
