"""The commands of the README and the docs pages (tests/pages.py) work as written."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from peft_food.tracking.record import RunRecord
from tests.helpers import needs_mini, read_run, run_files
from tests.pages import commands


def test_readme_quickstart_runs_offline_and_beats_chance(tmp_path, offline_wandb):
    [command] = [c for c in commands("peft-food-train") if "quickstart" in c and "-m" not in c]
    exe = shutil.which("peft-food-train", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    done = subprocess.run([exe, *command.split()[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    [metrics_file] = list(tmp_path.glob("outputs/*/*/metrics.json"))
    record = RunRecord.load(metrics_file)
    assert record.counts.num_labels == 10
    assert record.best >= 0.4 and record.reported("accuracy") >= 0.4  # val and test; chance is 0.1
    [run_file] = run_files(metrics_file.parent)
    summary = read_run(run_file).summary
    assert summary["best_val_accuracy"] == record.best and summary["test/accuracy"] == record.reported("accuracy")
    assert "the run reports the test accuracy of the checkpoint with the best val accuracy" in done.stdout + done.stderr
    assert (metrics_file.parent / ".hydra" / "config.yaml").is_file()
    # outputs/latest names the finished run, as the README's Predicting section reads it.
    assert (tmp_path / "outputs" / "latest").read_text() == f"{metrics_file.parent.relative_to(tmp_path)}\n"


@needs_mini
def test_readme_data_store_commands_build_once_then_reuse_and_prepare_writes_only_the_stores(tmp_path, monkeypatch):
    """The data store section's offline commands, as written, from a folder beside shared/ as the
    repo root is (where its relative data.root points), with the stores under PEFT_FOOD_CACHE and
    the run dir in tmp. Also what tests/test_store.py asks of peft-food-prepare: one line per store,
    nothing written but the stores, and training opens them (one prepare run shows both)."""
    from peft_food.config import parse_config
    from peft_food.data.splits import load_splits
    from peft_food.data.store import Form, Store
    from peft_food.training.pipeline import data_plan
    from tests.helpers import MINI, compose_config

    checkout = tmp_path / "checkout"  # ../shared/data/food101-mini from here is the real one
    checkout.mkdir()
    (tmp_path / "shared").symlink_to(MINI.parent.parent)
    cache = tmp_path / "cache"
    env = {**os.environ, "PEFT_FOOD_CACHE": str(cache), "WANDB_MODE": "disabled"}
    bin_dir = Path(sys.executable).parent
    [prepare] = [c for c in commands("peft-food-prepare") if "food101-mini" in c]
    done = subprocess.run(
        [str(bin_dir / "peft-food-prepare"), *prepare.split()[1:]],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    stores = sorted((cache / "stores").glob("food101-mini-*[0-9a-f]"))
    # train.txt in the train form and in the eval form (val is carved out of it), test.txt in the eval form.
    assert [s.name.split("-")[2:4] for s in stores] == [["test", "eval32"], ["train", "eval32"], ["train", "train64"]]
    assert "built the data store" in done.stdout
    lines = done.stdout.strip().splitlines()[-3:]
    root = cache / "stores"
    assert lines[0].startswith(f"train: {root}/food101-mini-train-train64-") and "(500 images" in lines[0]
    assert lines[1].startswith(f"val: {root}/food101-mini-train-eval32-32x32-") and "(500 images" in lines[1]
    assert lines[2].startswith(f"test: {root}/food101-mini-test-eval32-32x32-") and "(200 images" in lines[2]
    assert os.listdir(checkout) == []  # no run dir, no log file
    # Training's own plan at the same keys opens them: nothing rebuilt.
    monkeypatch.chdir(checkout)  # the same keys, the relative data.root included, from the same folder
    spec = parse_config(
        compose_config(*prepare.split()[1:], "data.store=true", f"data.store_dir={root}", output_dir="/tmp/unused")
    )
    splits = load_splits(spec.data, seed=0, plan=data_plan(spec))
    assert sorted(s.path.name for s in splits.stores.values()) == sorted({s.name for s in stores})
    assert all(
        isinstance(s, Store) and s.form in (Form("train", side=64), Form("eval", resize=32, height=32, width=32))
        for s in splits.stores.values()
    )

    [train] = [c for c in commands("peft-food-train") if "food101_mini" in c and "data.store=true" in c]
    done = subprocess.run(
        [str(bin_dir / "peft-food-train"), *train.split()[1:], "train.epochs=1", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "built the data store" not in log  # prepare's stores, opened
    assert RunRecord.load(tmp_path / "run" / "metrics.json").config["data"]["store"] is True
