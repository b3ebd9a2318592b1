"""Sharing a run on the Hub (issue 32): what would be pushed is built into a local folder and loaded
from there as a user loads the repo (peft's PeftModel, transformers' pipeline, this package's
predict), with the run's own logits; the card's metadata passes huggingface_hub's local checks; no
token or no Hub is one line before anything is built; hub.push=true acts only on a completed run.

There is no Hub here: the upload itself (create_repo, create_commit) and the Hub's own card
validation (a POST to /api/validate-yaml) are not exercised by these tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from peft_food.config import parse_config
from peft_food.data.splits import load_splits
from peft_food.data.transforms import attach_transforms, collate, normalize
from peft_food.errors import ConfigError, UserError
from peft_food.methods import METHODS
from peft_food.saved.artifacts import load_trained
from peft_food.saved.hub import read_metadata
from peft_food.saved.sharing import LABEL_MAPS, plan, stage, write_hub_card
from peft_food.tracking.record import RunRecord
from peft_food.training.pipeline import train
from tests.helpers import NO_WANDB, REPO, TINY, compose_config

HUB_BASE = "google/vit-base-patch16-224-in21k"


def eval_pixels(run_dir: Path) -> tuple[torch.Tensor, np.ndarray]:
    """The run's val images as its own eval transform makes them, and the run's logits on them."""
    trained = load_trained(run_dir)
    splits = attach_transforms(
        load_splits(parse_config(compose_config(*TINY, output_dir=run_dir)).data, seed=42), trained.processor
    )
    batch = collate([splits.val[i] for i in range(len(splits.val))])
    pixels = normalize(batch["pixel_values"], mean=trained.processor.image_mean, std=trained.processor.image_std)
    with torch.inference_mode():
        return pixels, trained.model(pixel_values=pixels).logits.numpy()


def logits_of(model: torch.nn.Module, pixels: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(pixel_values=pixels).logits.numpy()


@pytest.fixture(scope="module")
def adapter_repo(lora_run, tmp_path_factory):
    run_dir, _ = lora_run
    return stage(run_dir, tmp_path_factory.mktemp("hub") / "repo", repo_id="me/food-lora")


def test_an_adapter_run_stages_a_peft_repo_that_loads_with_peft_and_predict_as_the_run(lora_run, adapter_repo):
    from peft import PeftModel
    from transformers import AutoModelForImageClassification

    run_dir, record = lora_run
    folder = adapter_repo.folder
    assert adapter_repo.kind == "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", LABEL_MAPS, "preprocessor_config.json"} <= set(
        adapter_repo.files
    )
    assert "base/model.safetensors" in adapter_repo.files  # random-init: the base exists nowhere else
    assert adapter_repo.metadata["library_name"] == "peft"
    assert adapter_repo.metadata["pipeline_tag"] == "image-classification"
    assert "base_model" not in adapter_repo.metadata  # no Hub id to name
    pixels, run_logits = eval_pixels(run_dir)
    # As the card's snippet does: the base, then PeftModel.from_pretrained(base, repo).
    maps = json.loads((folder / LABEL_MAPS).read_text())
    base = AutoModelForImageClassification.from_pretrained(str(folder / "base"))  # snapshot_download's base/
    assert {int(k): v for k, v in maps["id2label"].items()} == base.config.id2label == dict(enumerate(record.labels))
    peft_logits = logits_of(PeftModel.from_pretrained(base, str(folder)), pixels)
    np.testing.assert_allclose(peft_logits, run_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits_of(load_trained(folder).model, pixels), run_logits, rtol=1e-5, atol=1e-5)
    assert 'PeftModel.from_pretrained(base, "me/food-lora")' in (folder / "README.md").read_text()


def test_merged_stages_the_export_that_pipeline_loads_with_the_runs_logits(lora_run, tmp_path):
    from transformers import AutoModelForImageClassification, pipeline

    from peft_food.data.synthetic import synthetic_dataset

    run_dir, record = lora_run
    staged = stage(run_dir, tmp_path / "repo", repo_id="me/food", merged=True)
    assert staged.kind == "merged" and staged.metadata["library_name"] == "transformers"
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(staged.files)
    pixels, run_logits = eval_pixels(run_dir)
    model = AutoModelForImageClassification.from_pretrained(str(staged.folder))
    np.testing.assert_allclose(logits_of(model, pixels), run_logits, rtol=1e-4, atol=1e-4)
    image = synthetic_dataset(num_classes=4, per_class=1, image_size=32, seed=0)[0]["image"]
    [top] = pipeline("image-classification", model=str(staged.folder), top_k=1)(image)
    assert top["label"] in record.labels and 0 < top["score"] <= 1


def test_a_full_run_pushes_its_model(full_run, tmp_path):
    staged = stage(full_run, tmp_path / "repo", repo_id="me/food-full")
    assert staged.kind == "merged" and "model.safetensors" in staged.files
    pixels, run_logits = eval_pixels(full_run)
    np.testing.assert_allclose(logits_of(load_trained(staged.folder).model, pixels), run_logits, rtol=1e-5, atol=1e-5)


def saved_spec(method: str, **base) -> dict:
    return {"format": 2, "method": method, "peft": asdict(METHODS[method]()), "labels": ["a", "b"], "base": base}


def test_what_each_base_and_method_pushes():
    hub = plan(saved_spec("lora", name_or_path=HUB_BASE, pretrained=True), merged=False)
    assert (hub.kind, hub.base_model, hub.notes) == ("adapter", HUB_BASE, [])
    assert plan(saved_spec("lora", name_or_path=HUB_BASE, pretrained=True), merged=True).kind == "merged"
    assert plan(saved_spec("ssf", name_or_path=HUB_BASE, pretrained=True), merged=False).kind == "merged"
    local = plan(saved_spec("lora", name_or_path="/ckpt/vit", pretrained=True), merged=False)
    assert (local.kind, local.base_model) == ("merged", None)
    [note] = local.notes
    assert "local path" in note and "merged model is pushed instead" in note
    random = plan(saved_spec("lora", name_or_path=None, pretrained=False), merged=False)
    assert random.kind == "adapter" and random.base_model is None and "base/" in random.notes[0]
    for method in ("vpt", "adaptformer", "adapter"):
        with pytest.raises(UserError, match="not a peft tuner") as refused:
            plan(saved_spec(method, name_or_path=HUB_BASE, pretrained=True), merged=False)
        assert "\n" not in str(refused.value)


def test_the_card_names_a_hub_base_as_the_adapters_and_a_broken_one_is_caught(lora_run, tmp_path):
    _, record = lora_run
    write_hub_card(record, tmp_path, repo_id="me/food", kind="adapter", base_model=HUB_BASE, notes=[])
    meta = read_metadata(tmp_path / "README.md")
    assert (meta["base_model"], meta["base_model_relation"], meta["library_name"]) == (HUB_BASE, "adapter", "peft")
    [index] = meta["model-index"]
    assert index["results"][0]["dataset"]["split"] == "generated test set"  # the reported split, named
    assert index["results"][0]["metrics"][0]["value"] == round(record.reported("accuracy"), 6)
    text = (tmp_path / "README.md").read_text()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "README.md").write_text(
        text.replace("    metrics:\n    - type: accuracy", "    metricz:\n    - type: accuracy")
    )
    with pytest.raises(UserError, match="huggingface_hub cannot read its metadata"):
        read_metadata(broken / "README.md")
    (broken / "README.md").write_text(text.replace("base_model_relation: adapter", "base_model_relation: fork"))
    with pytest.raises(UserError, match="base_model_relation must be one of"):
        read_metadata(broken / "README.md")


def test_only_a_completed_run_is_staged(lora_run, tmp_path):
    run_dir, _ = lora_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir / "model", copy / "model")
    record = RunRecord.load(run_dir / "metrics.json")
    record.status = "interrupted"
    record.write(copy / "metrics.json")
    with pytest.raises(UserError, match="says the run is interrupted: only a completed run is pushed"):
        stage(copy, tmp_path / "repo", repo_id="me/food")
    assert not (tmp_path / "repo").exists()


def push_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """peft-food-push in a fresh process; prints whether torch was imported by the time it returned."""
    code = "import sys; from peft_food.cli.push import main; rc = main(sys.argv[1:]); print('torch' in sys.modules); sys.exit(rc)"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )


@pytest.mark.parametrize("problem", ["no token", "HF_HUB_OFFLINE", "Hub unreachable"])
def test_no_token_or_no_hub_is_one_line_before_anything_is_built(lora_run, tmp_path, problem):
    run_dir, _ = lora_run
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env["HF_HOME"] = str(tmp_path / "hf_home")  # no token file `hf auth login` would have written
    if problem != "no token":
        env["HF_TOKEN"] = "hf_" + "x" * 34
    if problem == "HF_HUB_OFFLINE":
        env["HF_HUB_OFFLINE"] = "1"
    if problem == "Hub unreachable":
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: nothing listens
    done = push_cli([str(run_dir), "me/food", "--staging", str(tmp_path / "repo")], env)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    expected = "no Hugging Face token: set HF_TOKEN or run `hf auth login`" if problem == "no token" else "cannot push"
    assert line.startswith("peft-food-push: error: ") and expected in line, line
    assert done.stdout.strip() == "False"  # refused before torch (or a model) loaded
    assert not (tmp_path / "repo").exists()  # nothing staged, nothing pushed


def test_hub_push_without_a_token_stops_before_training_and_a_sweep_may_not_push(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from peft_food.cli.preflight import preflight

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))  # as with an empty HF_HOME
    cfg = compose_config(*TINY, NO_WANDB, "hub.push=true", "hub.repo_id=me/food", output_dir=tmp_path / "run")
    with pytest.raises(UserError, match="no Hugging Face token"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.json").exists()  # nothing ran
    with pytest.raises(ConfigError, match="with -m would push every job over one repo"):
        preflight(["-m", "data=synthetic", "hub.push=true", "hub.repo_id=me/food"], config_name="train", prog="t")
    with pytest.raises(ConfigError, match="hub.push=true needs hub.repo_id"):
        parse_config(compose_config(*TINY, "hub.push=true", output_dir=tmp_path / "x"))


def test_hub_push_acts_only_after_the_run_completed(tmp_path, monkeypatch, offline_wandb):
    """hub.dry_run stages where the push would start: it appears only once the record on disk says
    completed (stage reads it from there and refuses any other status), with that record's result;
    a run that fails first never gets there."""
    push = ["hub.push=true", "hub.repo_id=me/food", "hub.dry_run=true", "train.epochs=1"]
    monkeypatch.setenv("WANDB_API_KEY", "not-a-key")  # W&B refuses it at start: the run fails early
    with pytest.raises(UserError):
        train(compose_config(*TINY, *push, "logger.mode=online", output_dir=tmp_path / "failed"))
    assert RunRecord.load(tmp_path / "failed" / "metrics.json").status == "failed"
    assert not (tmp_path / "failed" / "hub").exists()
    record = train(compose_config(*TINY, *push, NO_WANDB, output_dir=tmp_path / "done"))
    card = read_metadata(tmp_path / "done" / "hub" / "README.md")
    assert RunRecord.load(tmp_path / "done" / "metrics.json").status == "completed"
    accuracy = card["model-index"][0]["results"][0]["metrics"][0]
    assert accuracy["type"] == "accuracy" and accuracy["value"] == round(record.reported("accuracy"), 6)
    assert (tmp_path / "done" / "hub" / "adapter_model.safetensors").is_file()


def test_predict_reads_a_pushed_repo_by_its_id_from_the_hub_cache(
    lora_run, adapter_repo, tmp_path, monkeypatch, capsys
):
    """`peft-food-predict <user>/<repo>`: the pushed repo as huggingface_hub keeps a download
    (models--<user>--<repo>/refs/main -> snapshots/<commit>/), read offline, predicts what the run
    dir predicts; a repo id neither local nor cached is one line, exit 2."""
    from huggingface_hub import constants

    from peft_food.cli.predict import main

    cache = tmp_path / "hub-cache"
    storage = cache / "models--me--food-lora"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(adapter_repo.folder, storage / "snapshots" / commit)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # me/food-lora is no local path here
    Image.new("RGB", (48, 40), (200, 120, 40)).save(tmp_path / "dinner.png")
    run_dir, _ = lora_run

    assert main([str(run_dir), "dinner.png", "--json"]) == 0
    from_run = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["me/food-lora", "dinner.png", "--json"]) == 0
    from_repo = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["label"] for p in from_repo[0]["predictions"]] == [p["label"] for p in from_run[0]["predictions"]]
    np.testing.assert_allclose(
        [p["score"] for p in from_repo[0]["predictions"]], [p["score"] for p in from_run[0]["predictions"]], atol=1e-6
    )

    assert main(["me/absent", "dinner.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("peft-food-predict: error: me/absent is not a local dir"), err
    assert "HF_HUB_OFFLINE" in err[0]
