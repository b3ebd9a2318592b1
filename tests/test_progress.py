"""Progress bars where people wait, quiet where they don't, and one log line per epoch."""

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import NO_WANDB, TINY_TRAIN, offline_env


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for label in ("pho", "ramen"):
        (root / label).mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / label / f"{i}.jpg")
    return root


def train_cli(tmp_path, photos, *args):
    env = offline_env(tmp_path / "home")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "peft_food",
            *TINY_TRAIN,
            "data=imagefolder",
            f"data.root={photos}",
            "data.test_size=0.25",
            NO_WANDB,
            *args,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("progress, bars", [(None, False), ("false", False), ("true", True)])
def test_bars_follow_the_terminal_unless_forced(tmp_path, photos, progress, bars):
    done = train_cli(tmp_path, photos, *([f"progress={progress}"] if progress else []), "data.cache=true")
    assert done.returncode == 0, done.stderr[-2000:]
    # Output is captured here (not a terminal): bars only when forced, for every stage that waits.
    for stage in ("screening images", "decoding once (data.cache)"):
        assert (stage in done.stderr) == bars, stage
    assert bool(re.search(r"\d+/\d+ \[", done.stderr)) == bars  # Trainer's own bars follow the same key


def test_train_log_has_one_line_per_epoch(tmp_path, photos):
    done = train_cli(tmp_path, photos, "train.epochs=3")
    assert done.returncode == 0, done.stderr[-2000:]
    [log] = tmp_path.glob("outputs/*/*/train.log")
    lines = [line for line in log.read_text().splitlines() if re.search(r"\] - epoch \d+:", line)]
    assert len(lines) == 3
    assert re.search(
        r"epoch 3: val loss \d\.\d{4} accuracy \d\.\d{4} top5_accuracy 1\.0000 macro_f1 \d\.\d{4} "
        r"\| train loss \d\.\d{4} \| \d+ img/s$",
        lines[-1],
    ), lines[-1]
