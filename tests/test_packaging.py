"""The package at its edges: configs inside the wheel, a command line that answers at once and
prints only what was asked, user config dirs beside the packaged ones."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, compose_config, offline_env


def run(args: list[str], *, cwd: Path, env_extra: dict | None = None, timeout: int = 300):
    env = offline_env(cwd / "home", **(env_extra or {}))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_command_line_module_imports_no_torch_transformers_peft_or_datasets(tmp_path):
    heavy = "{'torch', 'transformers', 'peft', 'datasets'}"
    done = run(["-c", f"import sys, peft_food.cli.train; print(sorted({heavy} & set(sys.modules)))"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_help_is_ours_lists_every_group_and_its_options_and_no_internals(tmp_path):
    done = run(["-m", "peft_food", "--help"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "schema" not in out and "Hydra" in out  # Hydra's own help is one option away
    for group in ("model", "peft", "data", "train", "logger", "experiment"):
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{group}="))
        listed = {name.rstrip("*") for name in line.split("=", 1)[1].replace(",", " ").split()}
        assert listed == {p.stem for p in (REPO / "peft_food" / "conf" / group).glob("*.yaml")}, group
    assert "lora*" in out and "vit_base*" in out  # the defaults are marked
    examples = [line for line in out.split("Examples:")[1].splitlines() if line.strip().startswith("peft-food-train")]
    assert len(examples) == 5
    for example in examples:  # every example composes as written
        command = example.split("#")[0].split()[1:]
        compose_config(*[arg for arg in command if arg != "-m" and "," not in arg])


@pytest.mark.parametrize("mode", [None, "offline", "online", "disabled"])
def test_cfg_job_prints_valid_yaml_in_every_wandb_mode(tmp_path, mode):
    done = run(
        ["-m", "peft_food", "--cfg", "job", "experiment=quickstart"],
        cwd=tmp_path,
        env_extra={"WANDB_MODE": mode} if mode else {},
    )
    assert done.returncode == 0, done.stderr
    job = yaml.safe_load(done.stdout)
    assert job["model"]["name"] == "vit_tiny" and job["data"]["source"] == "synthetic"
    assert job["train"]["epochs"] == 8 and "hydra" not in job
    assert not (tmp_path / "outputs").exists()  # printing a config trains nothing


USER_MODEL = """\
# A user's own backbone, extending the packaged toy ViT (searched through --config-dir).
defaults:
  - vit_tiny
  - _self_

name: my_vit
arch:
  num_hidden_layers: 2
"""

USER_EXPERIMENT = """\
# @package _global_
defaults:
  - override /model: my_vit
  - override /data: synthetic

data: {num_classes: 3, per_class: 8, val_per_class: 4, test_per_class: 4, image_size: 32}
train: {epochs: 1, batch_size: 8, grad_accum: 1, precision: fp32, workers: 0}
logger: {enabled: false}
"""


@pytest.mark.slow
def test_a_built_wheel_installed_elsewhere_trains_and_takes_a_users_config_dir(tmp_path):
    wheels = tmp_path / "wheels"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = wheels.glob("peft_food-*.whl")
    site = tmp_path / "site"  # the wheel alone, not the checkout: its deps come from this venv
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    user = elsewhere / "my_conf"
    (user / "model").mkdir(parents=True)
    (user / "experiment").mkdir()
    (user / "model" / "my_vit.yaml").write_text(USER_MODEL)
    (user / "experiment" / "my_exp.yaml").write_text(USER_EXPERIMENT)
    env = {"PYTHONPATH": str(site)}

    where = run(["-c", "import peft_food; print(peft_food.__file__)"], cwd=elsewhere, env_extra=env)
    assert where.stdout.strip().startswith(str(site))  # the installed copy, not the checkout

    job = run(["-m", "peft_food", "--cfg", "job", "experiment=quickstart"], cwd=elsewhere, env_extra=env)
    assert job.returncode == 0, job.stderr[-2000:]
    assert yaml.safe_load(job.stdout)["model"]["name"] == "vit_tiny"

    # One training run from the installed copy, the user's experiment: it trains on the packaged
    # configs (its model extends the packaged vit_tiny, its data is the packaged synthetic group)
    # and takes the user's config dir; the packaged quickstart composes above.
    mine = run(
        ["-m", "peft_food", "--config-dir", str(user), "experiment=my_exp"], cwd=elsewhere, env_extra=env, timeout=600
    )
    assert mine.returncode == 0, mine.stderr[-2000:]
    [record] = elsewhere.glob("outputs/*/*/metrics.json")
    assert '"status": "completed"' in record.read_text()
    summary = yaml.safe_load(mine.stdout.strip().splitlines()[-1])
    assert summary["num_labels"] == 3 and summary["status"] == "completed"
    # 2 layers x (q, v) x 2 x 64 x r=16 + a 3-way head of 64 x 3 + 3
    assert summary["trainable_params"] == 2 * 2 * 2 * 64 * 16 + 64 * 3 + 3


def test_the_installed_distribution_declares_its_apache_licence_authors_urls_and_classifiers():
    from importlib import metadata

    meta = metadata.metadata("peft-food")
    assert meta["License-Expression"] == "Apache-2.0" and meta.get_all("License-File") == ["LICENSE"]
    assert meta["Author"] == "peft_food developers"
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL"))
    assert set(urls) == {"Homepage", "Repository", "Issues"}
    classifiers = meta.get_all("Classifier")
    assert "Topic :: Scientific/Engineering :: Image Recognition" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.1") for c in classifiers)
    # The licence file the metadata names is the Apache 2.0 text (whole: its last section too).
    [shipped] = [f for f in metadata.distribution("peft-food").files if f.name == "LICENSE"]
    for text in (shipped.read_text(), (REPO / "LICENSE").read_text()):
        assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
        assert "END OF TERMS AND CONDITIONS" in text and "http://www.apache.org/licenses/LICENSE-2.0" in text


def test_pip_show_lists_the_licence_with_the_pip_the_readme_installs(tmp_path):
    """pip reads License-Expression (PEP 639, what the package declares) from the version README's
    License section names; the README's install upgrades pip to it before installing."""
    readme = (REPO / "README.md").read_text()
    install = readme.split("## Install")[1].split("```bash")[1].split("```")[0]
    assert install.index("pip install --upgrade pip") < install.index("pip install -e")
    floor = tuple(int(n) for n in re.search(r"lists it with pip (\d+)\.(\d+) or newer", readme).groups())
    done = run(["-m", "pip", "show", "peft-food"], cwd=tmp_path)
    version = tuple(
        int(n) for n in re.match(r"pip (\d+)\.(\d+)", run(["-m", "pip", "--version"], cwd=tmp_path).stdout).groups()
    )
    assert done.returncode == 0, done.stderr
    assert ("License-Expression: Apache-2.0" in done.stdout) == (version >= floor), (version, done.stdout)


@pytest.mark.parametrize(
    "prog, groups, keys",
    [
        ("peft-food-prepare", ["model", "data", "experiment"], ["data.root=", "data.store_dir="]),
        (
            "peft-food-bench",
            ["model", "peft", "data", "train", "experiment"],
            ["bench.sections=", "bench.train_steps="],
        ),
    ],
)
def test_prepare_and_bench_help_list_their_groups_and_keys_without_internals_or_torch(tmp_path, prog, groups, keys):
    script = Path(sys.executable).parent / prog  # the installed console script itself
    done = run(["-X", "importtime", str(script), "--help"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.startswith(f"{prog}: ") and "schema" not in out and "--hydra-help" in out
    for group in groups:
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{group}="))
        listed = {name.rstrip("*") for name in line.split("=", 1)[1].replace(",", " ").split()}
        assert listed == {p.stem for p in (REPO / "peft_food" / "conf" / group).glob("*.yaml")}, group
    assert all(key in out for key in keys)
    # -X importtime lists every module imported: the help imported no torch stack at all.
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert imported and not imported & {"torch", "transformers", "peft", "datasets"}
    assert not (tmp_path / "outputs").exists()


def test_the_packages_own_deprecations_fail_the_suite_and_only_named_warnings_are_ignored(pytestconfig):
    # pytest applies pyproject's filterwarnings inside each test: a deprecation raised from (or
    # attributed to) a peft_food module is an error here, not a silenced line.
    for category in (DeprecationWarning, FutureWarning):
        with pytest.raises(category):
            warnings.warn_explicit("old", category, filename="peft_food/x.py", lineno=1, module="peft_food.x")
    for entry in pytestconfig.getini("filterwarnings"):
        action, message, category, module = (entry.split(":") + ["", "", ""])[:4]
        if action == "ignore":  # a named warning of a named library, never a whole category
            assert message and category and module and not module.startswith("peft_food"), entry
