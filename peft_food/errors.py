"""Errors that mean "the user asked for something that cannot work": shown as one line, no traceback."""


class UserError(Exception):
    """Base class: the CLI prints `peft-food: error: <message>` and exits non-zero."""


class ConfigError(UserError, ValueError):
    """A config value that is missing, mistyped or out of range."""


class DataError(UserError):
    """A dataset that cannot be found, read or labelled."""


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless `ok`: how every config check states its rule."""
    if not ok:
        raise ConfigError(message)
