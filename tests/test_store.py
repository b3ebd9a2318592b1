"""The data store (data/store.py): the same pixels and draws as the JPEG path, keyed by the images it
holds, built once under a lock, never read half-built, and a full disk is one line."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTImageProcessor

from peft_food.data.geometry import input_sizes
from peft_food.data.splits import load_splits
from peft_food.data.store import store_plan
from peft_food.data.transforms import (
    StoreAugment,
    TensorAugment,
    attach_transforms,
    build_transforms,
)
from peft_food.errors import DataError
from tests.helpers import MINI, NO_WANDB, TINY_TRAIN, compose_config, needs_mini, spec_of

PROCESSOR = ViTImageProcessor(size={"height": 64, "width": 64})  # a 64 px model: 128 px stored side by default


def data_spec(*overrides):
    return spec_of(*overrides).data


def plan(root, *, side=None):
    return store_plan(PROCESSOR, side=side, store_dir=str(root))


def write_photos(folder, count, *, size=(90, 60), seed=0):
    """Noisy RGB JPEGs, so a crop's pixels depend on where it is."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


def file_paths(ds):
    """The image files a dataset's rows name, without decoding them."""
    from datasets import Image as ImageFeature

    return [row["path"] for row in ds.cast_column("image", ImageFeature(decode=False))["image"]]


def complete_stores(root):
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and (p / "meta.json").is_file())


@needs_mini
def test_train_crops_from_a_store_of_originals_are_the_jpeg_paths_own_pixels(tmp_path):
    spec = data_spec("data=food101_local", f"data.root={MINI}")
    stored = load_splits(spec, seed=0, plan=plan(tmp_path, side=4096))  # every photo kept at its size
    store = stored.stores["train"]
    jpeg = TensorAugment(input_sizes(PROCESSOR)[0])
    paths = file_paths(stored.train)
    augment = StoreAugment(store, input_sizes(PROCESSOR)[0])
    for row in range(0, 40, 3):
        i = stored.train[row]["index"]
        assert store.size(i) == store.original_size(i)
        torch.manual_seed(row)
        ours = augment(i)
        torch.manual_seed(row)
        theirs = jpeg({"path": paths[row], "bytes": None})
        assert torch.equal(ours, theirs), f"photo {i}"


@pytest.fixture(scope="module")
def default_stores(tmp_path_factory):
    """food101-mini's stores at PROCESSOR's default sizes (train: 128 px shorter side, eval: 64 px
    crops), built once for the tests that read them (a second load_splits opens them)."""
    root = tmp_path_factory.mktemp("stores")
    load_splits(data_spec("data=food101_local", f"data.root={MINI}"), seed=0, plan=plan(root))
    return root


@needs_mini
def test_a_downscaled_store_draws_the_same_region_and_flip(default_stores):
    spec = data_spec("data=food101_local", f"data.root={MINI}")
    stored = load_splits(spec, seed=0, plan=plan(default_stores, side=128))  # the default side, said here
    assert complete_stores(default_stores) == sorted({s.path.name for s in stored.stores.values()})  # none new
    store = stored.stores["train"]
    augment, jpeg = StoreAugment(store, (64, 64)), TensorAugment((64, 64))
    paths = file_paths(stored.train)
    same, other = [], []
    for row in range(20):
        i = stored.train[row]["index"]
        assert min(store.size(i)) == 128 < min(store.original_size(i))
        torch.manual_seed(row)
        ours = augment(i).float()
        after_ours = torch.rand(1)
        torch.manual_seed(row)
        theirs = jpeg({"path": paths[row], "bytes": None}).float()
        assert torch.rand(1) == after_ours  # the same number of draws: the next image's draws match too
        torch.manual_seed(row + 1000)
        elsewhere = jpeg({"path": paths[row], "bytes": None}).float()
        same.append((ours - theirs).abs().mean().item())
        other.append((elsewhere - theirs).abs().mean().item())
    # The same region resampled from fewer pixels differs by a few grey levels; another draw's region
    # differs by several times that.
    assert np.median(same) < 6 and np.median(same) * 4 < np.median(other)


@needs_mini
def test_eval_images_from_a_store_are_the_jpeg_paths_eval_pixels(default_stores):
    spec = data_spec("data=food101_local", f"data.root={MINI}")
    stored = attach_transforms(load_splits(spec, seed=0, plan=plan(default_stores)), PROCESSOR)
    _, eval_tf = build_transforms(PROCESSOR, uint8=True)
    plain = load_splits(spec, seed=0)
    assert len(stored.test) == len(plain.test) == 200 and len(stored.val) == len(plain.val) == 50
    for name in ("val", "test"):
        for row in range(len(getattr(plain, name))):
            assert torch.equal(
                getattr(stored, name)[row]["pixel_values"], eval_tf(getattr(plain, name)[row]["image"])
            ), f"{name} photo {row}"


def test_the_store_is_reused_and_a_changed_file_gets_a_new_one(tmp_path, monkeypatch):
    import peft_food.data.images

    for name in ("ramen", "tacos"):
        write_photos(tmp_path / "photos" / name, 6)
    opened = []
    real_open = peft_food.data.images.open_rgb
    monkeypatch.setattr("peft_food.data.images.open_rgb", lambda path: opened.append(path) or real_open(path))
    spec = data_spec("data=imagefolder", f"data.root={tmp_path / 'photos'}", "data.test_size=0.25")
    first = load_splits(spec, seed=0, plan=plan(tmp_path / "stores"))
    built = complete_stores(tmp_path / "stores")
    assert len(built) == 2  # the pool in both forms: val and test are carved out of it
    assert len(opened) == 12  # both forms from one decode of each image
    again = load_splits(spec, seed=0, plan=plan(tmp_path / "stores"))
    assert complete_stores(tmp_path / "stores") == built
    assert again.stores["train"].path == first.stores["train"].path
    # Same name, new content: the key changes and a new store is built; the old one is never read.
    target = tmp_path / "photos" / "ramen" / "0.jpg"
    Image.new("RGB", (90, 60), (255, 0, 0)).save(target)
    changed = load_splits(spec, seed=0, plan=plan(tmp_path / "stores"))
    assert len(complete_stores(tmp_path / "stores")) == 4
    position = [p.name for p in sorted((tmp_path / "photos" / "ramen").iterdir())].index("0.jpg")
    red = changed.stores["train"].rows(position)
    assert red[..., 0].mean() > 240 and red[..., 1].mean() < 15  # the new file's pixels


def test_bad_images_are_found_by_the_build_and_not_decoded_again(tmp_path, monkeypatch):
    for name in ("ramen", "tacos"):
        write_photos(tmp_path / "photos" / name, 4)
    (tmp_path / "photos" / "tacos" / "9.jpg").write_bytes(b"not a jpeg")
    spec = data_spec("data=imagefolder", f"data.root={tmp_path / 'photos'}", "data.test_size=0.25")
    with pytest.raises(DataError, match=r"1 unusable image\(s\), e\.g\. .*9\.jpg: not an image file"):
        load_splits(spec, seed=0, plan=plan(tmp_path / "stores"))
    built = complete_stores(tmp_path / "stores")
    assert len(built) == 2  # complete, with the bad file listed: later runs read the list
    meta = json.loads((tmp_path / "stores" / built[0] / "meta.json").read_text())
    assert list(meta["bad"].values()) == ["not an image file (unrecognised format)"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded again")

    monkeypatch.setattr("peft_food.data.images.open_rgb", no_decoding)
    monkeypatch.setattr("peft_food.data.store.read_rgb", no_decoding)
    monkeypatch.setattr("peft_food.data.parts.check_images", no_decoding)
    skipped = load_splits(replace(spec, bad_images="skip"), seed=0, plan=plan(tmp_path / "stores"))
    assert complete_stores(tmp_path / "stores") == built
    assert sum(skipped.sizes().values()) == 8
    assert not any(
        path.endswith("9.jpg") for name in ("train", "val", "test") for path in file_paths(getattr(skipped, name))
    )


def test_a_hub_split_is_stored_by_its_fingerprint(tmp_path, monkeypatch):
    """data=food101's own path (load_dataset, parquet, decoded by datasets) on a local parquet
    folder given as data.hub_id: the split's fingerprint keys its stores, and the val and test sets
    carved out of it read the same split's eval-form store."""
    from datasets import ClassLabel, Dataset, Features, load_dataset
    from datasets import Image as ImageFeature

    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", str(tmp_path / "hf"))
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})

    def publish(count, seed):
        rng = np.random.default_rng(seed)
        images = [Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)) for _ in range(count)]
        (tmp_path / "hub").mkdir(exist_ok=True)
        Dataset.from_dict({"image": images, "label": [0, 1] * (count // 2)}, features=features).to_parquet(
            tmp_path / "hub" / "train.parquet"
        )

    publish(8, seed=0)
    spec = data_spec(
        "data=food101",
        f"data.hub_id={tmp_path / 'hub'}",
        "data.train_split=train",
        "data.test_split=null",
        "data.test_size=0.25",
    )
    splits = load_splits(spec, seed=0, plan=plan(tmp_path / "stores"))
    assert sorted([*splits.train["index"], *splits.val["index"], *splits.test["index"]]) == list(range(8))
    assert len(splits.test) == len(splits.val) == 2
    train_store, eval_store = splits.stores["train"], splits.stores["test"]
    assert splits.stores["val"] is eval_store
    assert train_store.path.name.split("-train128-")[0] == eval_store.path.name.split("-eval64-64x64-")[0]
    ds = load_dataset(str(tmp_path / "hub"), split="train")
    _, eval_tf = build_transforms(PROCESSOR, uint8=True)
    for i in range(8):
        assert np.array_equal(train_store.rows(i), np.asarray(ds[i]["image"].convert("RGB")))
        assert torch.equal(torch.from_numpy(eval_store.rows(i)).permute(2, 0, 1), eval_tf(ds[i]["image"]))
    again = load_splits(spec, seed=0, plan=plan(tmp_path / "stores"))
    assert {k: v.path for k, v in again.stores.items()} == {
        "train": train_store.path,
        "val": eval_store.path,
        "test": eval_store.path,
    }
    publish(6, seed=1)  # a new version of the dataset: a new fingerprint, new stores
    changed = load_splits(spec, seed=0, plan=plan(tmp_path / "stores"))
    assert changed.stores["train"].path != train_store.path and len(changed.stores["train"]) == 6
    assert len(complete_stores(tmp_path / "stores")) == 4


# A job that builds (or waits for) the stores. It composes the config itself rather than through
# tests/helpers.py, whose imports (W&B, the saved-model loader) the job does not need.
BUILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from hydra import compose, initialize_config_dir
from transformers import ViTImageProcessor
from peft_food.config import CONF_DIR, parse_config
from peft_food.data.splits import load_splits
from peft_food.data.store import store_plan
with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
    cfg = compose(config_name="train", overrides=["data=imagefolder", "data.root=" + sys.argv[1], "output_dir=/tmp/unused"])
spec = parse_config(cfg).data
processor = ViTImageProcessor(size={"height": 64, "width": 64})
splits = load_splits(spec, seed=0, plan=store_plan(processor, side=None, store_dir=sys.argv[2]))
print(sum(splits.sizes().values()))
"""


def start_build(photos, stores, log):
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(photos), str(stores)],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),
        text=True,
    )


def test_concurrent_jobs_wait_for_one_build_and_reuse_it(tmp_path):
    import fcntl

    for name in ("ramen", "tacos"):
        write_photos(tmp_path / "photos" / name, 20)
    stores = tmp_path / "stores"
    stores.mkdir()
    # Hold every build lock the jobs will take, as a live builder would (names are keyed by content,
    # not by where the store lives: a probe build elsewhere tells them).
    probe = load_splits(
        data_spec("data=imagefolder", f"data.root={tmp_path / 'photos'}"), seed=0, plan=plan(tmp_path / "probe")
    )
    names = sorted({store.path.name for store in probe.stores.values()})  # val and test share the pool's
    held = [os.open(stores / f"{name}.lock", os.O_RDWR | os.O_CREAT) for name in names]
    for fd in held:
        fcntl.flock(fd, fcntl.LOCK_EX)
    logs = [tmp_path / f"job{k}.log" for k in range(2)]
    jobs = [start_build(tmp_path / "photos", stores, log) for log in logs]
    deadline = time.time() + 180
    while not all("waiting for another process" in log.read_text() for log in logs) and time.time() < deadline:
        assert all(job.poll() is None for job in jobs), [log.read_text()[-2000:] for log in logs]
        time.sleep(0.2)
    assert complete_stores(stores) == []  # both wait; neither builds beside the holder
    for fd in held:
        os.close(fd)
    outputs = [job.communicate(timeout=120)[0] for job in jobs]
    text = "".join(log.read_text() for log in logs)
    assert all(job.returncode == 0 for job in jobs), text[-3000:]
    assert [out.strip() for out in outputs] == ["40", "40"]
    assert text.count("built the data store") == 2  # one build per form, by whichever job got its lock
    assert complete_stores(stores) == names


def test_a_killed_build_is_never_read_and_is_cleaned_up(tmp_path):
    for name in ("ramen", "tacos"):
        write_photos(tmp_path / "photos" / name, 400, size=(400, 300))
    stores = tmp_path / "stores"
    job = start_build(tmp_path / "photos", stores, tmp_path / "job.log")
    deadline = time.time() + 120
    while not list(stores.glob("*.tmp-*/pixels.u8")) and time.time() < deadline:
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    # Killed mid-build: its tmp dir is there, and the store it was writing is not complete.
    assert list(stores.glob("*.tmp-*")) and len(complete_stores(stores)) < 2
    spec = data_spec("data=imagefolder", f"data.root={tmp_path / 'photos'}")
    splits = load_splits(spec, seed=0, plan=plan(stores))
    assert not list(stores.glob("*.tmp-*")) and len(complete_stores(stores)) == 2
    assert sum(splits.sizes().values()) == 800


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**20, 2 * 2**20))
sys.argv = ["peft-food-train", *sys.argv[1:]]
from peft_food.cli.train import cli
cli()
"""


@needs_mini
def test_a_full_disk_is_one_line_and_leaves_no_store_behind(tmp_path):
    stores = tmp_path / "stores"
    args = [
        *TINY_TRAIN,
        "data=food101_local",
        f"data.root={MINI}",
        "data.store=true",
        f"data.store_dir={stores}",
        "data.store_side=4096",
        NO_WANDB,
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = subprocess.run([sys.executable, "-c", FULL_DISK, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("peft-food-train: error: the disk holding") and "is full" in last
    assert "data.store_dir" in last and "Traceback" not in done.stderr
    assert complete_stores(stores) == [] and not list(stores.glob("*.tmp-*"))
    # Nothing was trained or saved: the run leaves no run dir for a user to mistake for a run.
    assert not (tmp_path / "run").exists()


@needs_mini
def test_training_from_a_store_of_originals_matches_the_jpeg_path_exactly(tmp_path):
    """Same pixels, same draws: the same run, to the last digit (workers=0, fp32, CPU)."""
    from peft_food.training.pipeline import train

    common = [
        *TINY_TRAIN,
        "data=food101_local",
        f"data.root={MINI}",
        "data.per_class=10",
        "data.test_per_class=5",
        NO_WANDB,
    ]
    jpeg = train(compose_config(*common, output_dir=tmp_path / "jpeg"))
    stored = train(
        compose_config(
            *common,
            "data.store=true",
            f"data.store_dir={tmp_path / 'stores'}",
            "data.store_side=4096",
            output_dir=tmp_path / "store",
        )
    )
    assert stored.epochs == jpeg.epochs and len(stored.epochs) == 2 and stored.test == jpeg.test
    assert len(complete_stores(tmp_path / "stores")) == 3  # train.txt in both forms (val is carved), test.txt


# peft-food-prepare (one line per store, nothing written but the stores, training opens them) is
# checked on the docs' own prepare command: tests/test_readme.py.
