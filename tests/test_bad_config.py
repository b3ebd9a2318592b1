"""Bad config values fail before any training, with one line that names the problem and the fix."""

import shutil
import subprocess
import sys

import pytest
from hydra.errors import HydraException

from peft_food.errors import ConfigError, DataError, UserError
from peft_food.training.pipeline import train
from tests.helpers import NO_WANDB, TINY_QUIET, compose_config, offline_env, spec_of


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["peft.r=0"], "peft.r=0 is invalid"),
        (["peft.r=-4"], "peft.r=-4 is invalid"),
        (["peft.alpha=0"], "peft.alpha=0 is invalid"),
        (["peft.dropout=1.5"], "peft.dropout=1.5 is invalid"),
        (["peft.method=dora"], "peft method 'dora' is unknown"),
        (["train.precision=fp8"], "choose one of fp16, bf16, fp32"),
        (["data=food101_local"], "data.root is missing"),
        (["data=imagefolder"], "data.root is missing"),
        (["train.metrics=[accuracy,f1]"], r"train.metrics has unknown \['f1'\]: choose from accuracy, top5_accuracy"),
        (["train.metrics=[accuracy]", "train.monitor=macro_f1"], "train.monitor='macro_f1' is not computed"),
        (["data.store=true", "data.cache=true"], "data.store and data.cache both keep decoded pixels: choose one"),
        (["data.store_side=4"], "data.store_side=4 is invalid"),
        (
            ["train.lr_scheduler=cosine_with_min_lr"],
            "train.lr_scheduler='cosine_with_min_lr' is invalid: choose one of linear, cosine, cosine_with_restarts",
        ),
        (["train.label_smoothing=1"], r"train.label_smoothing=1.0 is invalid: use a value in \[0, 1\)"),
        (["train.early_stopping_patience=-1"], "train.early_stopping_patience=-1 is invalid"),
        (["train.mixup_alpha=-0.2"], "train.mixup_alpha=-0.2 is invalid"),
        (["train.eval_steps=0"], "train.eval_steps=0 is invalid"),
        (
            ["data.protocol=retrain", "train.early_stopping_patience=2"],
            "train.early_stopping_patience=2 reads val, and data.protocol=retrain has none: drop it",
        ),
        (["data.protocol=retrain", "train.eval_steps=50"], "train.eval_steps=50 reads val, and data.protocol=retrain"),
        (
            ["data.protocol=retrain", "train.lr_scheduler=reduce_lr_on_plateau"],
            "train.lr_scheduler=reduce_lr_on_plateau reads val",
        ),
    ],
)
def test_out_of_range_values_are_rejected_when_parsed(overrides, message):
    with pytest.raises(ConfigError, match=message):
        spec_of(*overrides)


@pytest.mark.parametrize("override", ["peft=foo", "peft.r=abc", "peft.rank=8", "train.epochz=1"])
def test_unknown_choices_keys_and_types_fail_at_composition(override):
    with pytest.raises(HydraException):
        compose_config(override)


def test_unknown_target_module_lists_the_real_names_and_trains_nothing(tmp_path):
    cfg = compose_config(*TINY_QUIET, "peft.target_modules=[query,attention_out]", output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert "'attention_out'" in str(err.value)
    assert "q_proj" in str(err.value) and "v_proj" in str(err.value)
    assert not (tmp_path / "checkpoints").exists()


def test_missing_data_directory_is_a_data_error(tmp_path):
    cfg = compose_config(*TINY_QUIET, "data=imagefolder", f"data.root={tmp_path / 'nope'}", output_dir=tmp_path / "run")
    with pytest.raises(DataError, match="is not a directory"):
        train(cfg)


def cli(*args: str, cwd) -> subprocess.CompletedProcess:
    exe = [sys.executable, "-m", "peft_food"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_prints_one_line_and_no_traceback_for_a_bad_value(tmp_path):
    done = cli("model=vit_tiny", NO_WANDB, "peft.r=0", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "peft-food-train: error: peft.r=0 is invalid: r of peft=lora must be positive (e.g. peft.r=16)"
    ]
    assert "Traceback" not in done.stdout + done.stderr


def test_cli_lists_the_options_for_an_unknown_method(tmp_path):
    done = cli("peft=foo", cwd=tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("peft-food-train: error: peft=foo is not an option: choose one of ")
    listed = set(line.split("choose one of ")[1].split(", "))
    assert {"full", "linear_probe", "bitfit", "lora", "dora", "loha", "lokr", "ia3", "vera", "oft"} <= listed


HIDE_SUBMITIT = "import sys; sys.modules['hydra_plugins.hydra_submitit_launcher'] = None; "


@pytest.mark.parametrize(
    "args, fix",
    [
        (["+modle=vit_tiny"], "modle is not a config key (did you mean model?): the top-level keys are model, peft,"),
        (["+sweep=lora_rank_alpha"], "+sweep=lora_rank_alpha is a sweep: run it with -m (peft-food-train -m +sweep="),
        (["peft.rank=8"], "peft.rank is not a key of peft: its keys are method, r, alpha,"),
        (["+peft.rank=8"], "peft.rank is not a key of peft (LoraSpec): its keys are method, r, alpha,"),
        (["peft.r=4,8"], "peft.r=4,8 is a sweep: add -m"),
        (["logger.mode=online"], "run `wandb login`, or pass logger.mode=offline"),
        (["hub.push=true", "hub.repo_id=me/food"], "no Hugging Face token: set HF_TOKEN or run `hf auth login`"),
        (["-m", "hub.push=true", "hub.repo_id=me/food", "peft.r=4,8"], "with -m would push every job over one repo"),
        (["-m", "hydra/launcher=slurm", "peft.r=4,8"], "there is no srun here: run it on the cluster's login node"),
        (
            ["-m", "hydra/launcher=slurm", "peft.r=4,8", HIDE_SUBMITIT],
            "hydra/launcher=slurm needs the submitit launcher plugin: pip install 'peft-food[slurm]'",
        ),
    ],
)
def test_a_typo_or_a_missing_prerequisite_is_one_line_before_any_run_dir(tmp_path, args, fix):
    if "hydra/launcher=slurm" in args and shutil.which("srun"):
        pytest.skip("on a SLURM machine the launcher works")
    env = offline_env(tmp_path / "home")  # no ~/.netrc: no W&B key anywhere
    prelude = "".join(a for a in args if a == HIDE_SUBMITIT)
    overrides = [a for a in args if a != HIDE_SUBMITIT]
    command = [
        sys.executable,
        "-c",
        prelude + "import sys; from peft_food.cli.train import cli; sys.argv[0] = 'x'; cli()",
    ]
    done = subprocess.run(
        [*command, *overrides, "experiment=quickstart"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("peft-food-train: error: ") and fix in line
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
    assert not list(tmp_path.rglob("metrics.json"))


@pytest.mark.parametrize(
    "args, fix",
    [
        (["peft.r=0"], "peft.r=0 is invalid"),  # refused before Hydra makes the run dir
        (
            ["data=imagefolder", "data.root=photos", NO_WANDB],
            "data.root='photos' is not a directory",
        ),  # the path too (cli/preflight.py: check_root), before torch or the run dir
    ],
)
def test_a_config_error_leaves_no_run_dir(tmp_path, args, fix):
    (tmp_path / "outputs" / "2026-01-01" / "09-00-00").mkdir(parents=True)  # an earlier run of the project
    env = offline_env(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-m", "peft_food", "experiment=quickstart", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("peft-food-train: error: ") and fix in line
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "outputs").rglob("*")) == [
        "outputs/2026-01-01",
        "outputs/2026-01-01/09-00-00",
    ]


def test_every_method_refuses_a_method_name_not_its_own():
    """Each spec checks `peft.method` against the name it is registered under (its class default)."""
    from peft_food.methods import METHODS

    for name, spec in METHODS.items():
        with pytest.raises(UserError, match=rf"^peft.method='other' does not match peft={name}$"):
            spec(method="other")
