"""Splits that are really disjoint (data/disjoint.py): an image in two splits, byte-identical under
another name or one file listed twice, stops the run in one line, or under data.bad_images=skip
leaves the training (or val) copy out with a count; test always stays whole."""

import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from transformers import ViTImageProcessor

from peft_food.data.splits import load_splits
from peft_food.data.store import store_plan
from peft_food.errors import DataError
from peft_food.training.pipeline import train
from tests.helpers import NO_WANDB, TINY_TRAIN, compose_config, spec_of

SKIP = "data.bad_images=skip"


def data_spec(*overrides):
    return spec_of(*overrides).data


def write_photos(folder, count, *, seed, suffix=".jpg"):
    """`count` noisy photos, each unlike any other photo written with another seed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"{seed}-{i}{suffix}")


def image_paths(ds):
    from datasets import Image as ImageFeature

    return [row["path"] for row in ds.cast_column("image", ImageFeature(decode=False))["image"]]


@pytest.fixture
def leaky_folder(tmp_path):
    """An imagefolder with train/ (4 per class) and test/ (2 per class), and one train photo copied
    into test/ under another name."""
    for seed, name in enumerate(("pho", "ramen")):
        write_photos(tmp_path / "train" / name, 4, seed=seed)
        write_photos(tmp_path / "test" / name, 2, seed=10 + seed)
    original, copy = tmp_path / "train" / "pho" / "0-1.jpg", tmp_path / "test" / "pho" / "copy.jpg"
    shutil.copyfile(original, copy)
    return tmp_path, original, copy


def test_a_train_image_copied_into_test_stops_the_run_in_one_line(leaky_folder):
    root, original, copy = leaky_folder
    with pytest.raises(DataError) as err:
        load_splits(data_spec("data=imagefolder", f"data.root={root}", "data.val_per_class=1"), seed=0)
    message = str(err.value)
    assert "\n" not in message and message.startswith("1 image(s) are also in a split evaluated on (1 in train)")
    assert f"train image {original} is byte-identical to test image {copy}" in message
    assert "data.bad_images=skip to leave the train copies out" in message


def test_under_skip_the_training_copy_is_left_out_with_a_count(leaky_folder, caplog):
    root, original, copy = leaky_folder
    clean = root.parent / "clean"
    shutil.copytree(root, clean)
    (clean / "test" / "pho" / "copy.jpg").unlink()
    overrides = ("data=imagefolder", "data.val_per_class=1")
    without = load_splits(data_spec(*overrides, f"data.root={clean}"), seed=0)
    with caplog.at_level(logging.WARNING):
        splits = load_splits(data_spec(*overrides, f"data.root={root}", SKIP), seed=0)
    assert splits.sizes() == {"train": without.sizes()["train"] - 1, "val": 2, "test": 5}
    assert "leaving out 1 image(s) that are also in a split evaluated on (1 in train)" in caplog.text
    # Test keeps its copy (it is the benchmark's list); neither train nor the val carved from the
    # pool holds the original.
    assert str(copy) in image_paths(splits.test)
    assert str(original) not in image_paths(splits.train) + image_paths(splits.val)


def test_a_run_under_skip_trains_on_one_image_fewer_and_says_so(leaky_folder, tmp_path, caplog):
    root, _, _ = leaky_folder
    with caplog.at_level(logging.WARNING):
        record = train(
            compose_config(
                *TINY_TRAIN,
                "data=imagefolder",
                f"data.root={root}",
                SKIP,
                "data.val_per_class=1",
                "train.epochs=1",
                NO_WANDB,
                output_dir=tmp_path / "run",
            )
        )
    # 8 training photos less 1 val per class is 6; the copy of a test photo is left out.
    assert (record.counts.num_train_samples, record.counts.num_eval_samples, record.counts.num_test_samples) == (
        5,
        2,
        5,
    )
    assert "leaving out 1 image(s) that are also in a split evaluated on (1 in train)" in caplog.text


def test_duplicates_within_one_split_are_left_alone(tmp_path):
    for seed, name in enumerate(("pho", "ramen")):
        write_photos(tmp_path / "train" / name, 4, seed=seed)
        write_photos(tmp_path / "test" / name, 2, seed=10 + seed)
    shutil.copyfile(tmp_path / "train" / "pho" / "0-0.jpg", tmp_path / "train" / "ramen" / "again.jpg")
    shutil.copyfile(tmp_path / "test" / "pho" / "10-0.jpg", tmp_path / "test" / "pho" / "again.jpg")
    splits = load_splits(data_spec("data=imagefolder", f"data.root={tmp_path}", "data.val_per_class=1"), seed=0)
    assert splits.sizes() == {"train": 7, "val": 2, "test": 5}


def test_a_given_val_list_keeps_its_copy_against_train_and_loses_it_against_test(tmp_path, caplog):
    for seed, name in enumerate(("pho", "ramen")):
        for offset, (split, count) in enumerate((("train", 4), ("val", 2), ("test", 2))):
            write_photos(tmp_path / split / name, count, seed=10 * offset + seed)
    shutil.copyfile(tmp_path / "train" / "pho" / "0-0.jpg", tmp_path / "val" / "pho" / "from-train.jpg")
    shutil.copyfile(tmp_path / "test" / "ramen" / "21-0.jpg", tmp_path / "val" / "ramen" / "from-test.jpg")
    with pytest.raises(DataError, match=r"^2 image\(s\) are also in a split evaluated on \(1 in val, 1 in train\)"):
        load_splits(data_spec("data=imagefolder", f"data.root={tmp_path}"), seed=0)
    with caplog.at_level(logging.WARNING):
        splits = load_splits(data_spec("data=imagefolder", f"data.root={tmp_path}", SKIP), seed=0)
    assert splits.sizes() == {"train": 7, "val": 5, "test": 4}
    assert str(tmp_path / "val" / "pho" / "from-train.jpg") in image_paths(splits.val)
    assert str(tmp_path / "val" / "ramen" / "from-test.jpg") not in image_paths(splits.val)
    # protocol retrain trains on val too: train and val are one training set, only test is checked.
    with pytest.raises(DataError, match=r"^1 image\(s\) are also in a split evaluated on \(1 in val\)"):
        load_splits(data_spec("data=imagefolder", f"data.root={tmp_path}", "data.protocol=retrain"), seed=0)


def food101_layout(root, *, train, test):
    """Food-101's layout with 4 photos per class under images/, and meta lists naming `train` and
    `test` (entries without .jpg)."""
    for seed, name in enumerate(("pho", "ramen")):
        write_photos(root / "images" / name, 4, seed=seed)
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "classes.txt").write_text("pho\nramen\n")
    (root / "meta" / "train.txt").write_text("\n".join(train) + "\n")
    (root / "meta" / "test.txt").write_text("\n".join(test) + "\n")
    return root


def test_food101_lists_naming_one_image_twice_or_a_copy_are_caught(tmp_path, caplog):
    train = ["pho/0-0", "pho/0-1", "pho/0-2", "ramen/1-0", "ramen/1-1", "ramen/1-2"]
    listed_twice = food101_layout(tmp_path / "twice", train=train, test=["pho/0-1", "ramen/1-3"])
    with pytest.raises(DataError, match=r"e\.g\. \S+/images/pho/0-1\.jpg is listed in both train and test"):
        load_splits(data_spec("data=food101_local", f"data.root={listed_twice}"), seed=0)

    copied = food101_layout(tmp_path / "copied", train=train, test=["pho/copy", "ramen/1-3"])
    shutil.copyfile(copied / "images" / "ramen" / "1-1.jpg", copied / "images" / "pho" / "copy.jpg")
    with pytest.raises(
        DataError, match=r"train image \S+/ramen/1-1\.jpg is byte-identical to test image \S+/pho/copy\.jpg"
    ):
        load_splits(data_spec("data=food101_local", f"data.root={copied}"), seed=0)
    with caplog.at_level(logging.WARNING):
        splits = load_splits(
            data_spec("data=food101_local", f"data.root={copied}", SKIP, "data.val_per_class=1"), seed=0
        )
    assert splits.sizes() == {"train": 3, "val": 2, "test": 2}  # ramen: 2 of 3 training photos left, 1 to val
    assert "leaving out 1 image(s)" in caplog.text


def test_the_data_store_keeps_the_digests_so_a_later_run_checks_without_reading(leaky_folder, tmp_path, monkeypatch):
    root, original, copy = leaky_folder
    plan = store_plan(
        ViTImageProcessor(size={"height": 32, "width": 32}), side=None, store_dir=str(tmp_path / "stores")
    )
    spec = data_spec("data=imagefolder", f"data.root={root}", "data.val_per_class=1")
    with pytest.raises(DataError, match=f"train image {original} is byte-identical to test image {copy}"):
        load_splits(spec, seed=0, plan=plan)  # the build screens, the stores are complete

    def no_reading(*args, **kwargs):
        raise AssertionError("an image was read again")

    monkeypatch.setattr("peft_food.data.store.read_rgb", no_reading)
    monkeypatch.setattr("peft_food.data.parts.check_images", no_reading)
    with pytest.raises(DataError, match=f"train image {original} is byte-identical to test image {copy}"):
        load_splits(spec, seed=0, plan=plan)
    splits = load_splits(replace(spec, bad_images="skip"), seed=0, plan=plan)
    assert splits.sizes() == {"train": 5, "val": 2, "test": 5}
    assert str(original) not in image_paths(splits.train) + image_paths(splits.val)


def test_hub_splits_stored_are_checked_too(tmp_path, monkeypatch):
    """data=food101's own path on a local parquet folder given as data.hub_id (train.parquet and
    validation.parquet, one photo in both): with data.store=true the build hashes each image's
    parquet bytes, so its validation (test) copy is found."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", str(tmp_path / "hf"))
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)) for _ in range(10)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    (tmp_path / "hub").mkdir()
    for split, rows in (("train", photos[:6]), ("validation", [photos[6], photos[7], photos[8], photos[3]])):
        Dataset.from_dict({"image": rows, "label": [0, 1] * (len(rows) // 2)}, features=features).to_parquet(
            tmp_path / "hub" / f"{split}.parquet"
        )
    plan = store_plan(
        ViTImageProcessor(size={"height": 32, "width": 32}), side=None, store_dir=str(tmp_path / "stores")
    )
    spec = data_spec("data=food101", f"data.hub_id={tmp_path / 'hub'}", "data.val_per_class=1")
    with pytest.raises(
        DataError, match=r"train image \S+:train\[3\] is byte-identical to test image \S+:validation\[3\]"
    ):
        load_splits(spec, seed=0, plan=plan)
    splits = load_splits(replace(spec, bad_images="skip"), seed=0, plan=plan)
    assert splits.sizes() == {"train": 3, "val": 2, "test": 4}
    assert 3 not in [*splits.train["index"], *splits.val["index"]]
