"""Committed experiment records re-run and check themselves; same seed, same numbers on CPU."""

import json
import shutil

import pytest
from omegaconf import OmegaConf

from peft_food.config import parse_config
from peft_food.reproduce import main as reproduce
from peft_food.train import train
from tests.conftest import MINI, REPO, TINY, compose_config

QUICKSTART = REPO / "experiments" / "quickstart"


def test_same_config_and_seed_give_the_same_accuracy_to_the_last_digit(tmp_path):
    first = train(compose_config(*TINY, "logger=none", output_dir=tmp_path / "a"))
    second = train(compose_config(*TINY, "logger=none", output_dir=tmp_path / "b"))
    assert first.epochs == second.epochs
    other_seed = train(compose_config(*TINY, "logger=none", "seed=7", output_dir=tmp_path / "c"))
    assert other_seed.epochs != first.epochs


def test_committed_quickstart_record_reproduces(tmp_path, capsys):
    assert reproduce([str(QUICKSTART), "--out", str(tmp_path)]) == 0
    assert "reproduced within tolerance" in capsys.readouterr().out


def test_altered_record_fails_and_shows_the_difference(tmp_path, capsys):
    altered = tmp_path / "experiments" / "quickstart"
    shutil.copytree(QUICKSTART, altered)
    metrics_file = altered / "runs" / "run" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    true_value = metrics["epochs"][1]["eval_accuracy"]
    metrics["epochs"][1]["eval_accuracy"] = round(true_value + 0.01, 4)
    metrics_file.write_text(json.dumps(metrics))

    assert reproduce([str(altered), "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "NOT reproduced" in out
    assert f"epoch 2 eval_accuracy recorded {true_value + 0.01:.6g}, now {true_value:.6g}" in out


def test_records_awaiting_a_gpu_say_how_to_fill_them(capsys):
    assert reproduce([str(REPO / "experiments" / "seed_lora")]) == 2
    err = capsys.readouterr().err
    assert "no recorded results yet" in err and "peft-food-train experiment=seed_lora" in err


@pytest.mark.slow
def test_committed_mini_sweep_record_reproduces_on_the_real_photos(tmp_path, capsys):
    if not MINI.is_dir():
        pytest.skip(f"{MINI} not present")
    assert reproduce([str(REPO / "experiments" / "mini_rank_alpha"), "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("MATCH") == 4


@pytest.mark.slow
def test_committed_methods_by_backbones_record_reproduces_one_run_per_backbone(tmp_path, capsys):
    if not MINI.is_dir():
        pytest.skip(f"{MINI} not present")
    subset = REPO / "experiments" / "mini_methods"
    record = tmp_path / "record"
    (record / "runs").mkdir(parents=True)
    shutil.copy(subset / "experiment.yaml", record / "experiment.yaml")
    for name in ["modelvit_tiny_peftoft", "modeldeit_tiny_peftlokr", "modeldinov2_tiny_peftvera",
                 "modelswin_tiny_peftia3"]:
        shutil.copytree(subset / "runs" / name, record / "runs" / name)
        config = OmegaConf.load(record / "runs" / name / "config.yaml")
        config.data.root = str(MINI)  # the copy lives outside the repo: point at the photos directly
        OmegaConf.save(config, record / "runs" / name / "config.yaml")
    assert reproduce([str(record), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.count("MATCH") == 4


def test_pending_methods_by_backbones_record_holds_every_job_of_the_grid():
    record = REPO / "experiments" / "methods_backbones"
    meta = OmegaConf.load(record / "experiment.yaml")
    assert meta.status == "awaiting a run on GPU"
    assert meta.command == "peft-food-train -m +sweep=methods_backbones"
    pairs = set()
    for config_file in (record / "runs").glob("*/config.yaml"):
        config = OmegaConf.merge(OmegaConf.load(config_file), {"output_dir": "unused"})
        spec = parse_config(config)  # every job's config is valid as committed
        assert spec.model.pretrained and spec.data.eval_split == "validation"
        pairs.add((spec.model.name, spec.peft.label))
    models = {"vit_base", "vit_base_in1k", "deit_small", "dinov2_small", "swin_t"}
    methods = {"full", "linear_probe", "bitfit", "lora", "dora", "loha", "lokr", "ia3", "vera", "oft"}
    assert pairs == {(m, p) for m in models for p in methods}
