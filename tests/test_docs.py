"""The docs stay right: every Hydra command written in README.md or docs/ composes and passes the
checks a run gets before Hydra starts it, so a renamed key, option or sweep fails here, on the
page that still says the old one; and the README stays the front door."""

import os
import re
import shlex
import subprocess

import pytest
import yaml
from PIL import Image

from peft_food.cli.preflight import preflight
from peft_food.errors import UserError
from tests.helpers import MINI, REPO, needs_mini
from tests.pages import PAGES, blocks, section

# Each Hydra command: its config, and the top-level keys it adds (peft-food-bench's `bench`).
HYDRA = {
    "peft-food-train": ("train", ()),
    "python -m peft_food": ("train", ()),
    "torchrun": ("train", ()),
    "peft-food-prepare": ("prepare", ()),
    "peft-food-bench": ("bench", ("bench",)),
}
# What a block does before its commands that a command needs (`my_conf/` for --config-dir).
SETUP = ("mkdir ", "printf ")
# Files a page names by a placeholder path, made as a user would have them (peft's own format).
PLACEHOLDERS = {"path/to/adapter_config.json": '{"peft_type": "C3A", "block_size": 64, "target_modules": null}'}


def hydra_commands() -> list[tuple[str, str, str]]:
    """(page, its block's setup lines, command) for every Hydra command line of every page."""
    found = []
    for page, block in blocks():
        lines = [line.split("  #")[0].strip() for line in block.splitlines()]
        setup = "\n".join(line for line in lines if line.startswith(SETUP))
        found += [(str(page.relative_to(REPO)), setup, line) for line in lines if line.startswith(tuple(HYDRA))]
    return found


COMMANDS = hydra_commands()


def argv_of(command: str) -> tuple[str, list[str]]:
    """The program and its Hydra arguments, shell syntax (quotes, `&`, `> file`) and launchers removed."""
    words = shlex.split(command, comments=True)
    words = words[: next((i for i, w in enumerate(words) if w in ("&", ">", "|", "&&")), len(words))]
    if words[0] == "torchrun":  # torchrun [its flags] -m peft_food <args>
        words = ["python", *words[words.index("-m") :]]
    program = next(p for p in HYDRA if command.startswith(p) or (p == "python -m peft_food" and words[:3] == p.split()))
    return program, words[len(program.split()) :]


def test_the_pages_hold_the_commands_users_run():
    """The collection below is not empty by accident: each Hydra program has commands on the pages."""
    programs = {argv_of(command)[0] for _, _, command in COMMANDS}
    assert programs >= {"peft-food-train", "peft-food-prepare", "peft-food-bench", "python -m peft_food"}, programs
    assert len(COMMANDS) >= 40, len(COMMANDS)


# A command whose data.root is the mini photos (or stands in for Food-101 on disk) reads them.
READS_MINI = ("food101-mini", "data.root=/path/to/food-101")


@pytest.mark.parametrize(
    ("page", "setup", "command"),
    [pytest.param(*c, marks=[needs_mini] if any(m in c[2] for m in READS_MINI) else []) for c in COMMANDS],
    ids=[f"{p}: {c[:70]}" for p, _, c in COMMANDS],
)
def test_every_hydra_command_on_the_pages_composes_and_passes_its_checks(page, setup, command, tmp_path, monkeypatch):
    """Composed as the console script composes it (cli/preflight.py), from a fresh folder: a key,
    option, sweep or value the package no longer has is the one-line error a user would get."""
    monkeypatch.chdir(tmp_path)
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    if "hydra/launcher=slurm" in command:  # checked as on a login node: an `srun` on PATH, never run
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / "bin" / "srun").chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    if setup:
        subprocess.run(["bash", "-c", setup], cwd=tmp_path, check=True)
    for path, content in PLACEHOLDERS.items():
        if path in command:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(content)
    program, argv = argv_of(command)
    config_name, extra_keys = HYDRA[program]
    argv = [placed_root(arg, tmp_path) for arg in argv]
    if "hub.push=true" in command:  # no Hub from the tests: the config passes, then the push check's one line
        monkeypatch.setenv("HF_TOKEN", "hf_docs_test")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(UserError, match="^cannot push: .*HF_HUB_OFFLINE"):
            preflight(argv, config_name=config_name, prog=program, extra_keys=extra_keys)
        argv = [*argv, "hub.dry_run=true"]  # and the rest of the config, checked past the push check
    preflight(argv, config_name=config_name, prog=program, extra_keys=extra_keys)


def placed_root(arg: str, tmp_path) -> str:
    """A page's `data.root` as the page means it: a relative one from the checkout's root, and a
    placeholder `data.root=/path/to/<x>` made real, as a user's folder would be: Food-101's
    layout for `food-101` (the mini photos), else class folders holding an image each."""
    if arg.startswith("data.root=../"):  # relative to the checkout, where the pages' commands run
        return f"data.root={(REPO / arg.removeprefix('data.root=')).resolve()}"
    if not arg.startswith("data.root=/path/to/"):
        return arg
    root = tmp_path / arg.removeprefix("data.root=/")
    if root.name == "food-101":
        root.parent.mkdir(parents=True, exist_ok=True)
        root.symlink_to(MINI)
    else:
        for name in ("apple_pie", "sushi"):
            (root / name).mkdir(parents=True)
            Image.new("RGB", (32, 32), "orange").save(root / name / "1.jpg")
    return f"data.root={root}"


def test_readme_is_the_front_door():
    """README.md stays a few hundred lines: what, install, the runs, and links; the rest is a page."""
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= 300, f"README.md is {lines} lines: move the detail into a docs/ page and link it"
    assert (REPO / "docs" / "index.md") in PAGES


def nav_pages(entries) -> list[str]:
    """The pages of mkdocs.yml's nav, in order (sections flattened)."""
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_readme_documentation_table_lists_the_site_pages():
    """README's Documentation table and the site's nav name the same pages, in the same order."""
    nav = nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    listed = [
        link.removeprefix("docs/") for link in re.findall(r"^\| \[[^]]+\]\(([^)#]+)\)", section("Documentation"), re.M)
    ]
    listed = ["experiments.md" if link == "experiments/README.md" else link for link in listed]
    assert listed == [page for page in nav if page != "index.md"], (
        "README's Documentation table and mkdocs.yml's nav differ: list each docs page in both"
    )
