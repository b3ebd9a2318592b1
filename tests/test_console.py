"""The console of a run: its start states the split sizes and the classes, then one line per epoch;
Trainer's step dicts (`{'loss': ...}`) are not printed but are in train.log, line by line."""

import re
import subprocess
import sys

import pytest

from tests.helpers import NO_WANDB, TINY_TRAIN

# 4 classes x 8 images / batch 16 = 2 steps per epoch, logged every 2 steps (TINY_TRAIN), 2 epochs.
ARGS = [
    *TINY_TRAIN,
    "data=synthetic",
    "data.num_classes=4",
    "data.per_class=8",
    "data.val_per_class=2",
    "data.test_per_class=2",
    "data.image_size=32",
    NO_WANDB,
    "progress=false",
]


@pytest.mark.slow
def test_console_has_the_data_then_one_line_per_epoch_and_train_log_keeps_the_steps(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "peft_food", *ARGS], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    assert "{'" not in console and "'loss'" not in console, console  # no Trainer dicts
    assert len(re.findall(r"\] - epoch \d+: val loss", console)) == 2, console
    assert "4 classes (class_0, class_1, class_2, class_3)" in console
    assert "(32 train / 8 val / 8 test images)" in console.split("] - epoch 1:")[0]  # stated at the start
    [log] = tmp_path.glob("outputs/*/*/train.log")
    text = log.read_text()
    assert re.search(r"\] - step 2: loss \d\.\d+ grad_norm [\d.]+ learning_rate [\d.e-]+ epoch 1\n", text), text
    assert len(re.findall(r"\] - epoch \d+: val loss", text)) == 2
