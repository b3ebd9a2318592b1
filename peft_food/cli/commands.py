"""`peft-food <command> ...`: one entry point beside the peft-food-<command> scripts, as `accelerate`,
`hf` or `lightning` have one. It runs the same console script with the rest of the command line:

    peft-food train experiment=quickstart          # = peft-food-train experiment=quickstart
    peft-food compare multirun/latest              # = peft-food-compare multirun/latest

Only the chosen command's module is imported, so `peft-food --help` answers at once (no torch).
"""

from __future__ import annotations

import difflib
import importlib
import sys

# command -> (its module under peft_food.cli, what it does); pyproject.toml's [project.scripts]
# names each as peft-food-<command> (tests/test_command_line.py checks the two agree).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "fine-tune a ViT on Food-101 or your photos (one run, or a sweep with -m)"),
    "compare": ("compare", "a sweep's jobs side by side: table, CSV and PNG"),
    "reproduce": ("reproduce", "re-run a committed experiment record and check its numbers"),
    "predict": ("predict", "classify photos with a finished run"),
    "export": ("export", "merge a run into a standalone transformers model"),
    "push": ("push", "share a run on the Hugging Face Hub (its adapter, or the merged model)"),
    "bench": ("bench", "time the data and training path against the seed recipe"),
    "prepare": ("prepare", "build the data stores a run will read, ahead of time"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    return "\n".join(
        [
            "usage: peft-food <command> [ARGS ...]   (the same as peft-food-<command> [ARGS ...])",
            "",
            "Commands:",
            *(f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()),
            "",
            "peft-food <command> --help: that command's options.",
        ]
    )


def main(argv: list[str]) -> int:
    """Run the named command's console script with the rest of `argv`; return an exit status for
    what peft-food answers itself (help, an unknown command)."""
    if not argv or argv[0] in ("-h", "--help", "-help", "help"):
        print(usage())
        return 0 if argv else 2
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        print(
            f"peft-food: error: {name!r} is not a command: {hint}choose one of {', '.join(COMMANDS)}", file=sys.stderr
        )
        return 2
    # The command's own name as argv[0]: its errors and usage say peft-food-<command>, as its script does.
    sys.argv = [f"peft-food-{name}", *argv[1:]]
    importlib.import_module(f"peft_food.cli.{COMMANDS[name][0]}").cli()
    return 0


def cli() -> None:
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
