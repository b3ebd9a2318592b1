"""Using a trained model: exact reload (adapter + head), predict CLI with bad inputs, export."""

import json
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from peft_food.cli.export import main as export_main
from peft_food.cli.predict import main as predict
from peft_food.data.transforms import (
    build_transforms,
    normalize,
)
from peft_food.saved.artifacts import load_trained
from peft_food.training.pipeline import train
from tests.helpers import (
    MINI,
    NO_EXAMPLES,
    NO_WANDB,
    REPO,
    TINY_QUIET,
    TINY_TRAIN,
    compose_config,
    eval_logits,
    needs_mini,
)

# The same function in a fresh interpreter: nothing from training is left in memory there.
EVAL_LOGITS = textwrap.dedent("""
    import sys, numpy
    from pathlib import Path
    from tests.helpers import eval_logits
    logits, labels = eval_logits(Path(sys.argv[1]))
    numpy.save(sys.argv[2], logits)
    numpy.save(sys.argv[3], labels)
""")


# lora_run and full_run (trained once, shared with test_trust.py) are in conftest.py.


def test_reload_in_a_fresh_process_gives_the_trained_head_accuracy_and_logits(lora_run, tmp_path):
    run_dir, record = lora_run
    done = subprocess.run(
        [sys.executable, "-c", EVAL_LOGITS, str(run_dir), str(tmp_path / "fresh.npy"), str(tmp_path / "labels.npy")],
        capture_output=True,
        text=True,
        cwd=str(REPO),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = np.load(tmp_path / "fresh.npy")
    labels = np.load(tmp_path / "labels.npy")
    # The saved model is the best val epoch's (load_best_model_at_end): same val accuracy as then,
    # and the test accuracy the record reports for it.
    assert float((fresh.argmax(-1) == labels).mean()) == record.best
    test_logits, test_labels = eval_logits(run_dir, "test")
    assert float((test_logits.argmax(-1) == test_labels).mean()) == record.test["best"]["test_accuracy"]

    # The same load in this process gives the same logits.
    here, _ = eval_logits(run_dir)
    assert np.allclose(here, fresh, atol=1e-6)
    trained = load_trained(run_dir)

    # The head that predicts is the best checkpoint's trained head, not a fresh init.
    best = json.loads(sorted((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    saved = load_file(f"{best['best_model_checkpoint']}/adapter_model.safetensors")
    head = trained.model.get_submodule("base_model.model.classifier").modules_to_save["default"]
    assert torch.equal(head.weight, saved["base_model.model.classifier.weight"])
    original = trained.model.get_submodule("base_model.model.classifier").original_module
    assert not torch.allclose(head.weight, original.weight)


def make_inputs(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    photo.save(folder / "good.jpg")
    full = (folder / "good.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(full[: len(full) // 2])
    (folder / "notes.jpg").write_text("not an image\n")
    photo.convert("L").save(folder / "grey.png")
    photo.convert("RGBA").save(folder / "rgba.png")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257)).save(folder / "deep16.png")
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    Image.new("1", (14_000, 14_000)).save(folder / "bomb.png")  # 196 MP: over twice PIL's limit
    (folder / "empty").mkdir()


def test_loading_a_saved_adapter_warns_nothing_a_user_cannot_act_on(lora_run):
    """What peft-food-predict and -export load a run with: transformers' FutureWarning about peft's
    reading of is_gradient_checkpointing opened every predict and export."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # pyproject's filterwarnings hides FutureWarning from pytest
        load_trained(lora_run[0])
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []


def test_predict_reports_each_bad_input_on_one_line_and_still_predicts_the_good(lora_run, tmp_path, capsys):
    run_dir, _ = lora_run
    make_inputs(tmp_path / "in")
    paths = [
        str(tmp_path / "in" / n)
        for n in (
            "good.jpg",
            "corrupt.jpg",
            "notes.jpg",
            "grey.png",
            "rgba.png",
            "cmyk.jpg",
            "deep16.png",
            "dot.png",
            "bomb.png",
            "empty",
        )
    ]
    code = predict([str(run_dir), *paths, str(tmp_path / "missing.jpg"), "--json", "--top-k", "2"])
    captured = capsys.readouterr()
    assert code == 1
    lines = [json.loads(line) for line in captured.out.splitlines()]
    by_name = {line["path"].rsplit("/", 1)[-1]: line for line in lines}
    assert len(lines) == 11
    for name in ("good.jpg", "grey.png", "rgba.png", "cmyk.jpg", "deep16.png"):
        predictions = by_name[name]["predictions"]
        assert len(predictions) == 2 and predictions[0]["score"] >= predictions[1]["score"]
        assert predictions[0]["label"].startswith("class_")
    assert "corrupt or unreadable" in by_name["corrupt.jpg"]["error"]
    assert "not an image" in by_name["notes.jpg"]["error"]
    assert "1x1 pixels" in by_name["dot.png"]["error"]
    assert "decompression-bomb" in by_name["bomb.png"]["error"]
    assert "holds no images" in by_name["empty"]["error"]
    assert "no such file" in by_name["missing.jpg"]["error"]
    assert "6 of 11 input(s) failed" in captured.err
    assert "Traceback" not in captured.err


def test_greyscale_and_16_bit_copies_predict_like_the_original(lora_run, tmp_path, capsys):
    run_dir, _ = lora_run
    rng = np.random.default_rng(1)
    grey = Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8))
    grey.save(tmp_path / "a.png")
    Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257).save(tmp_path / "b.png")
    assert predict([str(run_dir), str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--json"]) == 0
    a, b = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert a["predictions"] == b["predictions"]  # 16-bit scaled, not clipped to white


def test_predict_text_output_and_a_folder(full_run, tmp_path, capsys):
    (tmp_path / "pics" / "sub").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40, 40), (i * 80, 20, 200)).save(tmp_path / "pics" / "sub" / f"{i}.jpg")
    assert predict([str(full_run), str(tmp_path / "pics"), "--top-k", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6 and out[0].endswith("sub/0.jpg") and out[1].split()[1].startswith("class_")


def test_model_dir_errors_are_one_line(lora_run, full_run, tmp_path, capsys):
    run_dir, _ = lora_run
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)

    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "metrics.json").write_text('{"status": "failed"}')
    assert predict([str(tmp_path / "empty_run"), str(image)]) == 2
    assert "holds no saved model" in capsys.readouterr().err

    other_labels = tmp_path / "three_labels"
    train(
        compose_config(
            *TINY_TRAIN,
            "data=synthetic",
            "data.num_classes=3",
            "data.per_class=4",
            "data.val_per_class=2",
            "data.test_per_class=2",
            "peft=full",
            NO_WANDB,
            NO_EXAMPLES,
            "train.epochs=1",
            output_dir=other_labels,
        )
    )
    assert predict([str(run_dir), str(image), "--base", str(other_labels)]) == 2
    assert "trained for 4 labels but the base" in capsys.readouterr().err

    other_arch = tmp_path / "narrow"
    few = ["data.per_class=4", "data.val_per_class=2", "data.test_per_class=2", NO_EXAMPLES]  # one step
    train(
        compose_config(
            *TINY_QUIET, *few, "model.arch.hidden_size=32", "peft=full", "train.epochs=1", output_dir=other_arch
        )
    )
    assert predict([str(run_dir), str(image), "--base", str(other_arch)]) == 2
    assert "does not fit the base model" in capsys.readouterr().err

    broken = tmp_path / "broken"
    shutil.copytree(run_dir / "model", broken)
    (broken / "adapter_model.safetensors").unlink()
    assert predict([str(broken), str(image)]) == 2
    assert "adapter_model.safetensors is missing" in capsys.readouterr().err


@pytest.mark.slow
@needs_mini
def test_exported_model_matches_the_adapter_through_pipeline_without_peft(mini_run, tmp_path):
    run_dir, _ = mini_run  # tiny ViT, 2 epochs on food101-mini (conftest.py; test_train's too)
    assert export_main([str(run_dir), str(tmp_path / "exported")]) == 0
    images = sorted(str(p) for p in (MINI / "images").rglob("*.jpg"))
    test_ids = set((MINI / "meta" / "test.txt").read_text().split())
    images = [p for p in images if p.rsplit("/images/", 1)[1][:-4] in test_ids]
    assert len(images) == 200

    # The run's own eval transform (what peft-food-predict and the run's eval use), on the run's model.
    trained = load_trained(run_dir)
    _, eval_tf = build_transforms(trained.processor)
    pixels = normalize(
        torch.stack([eval_tf(Image.open(p)) for p in images]),
        mean=trained.processor.image_mean,
        std=trained.processor.image_std,
    )
    with torch.inference_mode():
        run_logits = trained.model(pixel_values=pixels).logits.numpy()

    script = textwrap.dedent("""
        import json, sys
        sys.modules["peft"] = None  # inference must not need peft
        from transformers import pipeline
        pipe = pipeline("image-classification", model=sys.argv[1])
        labels = [pipe.model.config.id2label[i] for i in range(pipe.model.config.num_labels)]
        out = pipe(sys.argv[2:], top_k=len(labels), function_to_apply="none", batch_size=50)
        print(json.dumps([[{r["label"]: r["score"] for r in row}[name] for name in labels] for row in out]))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "exported"), *images], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    exported_logits = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    # The export resizes the shorter side and centre-crops as the run did: the same top-1 on every
    # test photo, and the same logits but for the few photos where its tensor resize (torchvision,
    # antialiased) and the run's PIL resize round a few pixels a grey level or two apart.
    assert (exported_logits.argmax(-1) == run_logits.argmax(-1)).all()
    gap = np.abs(exported_logits - run_logits).max(-1)
    # (How far one photo's few grey levels move its logits depends on the toy model's weights: 0.15
    # at most so far, on a logit scale of several units.)
    assert np.median(gap) < 1e-4 and (gap < 1e-3).mean() > 0.9 and gap.max() < 0.25
    with (tmp_path / "exported" / "preprocessor_config.json").open() as f:
        assert json.load(f)["size"] == {"shortest_edge": 32}


def test_adapter_saved_with_pre_5_9_vit_names_loads_onto_the_renamed_modules(lora_run, tmp_path):
    from safetensors.torch import save_file

    run_dir, _ = lora_run
    old = tmp_path / "old_names"
    shutil.copytree(run_dir / "model", old)
    # Write the adapter as transformers < 5.9 named ViT's modules (the inverse of its rename).
    tensors = load_file(old / "adapter_model.safetensors")
    renamed = {
        k.replace("vit.layers.", "vit.encoder.layer.")
        .replace("attention.q_proj", "attention.attention.query")
        .replace("attention.v_proj", "attention.attention.value"): v
        for k, v in tensors.items()
    }
    assert any(".attention.attention.query.lora_A" in k for k in renamed)
    save_file(renamed, old / "adapter_model.safetensors")
    config = json.loads((old / "adapter_config.json").read_text())
    config["target_modules"] = ["query", "value"]
    (old / "adapter_config.json").write_text(json.dumps(config))

    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(image)
    expected = predict_json(run_dir / "model", image)
    assert predict_json(old, image) == expected


def predict_json(model_dir, image):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert predict([str(model_dir), str(image), "--json"]) == 0
    return json.loads(out.getvalue())["predictions"]
