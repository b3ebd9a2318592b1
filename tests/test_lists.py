"""Lists written by hand (tables in README.md and docs/, conf comments, docstrings) checked against what they list:
the method registry, the packaged conf/ groups and the package tree. Each failure names what is
missing and where, so a new method, backbone, sweep or module cannot leave a stale list behind."""

import re
from pathlib import Path

import pytest
import yaml

from peft_food.config import CONF_DIR
from peft_food.methods import METHODS
from tests.helpers import REPO, compose_config
from tests.pages import section

CONF = Path(CONF_DIR)
PACKAGE = REPO / "peft_food"
CODE = re.compile(r"`([^`]+)`")


def options(group: str) -> set[str]:
    """The options of a config group: one YAML file each in peft_food/conf/<group>/."""
    return {path.stem for path in (CONF / group).glob("*.yaml")}


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows of `text`, keyed by their first cell (cells stripped)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


def names_in(cell: str) -> set[str]:
    """The backticked names of a table cell, `(default)` and other prose dropped."""
    return set(CODE.findall(cell))


def test_every_registered_method_has_its_config_and_every_config_a_registered_method():
    files = options("peft")
    missing = sorted(set(METHODS) - files)
    assert not missing, f"registered in peft_food/methods but no peft_food/conf/peft/<name>.yaml: {missing}"
    for name in sorted(files):
        method = compose_config(f"peft={name}").peft.method
        assert method in METHODS, (
            f"peft_food/conf/peft/{name}.yaml composes method={method!r}, which no class in "
            f"peft_food/methods registers (registered: {sorted(METHODS)})"
        )


@pytest.mark.parametrize("group", ["model", "peft", "data", "logger", "experiment", "recipe", "sweep"])
def test_readme_configuration_table_names_every_option_of_each_group(group):
    key = f"`+{group}=`" if group == "sweep" else f"`{group}=`"
    rows = table_rows(section("Configuration"))
    assert key in rows, f"docs Configuration table has no {key} row"
    listed, present = names_in(rows[key][1]), options(group)
    assert listed == present, (
        f"docs Configuration, row {key}: missing {sorted(present - listed)} "
        f"(in peft_food/conf/{group}/), naming {sorted(listed - present)} that do not exist"
    )


def test_readme_methods_table_has_a_row_per_config_file():
    rows = table_rows(section("Methods and backbones"))
    listed = {CODE.match(first).group(1) for first in rows if CODE.match(first)}
    missing = sorted(options("peft") - listed)
    assert not missing, f"docs 'Methods and backbones' method table has no row for peft={missing}"


def test_readme_backbone_table_names_every_model_config():
    text = section("Methods and backbones")
    start = text.index("| `model=` |")
    table = text[start : text.index("\n\n", start)]
    listed = set().union(*(names_in(row[0]) for row in table_rows(table).values()))
    present = options("model")
    assert listed >= present, (
        f"docs 'Methods and backbones' backbone table misses model={sorted(present - listed)} "
        f"(in peft_food/conf/model/)"
    )
    assert listed - {"model="} <= present, (
        f"docs backbone table names {sorted(listed - present - {'model='})}, not in peft_food/conf/model/"
    )


def test_train_yaml_option_lists_in_comments_are_complete():
    """A `defaults:` line's comment that lists options (`a | b | c`) lists them all; the methods
    are not listed there but pointed at (`peft-food-train --help` reads them from conf/peft/)."""
    defaults = yaml.safe_load((CONF / "train.yaml").read_text())["defaults"]
    groups = [next(iter(entry)) for entry in defaults if isinstance(entry, dict)]
    for line in (CONF / "train.yaml").read_text().splitlines():
        match = re.match(r"\s*- (\w+): \S+\s+#\s*(.*)", line)
        if not match or match.group(1) not in groups or "|" not in match.group(2):
            continue
        group, listed = match.group(1), {name.strip() for name in match.group(2).split("|")}
        assert listed == options(group), (
            f"peft_food/conf/train.yaml, comment on `{group}:`: missing {sorted(options(group) - listed)}, "
            f"naming {sorted(listed - options(group))} that do not exist"
        )


def stage_modules(stage: Path) -> set[str]:
    """What the Architecture table must name for a stage: its modules and its subpackages."""
    modules = {path.name for path in stage.glob("*.py") if path.name not in ("__init__.py", "__main__.py")}
    return modules | {f"{path.name}/" for path in stage.iterdir() if (path / "__init__.py").exists()}


STAGES = sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists())


@pytest.mark.parametrize("stage", STAGES)
def test_readme_architecture_row_names_every_module_of_its_stage(stage):
    rows = table_rows(section("Architecture"))
    key = f"`{stage}/`"
    assert key in rows, f"docs Architecture table has no row for peft_food/{stage}/"
    row = rows[key][1]
    named = set(re.findall(r"[\w/]+\.py|\w+/", row)) | {f"{word}.py" for word in names_in(row)}
    missing = sorted(stage_modules(PACKAGE / stage) - named)
    assert not missing, f"docs Architecture, row {key}: does not name {missing}"


def test_readme_architecture_names_every_top_level_module():
    rows = table_rows(section("Architecture"))
    named = set().union(*(names_in(cells[0]) for cells in rows.values()))
    present = {path.name for path in PACKAGE.glob("*.py") if path.name not in ("__init__.py", "__main__.py")}
    assert present <= named, f"docs Architecture table has no row naming peft_food/{sorted(present - named)}"


def test_methods_docstring_names_every_registered_method():
    import peft_food.methods

    words = set(re.findall(r"\w+", peft_food.methods.__doc__))
    missing = sorted(set(METHODS) - words)
    assert not missing, f"peft_food/methods/__init__.py docstring's families do not name {missing}"
