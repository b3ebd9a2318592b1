"""End-to-end training on CPU with the real Trainer, real peft and real W&B (offline mode)."""

import json
import logging
import shutil

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open

from peft_food.training.pipeline import train
from tests.helpers import MINI, NO_EXAMPLES, TINY, TINY_QUIET, compose_config, needs_mini, read_run, run_files


def test_offline_run_logs_params_and_per_epoch_accuracy_to_wandb(tmp_path, offline_wandb, caplog):
    cfg = compose_config(
        *TINY, "train.epochs=3", "peft.r=4", "peft.alpha=8", "train.precision=fp16", output_dir=tmp_path
    )
    with caplog.at_level(logging.WARNING):
        record = train(cfg)

    # One W&B run, written offline under the run dir, finished cleanly.
    [run_file] = run_files(tmp_path)
    assert run_file.parent.name.startswith("offline-run-")
    wb = read_run(run_file)
    assert wb.exit_code == 0
    assert wb.summary["trainable_params"] == record.counts.trainable_params > 0
    assert wb.summary["total_params"] == record.counts.total_params
    # Flattened resolved config: the dashboard can group and plot by these.
    assert wb.config["peft.r"] == 4 and wb.config["peft.alpha"] == 8 and wb.config["method"] == "lora"
    # One val accuracy per epoch, plotted against the epoch (the split is in the name).
    evals = [(h["train/epoch"], h["val/accuracy"]) for h in wb.history if "val/accuracy" in h]
    assert evals == [(e["epoch"], e["eval_accuracy"]) for e in record.epochs]
    assert [epoch for epoch, _ in evals] == [1, 2, 3]
    for name in ("accuracy", "top5_accuracy", "macro_f1", "loss"):  # every train.metrics, per epoch
        assert wb.metrics[f"val/{name}"].step_metric == "train/epoch"
        assert sum(f"val/{name}" in h for h in wb.history) == 3
    assert not any(key.startswith(("eval/", "test/")) for h in wb.history for key in h)  # test: summary only
    assert "offline" in caplog.text and "wandb sync" in caplog.text

    # No CUDA here: fp16 falls back to fp32, says so once, and records what ran.
    if not torch.cuda.is_available():
        assert record.provenance.precision == "fp32"
        assert caplog.text.count("needs a CUDA GPU") == 1

    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["schema"] == 3 and on_disk["status"] == "completed" and on_disk["monitor"] == "eval_accuracy"
    assert on_disk["protocol"] == "val_test" and set(on_disk["test"]) == {"best", "final"}
    assert on_disk["best"]["eval_accuracy"] == max(e["eval_accuracy"] for e in on_disk["epochs"])
    assert on_disk["final"] == on_disk["epochs"][-1]
    assert wb.summary["best_val_accuracy"] == record.best == on_disk["best"]["eval_accuracy"]
    assert wb.summary["test/accuracy"] == on_disk["test"]["best"]["test_accuracy"]
    assert wb.summary["test_final/accuracy"] == on_disk["test"]["final"]["test_accuracy"]
    assert on_disk["counts"]["num_eval_samples"] == on_disk["counts"]["num_test_samples"] == 4 * 8
    assert on_disk["counts"]["num_labels"] == 4
    assert set(on_disk["provenance"]["versions"]) >= {"torch", "transformers", "peft", "datasets", "wandb"}
    assert set(on_disk["provenance"]["git"]) == {"sha", "dirty", "untracked"}
    assert "run_dir" not in on_disk  # the record lives in its run dir: no machine path in it

    # Efficiency, in the record and in W&B: throughput, memory, what ships, time per epoch.
    efficiency = on_disk["efficiency"]
    assert efficiency["train_img_per_s"] > 0 and efficiency["peak_mem_mb"] > 0
    adapter_bytes = (tmp_path / "model" / "adapter_model.safetensors").stat().st_size
    assert efficiency["model_size_mb"] == round(adapter_bytes / 2**20, 3)
    assert len(efficiency["epoch_wall_s"]) == 3 and all(t > 0 for t in efficiency["epoch_wall_s"])
    assert wb.summary["model_size_mb"] == efficiency["model_size_mb"]
    assert wb.summary["epoch_wall_s"] == efficiency["epoch_wall_s"]


def test_logger_none_writes_no_wandb_files(tiny_run):
    run_dir, record = tiny_run()  # TINY_QUIET: logger=none
    assert record.status == "completed"
    assert not (run_dir / "wandb").exists()


def test_lora_run_saves_adapter_with_trained_head_and_processor(tiny_run):
    model_dir = tiny_run()[0] / "model"
    config = json.loads((model_dir / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["classifier"] and config["r"] == 16
    assert (model_dir / "preprocessor_config.json").is_file()
    with safe_open(model_dir / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k for k in keys) and any("classifier" in k for k in keys)


def test_full_run_saves_whole_model(tiny_run):
    run_dir, record = tiny_run("peft=full")
    assert record.counts.trainable_params == record.counts.total_params
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert json.loads((run_dir / "model" / "config.json").read_text())["id2label"]["0"] == "class_0"


@pytest.mark.slow
@needs_mini
def test_food101_local_selects_on_val_and_reports_the_200_test_photos(mini_run):
    run_dir, record = mini_run  # tiny ViT, 2 epochs on food101-mini (conftest.py; test_predict's too)
    counts = record.counts
    assert (counts.num_train_samples, counts.num_eval_samples, counts.num_test_samples) == (450, 50, 200)
    assert record.counts.num_labels == 10
    assert len(record.epochs) == 2
    saved = json.loads((run_dir / "model" / "adapter_config.json").read_text())
    assert saved["modules_to_save"] == ["classifier"]
    # Val accuracy is a count over the 50 val photos, test accuracy over exactly the 200 test photos.
    for value, n in (
        (record.epochs[-1]["eval_accuracy"], 50),
        (record.reported("accuracy"), 200),
        (record.reported("accuracy", checkpoint="final"), 200),
    ):
        assert abs(value * n - round(value * n)) < 1e-9
    # Labels come from meta/classes.txt, in its order.
    classes = (MINI / "meta" / "classes.txt").read_text().split()
    assert record.labels == classes

    # The model card: Hub metadata a model page needs, and what the run was.
    card = ModelCard.load(str(run_dir / "model" / "README.md"))
    # A local folder in Food-101's layout (here 10 classes) is not the Hub's ethz/food101: no claim.
    assert (card.data.library_name, card.data.pipeline_tag, card.data.datasets) == (
        "peft",
        "image-classification",
        None,
    )
    [accuracy] = [r for r in card.data.eval_results if r.metric_type == "accuracy"]
    assert accuracy.metric_value == round(record.test["best"]["test_accuracy"], 6)
    assert accuracy.dataset_split == "test (meta/test.txt)"
    text = card.text
    assert f"{record.counts.trainable_params:,} of {record.counts.total_params:,}" in text
    assert record.provenance.git["sha"] in text and "Food-101 (Bossard" in text
    assert text.count("\n| 2 | ") == 1 and "r: 16" in text  # per-epoch table, the method's settings
    assert "test accuracy of the checkpoint with the best val accuracy (450 train / 50 val / 200 test" in text
    assert str(MINI) not in text  # no machine paths in a card meant for the Hub


def test_pretrained_from_a_local_directory_loads_its_weights_and_refuses_pickle(tmp_path):
    from transformers import (
        AutoModelForImageClassification,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    checkpoint = tmp_path / "checkpoint"
    torch.manual_seed(3)
    source = ViTForImageClassification(
        ViTConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            image_size=32,
            patch_size=4,
        )
    )
    source.save_pretrained(checkpoint)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(checkpoint)
    train(
        compose_config(
            *TINY_QUIET,
            NO_EXAMPLES,
            "train.epochs=1",
            "model.pretrained=true",
            f"model.name_or_path={checkpoint}",
            output_dir=tmp_path / "run",
        )
    )
    # LoRA leaves the backbone frozen: the saved adapter sits on exactly the checkpoint's weights.
    from peft_food.saved.artifacts import load_trained

    trained = load_trained(tmp_path / "run").model.merge_and_unload()
    reference = AutoModelForImageClassification.from_pretrained(checkpoint)
    key = "vit.embeddings.patch_embeddings.projection.weight"
    assert torch.equal(trained.state_dict()[key], reference.state_dict()[key])

    pickled = tmp_path / "pickled"  # the same checkpoint, but only as a pickle file
    pickled.mkdir()
    shutil.copy(checkpoint / "config.json", pickled)
    shutil.copy(checkpoint / "preprocessor_config.json", pickled)
    torch.save(source.state_dict(), pickled / "pytorch_model.bin")
    from peft_food.errors import UserError

    with pytest.raises(UserError, match="only .safetensors checkpoints are loaded"):
        train(
            compose_config(
                *TINY_QUIET,
                "model.pretrained=true",
                f"model.name_or_path={pickled}",
                output_dir=tmp_path / "run2",
            )
        )


def test_train_img_per_s_is_one_figure_in_the_record_and_the_epoch_log(tmp_path, caplog):
    # Capped at one step, the epoch trained 16 images, not the split's 64: the rate counts those.
    with caplog.at_level(logging.INFO):
        record = train(compose_config(*TINY_QUIET, NO_EXAMPLES, "train.max_steps=1", output_dir=tmp_path))
    efficiency = record.efficiency
    assert efficiency.epoch_images == [16] and len(efficiency.epoch_wall_s) == 1
    assert efficiency.train_img_per_s == round(16 / efficiency.epoch_wall_s[0], 2)
    [line] = [m for m in caplog.messages if m.startswith("epoch ") and "img/s" in m]  # epoch 0.25: a quarter
    assert line.endswith(f"| {efficiency.train_img_per_s:.0f} img/s")


def test_every_run_dir_has_its_training_curves_one_point_per_epoch(lora_run):
    from peft_food.tracking.curves import curve_figure
    from peft_food.tracking.record import RunRecord

    run_dir, _ = lora_run  # 3 epochs, 64 train images at batch 16: 12 steps, loss logged every 2
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = RunRecord.load(run_dir / "metrics.json")
    [state] = sorted(run_dir.glob("checkpoints/checkpoint-12/trainer_state.json"))
    figure = curve_figure(record, json.loads(state.read_text())["log_history"])
    plotted = {line.get_label(): list(zip(*line.get_data())) for ax in figure.axes for line in ax.get_lines()}
    for metric in ("loss", "accuracy", "top5_accuracy", "macro_f1"):
        assert [epoch for epoch, _ in plotted[f"val {metric}"]] == [1, 2, 3]
        assert [value for _, value in plotted[f"val {metric}"]] == [e[f"eval_{metric}"] for e in record.epochs]
    assert [round(epoch, 2) for epoch, _ in plotted["train loss"]] == [round(s / 4, 2) for s in range(2, 13, 2)]
    assert f"selected: epoch {record.best_epoch['epoch']:g} (best val accuracy)" in plotted


@pytest.mark.parametrize("every_s, drawn", [(0.0, 3), (3600.0, 1)])
def test_curves_are_redrawn_as_epochs_end_at_most_every_curves_every_s_and_always_at_the_end(
    tmp_path, monkeypatch, every_s, drawn
):
    """2 epochs: with no interval, after each evaluation and at the end (3 drawings); with an
    interval longer than the run, only the end's, which marks the selected epoch."""
    import peft_food.training.pipeline as pipeline
    import peft_food.training.trainer as trainer
    from peft_food.tracking.curves import write_curves

    calls = []

    def counted(record, log_history, path):
        calls.append(len(record.epochs))
        write_curves(record, log_history, path)

    monkeypatch.setattr(trainer, "CURVES_EVERY_S", every_s)
    monkeypatch.setattr(trainer, "write_curves", counted)
    monkeypatch.setattr(pipeline, "write_curves", counted)
    train(compose_config(*TINY_QUIET, NO_EXAMPLES, output_dir=tmp_path))
    assert len(calls) == drawn and calls[-1] == 2  # the last drawing has both epochs
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
