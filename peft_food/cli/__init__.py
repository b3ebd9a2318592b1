"""Command line: one thin module per console script. Each parses its arguments, calls the stage
that does the work, and turns a user mistake into one line (`one_line_errors`).
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

from peft_food.errors import UserError


def print_error(prog: str, err: BaseException) -> None:
    """A user mistake as one line on stderr: `<prog>: error: <what is wrong and the fix>`."""
    print(f"{prog}: error: {err}", file=sys.stderr)


def one_line_errors(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """A command's `main` with its user mistakes (UserError) printed as `<prog>: error: <message>` on
    stderr and exit status 2, no traceback; the one epilogue every command shares."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except UserError as err:
                print_error(prog, err)
                return 2

        return run

    return wrap


def exit_with(main: Callable[[], int]) -> None:
    """The console script: exit with what `main` returns. `-help` is --help (argparse would read it
    as -h with the argument "elp" and refuse it)."""
    sys.argv[1:] = ["--help" if arg == "-help" else arg for arg in sys.argv[1:]]
    sys.exit(main())


def add_trust_flag(parser: argparse.ArgumentParser) -> None:
    """`--trust-remote-code`, the one flag under which a command that loads a saved model runs Python
    code the model or its base names (predict, export and push alike)."""
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code the saved model or its base names (auto_map); never without this flag",
    )
