"""Bad config values fail before any training, with one line that names the problem and the fix."""

import subprocess
import sys

import pytest
from hydra.errors import HydraException

from peft_food.config import parse_config
from peft_food.errors import ConfigError, DataError
from peft_food.training.pipeline import train
from tests.helpers import TINY, compose_config


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
    ],
)
def test_out_of_range_values_are_rejected_when_parsed(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(compose_config(*overrides, output_dir="/tmp/unused"))


@pytest.mark.parametrize("override", ["peft=foo", "peft.r=abc", "peft.rank=8", "train.epochz=1"])
def test_unknown_choices_keys_and_types_fail_at_composition(override):
    with pytest.raises(HydraException):
        compose_config(override)


def test_unknown_target_module_lists_the_real_names_and_trains_nothing(tmp_path):
    cfg = compose_config(*TINY, "logger=none", "peft.target_modules=[query,attention_out]", output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert "'attention_out'" in str(err.value)
    assert "q_proj" in str(err.value) and "v_proj" in str(err.value)
    assert not (tmp_path / "checkpoints").exists()


def test_missing_data_directory_is_a_data_error(tmp_path):
    cfg = compose_config(*TINY, "logger=none", "data=imagefolder", f"data.root={tmp_path / 'nope'}",
                         output_dir=tmp_path / "run")
    with pytest.raises(DataError, match="is not a directory"):
        train(cfg)


def cli(*args: str, cwd) -> subprocess.CompletedProcess:
    exe = [sys.executable, "-m", "peft_food"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_prints_one_line_and_no_traceback_for_a_bad_value(tmp_path):
    done = cli("model=vit_tiny", "logger=none", "peft.r=0", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "peft-food-train: error: peft.r=0 is invalid: r of peft=lora must be positive (e.g. peft.r=16)"
    ]
    assert "Traceback" not in done.stdout + done.stderr


def test_cli_lists_the_options_for_an_unknown_method(tmp_path):
    done = cli("peft=foo", cwd=tmp_path)
    assert done.returncode != 0
    assert "Could not find 'peft/foo'" in done.stderr
    listed = [line.strip() for line in done.stderr.split("Available options in 'peft':")[1].splitlines()]
    assert {"full", "linear_probe", "bitfit", "lora", "dora", "loha", "lokr", "ia3", "vera", "oft"} <= set(listed)
    assert "Traceback" not in done.stderr
