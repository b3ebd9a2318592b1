"""The command line a new user types: `peft-food <command>`, flags where Hydra takes key=value, a value
of the wrong type, a path with a typo or one level off. Each is one line naming the fix, before torch
(or the data, or W&B) starts: `-X importtime` lists every module a command imported."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import peft_food.cli.train as train_cli
from peft_food.cli.commands import COMMANDS
from peft_food.cli.help import TRAIN, help_text, quickstart_time
from peft_food.cli.preflight import preflight
from peft_food.config import CONF_DIR
from peft_food.errors import ConfigError
from tests.helpers import NO_WANDB, REPO, offline_env

HEAVY = {"torch", "transformers", "peft", "datasets", "wandb"}


def run_cli(module: str, *args: str, cwd) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`python -X importtime -m <module> args` in `cwd`, and the modules it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=offline_env(cwd / "home"),
        timeout=120,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    done.stderr = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))
    return done, imported


def test_peft_food_runs_every_console_script_and_its_help_imports_nothing_heavy(tmp_path):
    # pyproject.toml's [project.scripts] (tomllib is 3.11+, and the project runs on 3.10).
    table = (REPO / "pyproject.toml").read_text().split("[project.scripts]\n")[1].split("\n\n")[0]
    scripts = dict(re.findall(r'^([\w-]+) = "([^"]+)"', table, flags=re.M))
    assert scripts.pop("peft-food") == "peft_food.cli.commands:cli"
    assert scripts == {f"peft-food-{name}": f"peft_food.cli.{module}:cli" for name, (module, _) in COMMANDS.items()}
    done, imported = run_cli("peft_food.cli.commands", "--help", cwd=tmp_path)
    assert done.returncode == 0 and imported and not imported & HEAVY
    listed = [line.split()[0] for line in done.stdout.split("Commands:")[1].strip().splitlines()[: len(COMMANDS)]]
    assert listed == list(COMMANDS)
    done, _ = run_cli("peft_food.cli.commands", "trian", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"peft-food: error: 'trian' is not a command: did you mean train? choose one of {', '.join(COMMANDS)}"
    ]
    # The rest of the line goes to the command, which answers under its own name.
    done, imported = run_cli("peft_food.cli.commands", "train", "--epochs", "3", cwd=tmp_path)
    assert done.returncode == 2 and not imported & HEAVY
    assert done.stderr.strip().splitlines() == [
        "peft-food-train: error: --epochs is not an option: config keys are set as key=value, here train.epochs=3"
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "3"], "--epochs is not an option: config keys are set as key=value, here train.epochs=3"),
        (["--batch-size=64"], "here train.batch_size=64"),
        (["--fp16"], "--fp16 is not an option: config keys are set as key=value, here train.precision=fp16"),
        (["--frobnicate"], "--frobnicate is not an option: set config keys as key=value (--help lists"),
        (
            ["train.lr=abc"],
            "train.lr=abc: train.lr takes a number (Value 'abc' of type 'str' could not be converted to Float): "
            "e.g. train.lr=0.005 (its value now)",
        ),
        (["peft=full", "train.lr=abc"], "e.g. train.lr=5.0e-05 (its value now)"),  # the value the method gives it
        (["peft.r=x"], "peft.r=x: peft.r takes a whole number (Value 'x'"),
        (["data.uint8=maybe"], "data.uint8 takes true or false (Value 'maybe' is not a valid bool (type str)): e.g. "),
    ],
)
def test_a_flag_or_a_value_of_the_wrong_type_names_the_override_that_works(argv, message):
    with pytest.raises(ConfigError) as err:
        preflight(argv, config_name="train", prog="peft-food-train")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("module, starts", [("train", "peft-food-train: "), ("predict", "usage: peft-food-predict")])
def test_dash_help_is_help(tmp_path, module, starts):
    """argparse reads `-help` as `-h elp` and refuses it; it is --help."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.argv[0] = 'x'; from peft_food.cli.{module} import cli; cli()",
            "-help",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith(starts)


def food101_folder(root):
    """A folder in Food-101's layout: images/<class>/<id>.jpg, meta/{classes,train,test}.txt."""
    (root / "images" / "pizza").mkdir(parents=True)
    (root / "images" / "pizza" / "1.jpg").write_bytes(b"")
    (root / "meta").mkdir()
    for name, text in {"classes.txt": "pizza", "train.txt": "pizza/1", "test.txt": "pizza/1"}.items():
        (root / "meta" / name).write_text(text + "\n")
    return root


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "data=imagefolder", "data.root=photoz"],
            "peft-food-train: error: data.root='photoz' is not a directory (did you mean photos?): point it at",
        ),
        (
            ["train", "data=imagefolder", "data.root=food-101"],
            "peft-food-train: error: data.root='food-101' is in Food-101's layout (images/ and meta/): use "
            "data=food101_local data.root=food-101",
        ),
        (
            ["train", "data=food101_local", "data.root=food-101/images"],
            "peft-food-train: error: data.root='food-101/images' is inside a Food-101 folder: pass the folder "
            "holding images/ and meta/, data.root=food-101",
        ),
        (
            ["predict", "outputs/2026-01-01/10-00-01", "dinner.jpg"],
            "peft-food-predict: error: outputs/2026-01-01/10-00-01 does not exist (did you mean "
            "outputs/2026-01-01/10-00-00?): pass a run dir",
        ),
        (
            ["export", "outputs/2026-01-01/10-00-01", "exported"],
            "peft-food-export: error: outputs/2026-01-01/10-00-01 does not exist (did you mean",
        ),
        (
            ["reproduce", "experiments/quickstrat"],
            "peft-food-reproduce: error: experiments/quickstrat/experiment.yaml is missing (did you mean "
            "experiments/quickstart?)",
        ),
    ],
)
def test_a_wrong_path_is_one_line_before_torch_the_data_or_wandb_start(tmp_path, args, message):
    (tmp_path / "photos" / "pizza").mkdir(parents=True)
    food101_folder(tmp_path / "food-101")
    (tmp_path / "outputs" / "2026-01-01" / "10-00-00").mkdir(parents=True)
    (tmp_path / "experiments" / "quickstart").mkdir(parents=True)
    done, imported = run_cli("peft_food.cli.commands", *args, *([NO_WANDB] if args[0] == "train" else []), cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(message), line
    assert imported and not imported & HEAVY
    assert sorted(p.name for p in (tmp_path / "outputs" / "2026-01-01").iterdir()) == ["10-00-00"]  # no run dir made


def test_the_quickstart_duration_is_one_measured_figure_in_readme_help_and_its_config():
    figure = quickstart_time()  # conf/experiment/quickstart.yaml's `# Takes:` line
    assert re.fullmatch(r"about \d+ minutes? on a \d+-core [\w ]+ CPU", figure), figure
    readme, shown = (REPO / "README.md").read_text(), help_text(TRAIN)
    assert f"## Quickstart (offline, {figure})" in readme and figure in shown
    config = (Path(CONF_DIR) / "experiment" / "quickstart.yaml").read_text()
    claims = [
        line
        for text in (readme, shown, train_cli.__doc__, config)
        for line in text.splitlines()
        if "quickstart" in line.lower() and re.search(r"\d+ minutes?|a minute|minutes", line)
    ]
    assert claims and all(figure in line for line in claims), claims  # no other duration claimed
