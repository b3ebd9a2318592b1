"""Kill a training run with SIGTERM, start the same command again: it continues from its last
checkpoint, in its own run dir, and ends exactly where an uninterrupted run ends. A second
process never trains into a run dir that a live one holds."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peft_food.tracking.record import RunRecord
from peft_food.training.pipeline import train
from peft_food.training.rundir import RunDirLock
from tests.helpers import NO_WANDB, TINY_TRAIN, compose_config, offline_env, read_run, run_files

# 256 images / batch 16 = 16 steps per epoch, 3 epochs: long enough to be killed mid-way.
ARGS = [
    *TINY_TRAIN,
    "data=synthetic",
    "data.num_classes=4",
    "data.per_class=64",
    "data.val_per_class=8",
    "data.test_per_class=8",
    "data.image_size=32",
    "train.epochs=3",
]


def cli(cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "peft_food", *ARGS],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(pattern: str, cwd: Path, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(cwd.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"{pattern} never appeared")


def launch(args: list[str], *, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """The train command line once more, to its end, its output kept."""
    return subprocess.run(
        [sys.executable, "-m", "peft_food", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()
    }


# A process that takes a run dir's real lock, says so, and waits to be killed.
HOLD = """
import sys, time
from pathlib import Path
from peft_food.training.rundir import RunDirLock
with RunDirLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def killed_holder(run_dir: Path) -> str:
    """The .lock a holder killed with -9 leaves in `run_dir` (its file stays; the kernel drops the
    lock with the process). Returns the file's text, after checking it names the dead process."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    holder.kill()  # SIGKILL: no clean exit, its .lock file stays behind
    holder.wait()
    stale = (run_dir / ".lock").read_text()
    assert f'"pid": {holder.pid}' in stale
    return stale


# One killed run shows both halves (each launch pays the imports and the training): SIGTERM, then
# a second process refused while a live process holds the run dir, then a .lock left by a holder
# killed with -9, then the same command resumes past it to the numbers of an uninterrupted run.
def test_killed_run_resumes_with_the_same_command_and_identical_final_metrics_and_a_live_run_dir_refuses_a_second_process(
    tmp_path,
):
    env = offline_env(tmp_path / "home")
    first = cli(tmp_path, env)
    # Epoch 1's checkpoint is complete once its trainer_state.json is written; then kill mid-epoch 2.
    wait_for("outputs/*/*/checkpoints/checkpoint-16/trainer_state.json", tmp_path)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "run the same command again to resume" in err and "Traceback" not in err
    [run_dir] = [p.parent for p in tmp_path.glob("outputs/*/*/metrics.json")]
    interrupted = RunRecord.load(run_dir / "metrics.json")
    assert interrupted.status == "interrupted"
    assert [e["epoch"] for e in interrupted.epochs] == [1]  # no half-epoch evaluation
    assert not (run_dir / ".lock").exists()  # released on the way out

    # A live holder (this test process, holding the real lock) and the same command again.
    with RunDirLock(run_dir):
        before = snapshot(run_dir)
        time.sleep(1.1)  # a new timestamped run dir for the second launch
        second = launch(ARGS, cwd=tmp_path, env=env)
        assert second.returncode == 2
        [line] = second.stderr.strip().splitlines()
        assert line.startswith(f"peft-food-train: error: {run_dir} is in use by a running training process")
        assert f"pid {os.getpid()}" in line and "train.resume=false" in line
        assert snapshot(run_dir) == before  # nothing of the live run touched
    assert list(tmp_path.glob("outputs/*/*")) == [run_dir]  # and no stub dir from the refused launch

    # A dead holder's stale .lock does not block a real resume.
    killed_holder(run_dir)
    time.sleep(1.1)  # a new timestamped run dir for the third launch
    third = cli(tmp_path, env)
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err[-2000:]
    assert f"resuming the unfinished run in {run_dir}" in out + err
    resumed = RunRecord.load(run_dir / "metrics.json")
    assert resumed.status == "completed" and resumed.resumed_from == ["checkpoint-16"]

    # One run dir: the third launch's new Hydra dir was folded in, and its log continues the first's.
    assert list(tmp_path.glob("outputs/*/*")) == [run_dir]
    log = (run_dir / "train.log").read_text()
    assert log.index("trainable params") < log.index("resuming the unfinished run") < log.rindex("trainable params")
    assert (run_dir / "model" / "adapter_model.safetensors").is_file()

    uninterrupted = train(compose_config(*ARGS, NO_WANDB, output_dir=tmp_path / "straight"))
    assert resumed.epochs == uninterrupted.epochs  # to the last digit, losses included
    assert len(resumed.epochs) == 3

    # One W&B run, resumed rather than forked: both training launches logged to the same run id.
    runs = [read_run(f) for f in run_files(run_dir)]
    assert len(runs) == 2 and runs[0].run.run_id == runs[1].run.run_id == resumed.wandb_run_id


def test_the_same_command_is_refused_while_a_first_copy_trains_even_before_its_first_checkpoint(tmp_path):
    from peft_food.training.rundir import RunDirInUse, plan_resume

    args = ["experiment=quickstart", NO_WANDB]
    # The first copy: its run dir as Hydra made it (the command's overrides), no checkpoint yet, its
    # lock held by a live process (this test's, through the real RunDirLock).
    first_dir = tmp_path / "outputs" / "2026-12-02" / "01-00-00"
    (first_dir / ".hydra").mkdir(parents=True)
    (first_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {a}\n" for a in args))
    new_dir = tmp_path / "outputs" / "2026-12-02" / "01-05-00"
    with RunDirLock(first_dir):
        env = offline_env(tmp_path / "home")
        second = launch(args, cwd=tmp_path, env=env)
        assert second.returncode == 2, second.stderr[-2000:]
        [line] = second.stderr.strip().splitlines()
        assert line.startswith(f"peft-food-train: error: {first_dir} is in use by a running training process")
        assert f"pid {os.getpid()}" in line and "train.resume=false" in line
        assert list(tmp_path.glob("outputs/*/*")) == [first_dir]  # no second run dir
        # train.resume=false is a separate run on purpose; another command is no copy at all.
        (new_dir / ".hydra").mkdir(parents=True)
        (new_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {a}\n" for a in args))
        assert plan_resume(new_dir, mode=False, search_root=tmp_path / "outputs") is None
        with pytest.raises(RunDirInUse):
            plan_resume(new_dir, mode=None, search_root=tmp_path / "outputs")
        (new_dir / ".hydra" / "overrides.yaml").write_text("- experiment=quickstart\n- peft.r=4\n")
        assert plan_resume(new_dir, mode=None, search_root=tmp_path / "outputs") is None
    # The holder let go: the same command starts fresh (nothing to resume) instead of being refused.
    (new_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {a}\n" for a in args))
    assert plan_resume(new_dir, mode=None, search_root=tmp_path / "outputs") is None
