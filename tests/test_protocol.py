"""The evaluation protocol (docs/protocol.md): three disjoint splits from every source, the
checkpoint selected on val only, test reported for that checkpoint and the last epoch, and every
sweeper's objective a val number."""

import hashlib

import numpy as np
import pytest
import yaml
from PIL import Image

from peft_food.config import parse_config
from peft_food.data.columns import image_dataset
from peft_food.data.sources import (
    SOURCES,
    Part,
    Parts,
    Source,
    synthetic_dataset,
)
from peft_food.data.splits import load_splits
from peft_food.errors import DataError
from peft_food.tracking.record import RunRecord, recorded_data
from peft_food.tracking.sweep import objective, objective_key
from peft_food.training.pipeline import train
from tests.helpers import (
    MINI,
    NO_WANDB,
    REPO,
    TINY,
    TINY_TRAIN,
    compose_config,
    eval_logits,
    needs_mini,
    read_run,
    run_files,
    spec_of,
)


def data_spec(*overrides):
    return spec_of(*TINY_TRAIN, *overrides).data


def write_unique_images(folder, count, start):
    """`count` PNGs whose pixels differ from every other image written with another `start`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        Image.fromarray(np.full((8, 8, 3), (i % 251, i // 251, 7), dtype=np.uint8)).save(folder / f"{i}.png")
    return start + count


def paths(ds):
    return [p["path"] for p in ds.cast_column("image", ds.features["image"].__class__(decode=False))["image"]]


def pixels(ds):
    return [hashlib.sha1(np.asarray(img).tobytes()).hexdigest() for img in ds["image"]]


def assert_disjoint(splits, key):
    ids = {name: key(getattr(splits, name)) for name in ("train", "val", "test")}
    for name, found in ids.items():
        assert len(set(found)) == len(found), f"{name} holds an image twice"
    assert not set(ids["train"]) & set(ids["val"])
    assert not set(ids["train"]) & set(ids["test"])
    assert not set(ids["val"]) & set(ids["test"])


def per_class(ds):
    return np.bincount(ds["label"]).tolist()


def test_hub_source_draws_val_from_train_and_reports_its_test_split(tmp_path):
    # A local dataset dir in the Hub's split layout: load_dataset reads it as it reads ethz/food101.
    start = 0
    for split, count in (("train", 20), ("validation", 6)):
        for name in ("apple_pie", "bibimbap", "churros"):
            start = write_unique_images(tmp_path / split / name, count, start)
    spec = data_spec(
        "data=food101", f"data.hub_id={tmp_path}", "data.val_size=0.25", "data.per_class=12", "data.test_per_class=4"
    )
    splits = load_splits(spec, seed=5)
    assert per_class(splits.val) == [5] * 3  # 25% of each class's 20, carved before the subset
    assert per_class(splits.train) == [12] * 3 and per_class(splits.test) == [4] * 3
    assert_disjoint(splits, pixels)
    assert not splits.selects_on_test


@needs_mini
def test_food101_local_val_from_train_txt_test_is_test_txt():
    splits = load_splits(data_spec("data=food101_local", f"data.root={MINI}", "data.val_per_class=10"), seed=42)
    assert splits.sizes() == {"train": 400, "val": 100, "test": 200}
    assert per_class(splits.val) == [10] * 10
    assert_disjoint(splits, paths)
    test_list = {f"{MINI}/images/{e}.jpg" for e in (MINI / "meta" / "test.txt").read_text().split()}
    assert set(paths(splits.test)) == test_list
    again = load_splits(data_spec("data=food101_local", f"data.root={MINI}", "data.val_per_class=10"), seed=42)
    other = load_splits(data_spec("data=food101_local", f"data.root={MINI}", "data.val_per_class=10"), seed=7)
    assert paths(again.val) == paths(splits.val) != paths(other.val)  # seeded


@pytest.mark.parametrize("layout", ["flat", "train_test", "train_val_test"])
def test_imagefolder_uses_the_splits_it_has_and_carves_the_rest(tmp_path, layout):
    start = 0
    for name in ("gyoza", "ramen"):
        if layout == "flat":
            start = write_unique_images(tmp_path / name, 20, start)
        else:
            start = write_unique_images(tmp_path / "train" / name, 16, start)
            start = write_unique_images(tmp_path / "test" / name, 4, start)
            if layout == "train_val_test":
                start = write_unique_images(tmp_path / "val" / name, 3, start)
    splits = load_splits(
        data_spec("data=imagefolder", f"data.root={tmp_path}", "data.test_size=0.2", "data.val_size=0.25"), seed=0
    )
    expected = {
        "flat": {"train": 24, "val": 8, "test": 8},  # per class: 4 of 20 test, 4 of the 16 left val
        "train_test": {"train": 24, "val": 8, "test": 8},
        "train_val_test": {"train": 32, "val": 6, "test": 8},
    }[layout]
    assert splits.sizes() == expected
    assert_disjoint(splits, paths)
    if layout == "train_val_test":
        assert all("/val/" in p for p in paths(splits.val))


def test_synthetic_generates_three_disjoint_splits():
    splits = load_splits(
        data_spec(
            "data=synthetic",
            "data.num_classes=3",
            "data.per_class=6",
            "data.val_per_class=2",
            "data.test_per_class=4",
            "data.image_size=16",
        ),
        seed=1,
    )
    assert splits.sizes() == {"train": 18, "val": 6, "test": 12}
    assert_disjoint(splits, pixels)


def test_seed_protocol_keeps_the_seed_split_and_says_it_reports_what_it_selected_on(tmp_path):
    for name in ("a", "b"):
        write_unique_images(tmp_path / name, 10, 100 if name == "b" else 0)
    splits = load_splits(
        data_spec("data=imagefolder", f"data.root={tmp_path}", "data.protocol=seed", "data.test_size=0.2"), seed=3
    )
    assert splits.selects_on_test and splits.val is splits.test and len(splits.train) == 16


def test_a_class_too_small_to_carve_val_names_the_split_and_the_fix(tmp_path):
    write_unique_images(tmp_path / "train" / "a", 6, 0)
    write_unique_images(tmp_path / "train" / "b", 1, 50)
    write_unique_images(tmp_path / "test" / "a", 1, 60)
    write_unique_images(tmp_path / "test" / "b", 1, 70)
    with pytest.raises(DataError, match=r"class b has 1 training image left.*as val.*a val/ folder"):
        load_splits(data_spec("data=imagefolder", f"data.root={tmp_path}"), seed=0)


def _parity(seed, *, flip=False):
    """Eight synthetic classes labelled by parity (hard for a tiny ViT: its accuracy moves from
    epoch to epoch); `flip` swaps the two labels."""
    ds = synthetic_dataset(num_classes=8, per_class=12, image_size=32, seed=seed)
    return image_dataset(
        {"image": [np.asarray(img) for img in ds["image"]], "label": [(y % 2) ^ flip for y in ds["label"]]},
        names=["even", "odd"],
    )


def _flipped(spec, seed, plan):
    """Test holds val's images with the two labels swapped, so test accuracy is exactly 1 - val
    accuracy at every epoch: the best val epoch is the worst test epoch."""
    return Parts(Part(_parity(seed)), val=Part(_parity(seed + 2)), test=Part(_parity(seed + 2, flip=True)))


def test_selection_reads_val_only_and_reports_that_checkpoints_test(tmp_path, monkeypatch, offline_wandb):
    monkeypatch.setitem(SOURCES, "flipped", Source(_flipped, SOURCES["synthetic"].card, generated=True))
    record = train(
        compose_config(
            *TINY_TRAIN, "data=synthetic", "data.source=flipped", "train.epochs=6", "train.lr=5e-3", output_dir=tmp_path
        )
    )
    val = [e["eval_accuracy"] for e in record.epochs]
    assert len(set(val)) > 1 and max(val) != val[-1]  # test would pick another epoch; best is not the last
    best = max(range(len(val)), key=lambda i: (val[i], -i))  # the first of ties, as Trainer keeps it
    assert record.best_epoch == record.epochs[best] and record.best == val[best]
    assert record.test["best"]["test_accuracy"] == pytest.approx(1 - val[best], abs=1e-9)
    assert record.test["final"]["test_accuracy"] == pytest.approx(1 - val[-1], abs=1e-9)
    assert record.reported("accuracy") == record.test["best"]["test_accuracy"]
    assert "checkpoint with the best val accuracy" in record.describe_protocol()
    assert "96 val / 96 test" in record.describe_protocol()

    # Every sweeper's objective is that val number: Optuna's (the job's return value) and W&B
    # Sweeps' (the summary key the committed sweep files name).
    assert objective(record) == val[best]
    summary = read_run(run_files(tmp_path)[0]).summary
    for sweep_file in sorted((REPO / "experiments" / "wandb_sweeps").glob("*.yaml")):
        metric = yaml.safe_load(sweep_file.read_text())["metric"]
        assert metric["name"] == objective_key(record) == "best_val_accuracy"
        assert summary[metric["name"]] == val[best] and metric["goal"] == "maximize"
    assert summary["test/accuracy"] == record.test["best"]["test_accuracy"]
    on_disk = RunRecord.load(tmp_path / "metrics.json")
    assert on_disk.protocol == "val_test" and on_disk.test == record.test


@needs_mini  # its splits are read from the real photos
def test_a_record_made_before_the_protocol_reads_and_reruns_as_the_seed_protocol():
    old = REPO / "experiments" / "mini_rank_alpha_torch2.15" / "runs"
    run = sorted(old.iterdir())[0]
    record = RunRecord.load(run / "metrics.json")
    assert record.protocol == "seed" and record.test is None and record.selected_on == "eval"
    assert record.reported("accuracy") == record.best_epoch["eval_accuracy"]
    assert "selected on the reported split" in record.describe_protocol()
    data = recorded_data(yaml.safe_load((run / "config.yaml").read_text())["data"])
    assert data["protocol"] == "seed" and "eval_split" not in data and data["test_split"] is None
    spec = parse_config(
        compose_config(
            *TINY_TRAIN,
            "data=food101_local",
            f"data.root={MINI}",
            *(
                f"data.{k}={'null' if v is None else v}"
                for k, v in data.items()
                if k in ("protocol", "test_split", "test_per_class")
            ),
            output_dir="/tmp/unused",
        )
    )
    assert load_splits(spec.data, seed=42).selects_on_test


def _row(job, method, params, val, test, setting, model="vit_tiny"):
    return {
        "job": job,
        "status": "completed",
        "method": method,
        "model": model,
        "r": "",
        "alpha": "",
        "trainable_params": params,
        "monitor": "eval_accuracy",
        "val": val,
        "test": test,
        "test_final": test,
        "protocol": "val_test",
        "setting": setting,
    }


def test_compare_selects_settings_on_val_and_reports_their_test_mean_and_spread():
    from peft_food.tracking.compare import by_setting, method_by_model, pareto, settings

    rows = [
        _row("0", "lora", 100, 0.80, 0.60, "a"),
        _row("1", "lora", 100, 0.70, 0.64, "a"),  # val 0.75, test 0.62
        _row("2", "ia3", 10, 0.50, 0.90, "b"),
        _row("3", "ia3", 10, 0.60, 0.80, "b"),
    ]  # val 0.55, test 0.85
    chosen = settings(rows)
    assert [s["setting"] for s in chosen] == ["a", "b"]  # by val, though b's test is higher
    assert chosen[0]["test"] == pytest.approx(0.62) and chosen[0]["test_std"] == pytest.approx(0.0283, abs=1e-4)
    lines = by_setting(rows).splitlines()
    assert lines[1].split()[:5] == ["a", "2", "0.7500", "+-", "0.0707"] and "0.6200 +- 0.0283" in lines[1]
    assert "+0.2300 (beyond the noise" in lines[2]
    # Across two models, each cell reports the test value of its val-selected setting.
    rows += [
        _row("4", "lora", 100, 0.9, 0.1, "c", model="swin_tiny"),
        _row("5", "lora", 100, 0.2, 0.99, "d", model="swin_tiny"),
    ]
    table = method_by_model(rows).splitlines()
    assert table[1].split() == ["lora", "0.1000", "0.6200", "+-", "0.0283"]
    assert pareto([(10, 0.5), (100, 0.4), (100, 0.7), (1000, 0.6), (5, 0.1)]) == [(5, 0.1), (10, 0.5), (100, 0.7)]


@pytest.mark.parametrize("name", ["seed_lora", "seed_full"])
def test_the_seed_recipe_records_keep_its_split_and_say_they_select_on_what_they_report(name):
    record = REPO / "experiments" / name
    data = yaml.safe_load((record / "runs" / "run" / "config.yaml").read_text())["data"]
    assert (data["protocol"], data["train_split"], data["test_split"], data["test_size"]) == (
        "seed",
        "train[:5000]",
        None,
        0.2,
    )
    assert "selected on the reported split" in yaml.safe_load((record / "experiment.yaml").read_text())["description"]


def test_vtab1k_shape_draws_a_fixed_budget_then_carves_val_out_of_it(tmp_path):
    start = 0
    for name, count in (("a", 300), ("b", 500), ("c", 700)):
        start = write_unique_images(tmp_path / "train" / name, count, start)
        start = write_unique_images(tmp_path / "test" / name, 3, start)
    spec = parse_config(
        compose_config(
            *TINY_TRAIN, "experiment=vtab1k", "data=imagefolder", f"data.root={tmp_path}", output_dir="/tmp/unused"
        )
    ).data
    splits = load_splits(spec, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (800, 200, 9)
    assert per_class(splits.val) == [40, 67, 93]  # 200 in proportion to the 300 / 500 / 700 (largest remainders)
    assert_disjoint(splits, paths)


def test_retrain_trains_on_train_plus_val_selects_nothing_and_tests_the_last_epoch(tmp_path):
    record = train(
        compose_config(
            *TINY,
            "data.protocol=retrain",
            NO_WANDB,
            output_dir=tmp_path,
        )
    )
    assert record.epochs == [] and record.best is None and set(record.test) == {"final"}
    assert (record.counts.num_train_samples, record.counts.num_eval_samples, record.counts.num_test_samples) == (
        64 + 32,
        0,
        32,
    )
    # The saved model is the last epoch's, and the record reports its test accuracy.
    logits, labels = eval_logits(tmp_path, "test")
    assert (
        float((logits.argmax(-1) == labels).mean())
        == record.reported("accuracy")
        == record.test["final"]["test_accuracy"]
    )
    assert "nothing selected" in record.describe_protocol()
    assert "nothing selected" in (tmp_path / "model" / "README.md").read_text()


def test_vtab1k_retrain_trains_on_the_same_thousand_vtab1k_split(tmp_path):
    start = 0
    for name, count in (("a", 600), ("b", 900)):
        start = write_unique_images(tmp_path / "train" / name, count, start)
        start = write_unique_images(tmp_path / "test" / name, 2, start)
    common = ["data=imagefolder", f"data.root={tmp_path}"]
    tune = load_splits(data_spec("experiment=vtab1k", *common), seed=0)
    final = load_splits(data_spec("experiment=vtab1k_retrain", *common), seed=0)
    assert final.val is None and len(final.train) == 1000
    assert sorted(paths(final.train)) == sorted(paths(tune.train) + paths(tune.val))
