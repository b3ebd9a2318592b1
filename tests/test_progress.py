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
def test_bars_follow_the_terminal_unless_forced_and_train_log_has_one_line_per_epoch(tmp_path, photos, progress, bars):
    forced = [f"progress={progress}"] if progress else []
    done = train_cli(tmp_path, photos, *forced, "data.cache=true", "progress_every_s=0.001")
    assert done.returncode == 0, done.stderr[-2000:]
    # Output is captured here (not a terminal): bars only when forced, for every stage that waits.
    for stage in ("screening images", "decoding once (data.cache)"):
        assert (stage in done.stderr) == bars, stage
    assert bool(re.search(r"\d+/\d+ \[", done.stderr)) == bars  # Trainer's own bars follow the same key
    # Where no bar shows, progress lines do (every step at this interval): 12 train images, batch 16,
    # 2 epochs -> steps 1/2 and 2/2; the train loss is logged from step 2 on (logging_steps=2).
    lines = re.findall(r"\] - (step \d+/\d+ \(epoch .*)", done.stdout)
    if bars:
        assert lines == []
    else:
        assert [line.split(" (")[0] for line in lines] == ["step 1/2", "step 2/2"], lines
        assert re.fullmatch(
            r"step 2/2 \(epoch 2\.00 of 2\): train loss \d\.\d{4} \| \d+ img/s \| ETA 0:00:00", lines[-1]
        )
        log = next(tmp_path.glob("outputs/*/*/train.log")).read_text()
        assert all(line in log for line in lines)  # the cluster log and train.log alike

    # Whatever the bars and progress lines do, train.log has one line per epoch (the same runs show it).
    [log] = tmp_path.glob("outputs/*/*/train.log")
    epochs = [line for line in log.read_text().splitlines() if re.search(r"\] - epoch \d+:", line)]
    assert len(epochs) == 2
    assert re.search(
        r"epoch 2: val loss \d\.\d{4} accuracy \d\.\d{4} top5_accuracy 1\.0000 macro_f1 \d\.\d{4} "
        r"\| train loss \d\.\d{4} \| \d+ img/s$",
        epochs[-1],
    ), epochs[-1]


def test_no_progress_lines_at_the_default_interval_in_a_short_run_nor_with_zero(tmp_path, photos):
    done = train_cli(tmp_path, photos, "progress_every_s=0", "train.epochs=1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "step 1/" not in done.stdout and "epoch 1:" in done.stdout


@pytest.mark.parametrize("value", ["-1", "abc"])
def test_a_bad_progress_interval_is_one_line_naming_the_key(value, tmp_path):
    from peft_food.config import parse_config
    from peft_food.errors import UserError
    from tests.helpers import TINY, compose_config

    with pytest.raises(UserError, match=r"progress_every_s=.* is invalid: use seconds between progress lines"):
        parse_config(compose_config(*TINY, f"progress_every_s={value}", output_dir=tmp_path))
