"""Kill a training run with SIGTERM, start the same command again: it continues from its last
checkpoint and ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from peft_food.train import train
from tests.conftest import TINY_TRAIN, compose_config
from tests.wandb_file import read_run, run_files

# 256 images / batch 16 = 16 steps per epoch, 4 epochs: long enough to be killed mid-way.
ARGS = [*TINY_TRAIN, "data=synthetic", "data.num_classes=4", "data.per_class=64", "data.eval_per_class=8",
        "data.image_size=32", "train.epochs=4"]


def cli(cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "peft_food.train", *ARGS], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(pattern: str, cwd: Path, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(cwd.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"{pattern} never appeared")


def test_killed_run_resumes_with_the_same_command_and_identical_final_metrics(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    env["HOME"] = str(tmp_path / "home")
    first = cli(tmp_path, env)
    # Epoch 2's checkpoint is complete once its trainer_state.json is written; then kill mid-epoch 3.
    wait_for("outputs/*/*/checkpoints/checkpoint-32/trainer_state.json", tmp_path)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "run the same command again to resume" in err and "Traceback" not in err
    [run_dir] = [p.parent for p in tmp_path.glob("outputs/*/*/metrics.json")]
    interrupted = json.loads((run_dir / "metrics.json").read_text())
    assert interrupted["status"] == "interrupted"
    assert [e["epoch"] for e in interrupted["epochs"]] == [1, 2]  # no half-epoch evaluation

    time.sleep(1.1)  # a new timestamped run dir for the second launch
    second = cli(tmp_path, env)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-2000:]
    assert f"resuming the unfinished run in {run_dir}" in out + err
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed_from"] == ["checkpoint-32"]

    uninterrupted = train(compose_config(*ARGS, "logger=none", output_dir=tmp_path / "straight"))
    assert resumed["epochs"] == uninterrupted["epochs"]  # to the last digit, losses included
    assert len(resumed["epochs"]) == 4

    # One W&B run, resumed rather than forked: both launches logged to the same run id.
    runs = [read_run(f) for f in run_files(run_dir)]
    assert len(runs) == 2 and runs[0].run.run_id == runs[1].run.run_id == resumed["wandb_run_id"]
