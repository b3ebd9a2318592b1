"""Defaults once: the YAML under peft_food/conf/ is the source of every default and its one-line help.

The dataclasses in config.py (and methods/, data/sources.py, model/spec.py) are Hydra's schemas: they
keep field defaults only so a spec can be built in code (`TrainSpec()`, `LoraSpec(use_dora=True)`) and
a user's own YAML may leave keys out. These tests hold those copies equal to the shipped YAML, and
every key of a defaults file to one line of help, so neither can drift from the other.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from peft_food.config import CONF_DIR, SCHEMAS
from tests import pages
from tests.helpers import compose_config

CONF = Path(CONF_DIR)
# Keys that name the option itself (which backbone, which dataset), not a default: each option file
# sets its own, and the schema's value is only a placeholder for a spec built in code.
PER_OPTION = {"model": {"name", "name_or_path", "arch", "processor"}}


def schema_groups() -> dict[str, list[str]]:
    """The groups that have a schema, as config.py and methods/base.py register them with Hydra."""
    repo = ConfigStore.instance().repo["schema"]
    return {
        group.rstrip("/"): sorted(name.removesuffix(".yaml") for name in names)
        for group, names in repo.items()
        if group.rstrip("/") in SCHEMAS
    }


def chosen(group: str) -> str:
    """The option peft_food/conf/train.yaml picks for `group` (the shipped config)."""
    for entry in OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml").defaults):
        if isinstance(entry, dict) and group in entry:
            return entry[group]
    raise AssertionError(f"train.yaml picks no {group}")


def extends(path: Path, group: str, name: str) -> bool:
    return f"/schema/{group}/{name}@_here_" in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])


def defaults_files() -> list[tuple[str, str, Path]]:
    """(group, schema name, YAML file holding that schema's shipped defaults): a method's own file
    (peft/lora.yaml for schema/peft/lora), else the option train.yaml picks (train/default.yaml)."""
    found = []
    for group, names in schema_groups().items():
        for name in names:
            own = CONF / group / f"{name}.yaml"
            path = own if own.exists() and extends(own, group, name) else CONF / group / f"{chosen(group)}.yaml"
            assert extends(path, group, name), f"{path} does not extend schema/{group}/{name}"
            found.append((group, name, path))
    return found


FILES = defaults_files()
IDS = [f"{group}/{path.stem}" for group, _, path in FILES]


def schema_of(group: str, name: str) -> type:
    return SCHEMAS[group][name] if group == "peft" else SCHEMAS[group]


def field_default(field: dataclasses.Field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def test_every_schema_group_is_checked():
    assert {group for group, _, _ in FILES} == {"model", "peft", "data", "train", "logger", "hub"}
    assert len([1 for group, _, _ in FILES if group == "peft"]) == len(SCHEMAS["peft"])


@pytest.mark.parametrize(("group", "name", "path"), FILES, ids=IDS)
def test_schema_defaults_equal_the_yaml(group, name, path):
    """Each key the defaults file sets has the same value in the dataclass (composed and resolved,
    so train.lr's ${peft.recommended_lr} counts as the shipped LoRA's 5e-3)."""
    cfg = compose_config(f"{group}={path.stem}", "data=synthetic" if group != "data" else f"data={path.stem}")
    composed = OmegaConf.to_container(cfg[group], resolve=True)
    written = {key for key in OmegaConf.load(path) if key != "defaults"}
    schema = schema_of(group, name)
    drift = {}
    for field in dataclasses.fields(schema):
        if field.name not in written or field.name in PER_OPTION.get(group, ()):
            continue
        default = field_default(field)
        if default is dataclasses.MISSING:
            continue  # no copy in the dataclass: the YAML alone holds it
        value = composed[field.name]
        if default != value and str(default).lower() != str(value).lower():  # init_lora_weights: "true" / true
            drift[field.name] = (default, value)
    assert not drift, f"{schema.__name__} defaults differ from {path.relative_to(CONF)}: {drift}"
    assert written <= {f.name for f in dataclasses.fields(schema)}, f"{path} sets keys {schema.__name__} lacks"


def key_lines(path: Path) -> dict[str, tuple[int, list[str]]]:
    """Top-level keys of a YAML file -> (line number, the file's lines); but `defaults` and a method
    file's `method`, which name the file's schema rather than hold a default."""
    lines = path.read_text().splitlines()
    return {
        match.group(1): (number, lines)
        for number, line in enumerate(lines)
        if (match := re.match(r"^([A-Za-z_]\w*):", line)) and match.group(1) not in ("defaults", "method")
    }


def has_help(number: int, lines: list[str]) -> bool:
    """A trailing `# ...` on the key's own line: its one line of help."""
    return bool(re.search(r"\s#\s*\S", lines[number]))


HELPED = [(group, path) for group, _, path in FILES if group in ("train", "peft", "logger", "hub")] + [
    ("data", path)
    for path in sorted((CONF / "data").glob("*.yaml"))  # every dataset option, not only the default
]


@pytest.mark.parametrize(("group", "path"), HELPED, ids=[f"{g}/{p.stem}" for g, p in HELPED])
def test_every_default_has_one_line_of_help(group, path):
    keys = key_lines(path)
    bare = [key for key, (number, lines) in keys.items() if not has_help(number, lines)]
    assert not bare, f"{path.relative_to(CONF)}: keys without a one-line comment: {bare}"


def test_readme_table_marks_the_shipped_choices():
    """The Configuration page's group table (wherever README.md and docs/ hold it) says `(default)`
    after exactly the option train.yaml picks."""
    marked = dict(re.findall(r"^\| `(\w+)=` \| [^|]*?`(\w+)` \(default\)", pages.text(), flags=re.M))
    assert marked, "no group table with (default) marks in README.md or docs/"
    assert marked == {group: chosen(group) for group in marked}
    assert set(marked) == {"model", "peft", "data", "logger"}  # train= has the one option, default
