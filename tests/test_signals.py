"""Signals as clusters and terminals send them, to the whole process group (DataLoader workers
included): a run with workers stops as when only its main process is signalled: one warning, the
last epoch checkpoint kept, status `interrupted`, exit 128+signum, no traceback; the same command
resumes it. SIGUSR1 (SLURM's `--signal=USR1@90` warning) stops it the same way."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import TrainerCallback

from peft_food.errors import Interrupted, UserError
from peft_food.tracking.record import RunRecord
from peft_food.training.pipeline import train
from tests.helpers import NO_WANDB, REPO, TINY_QUIET, TINY_TRAIN, compose_config

# 128 images / batch 16 = 8 steps per epoch, 2 epochs, two workers: signalled just after epoch 1's checkpoint.
ARGS = [
    *TINY_TRAIN,
    "train.workers=2",
    "data=synthetic",
    "data.num_classes=4",
    "data.per_class=32",
    "data.val_per_class=4",
    "data.test_per_class=4",
    "data.image_size=32",
    NO_WANDB,
    "progress=false",
]


def start(cwd: Path) -> subprocess.Popen:
    # Its own session, so that killpg reaches it and its workers as a terminal or SLURM would.
    return subprocess.Popen(
        [sys.executable, "-m", "peft_food", *ARGS],
        cwd=cwd,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(pattern: str, cwd: Path, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := sorted(cwd.glob(pattern)):
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"{pattern} never appeared")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_whole_group_stops_a_run_with_workers_as_one_to_the_main_process(tmp_path, signum):
    run = start(tmp_path)
    wait_for("outputs/*/*/checkpoints/checkpoint-8/trainer_state.json", tmp_path)
    os.killpg(run.pid, signum)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 128 + signum, out[-3000:]
    assert out.count(f"{signal.Signals(signum).name} received: stopping after this step") == 1, out[-3000:]
    assert "Traceback" not in out and "DataLoader worker" not in out, out[-3000:]
    assert "run the same command again to resume" in out
    [run_dir] = [p.parent for p in tmp_path.glob("outputs/*/*/metrics.json")]
    record = RunRecord.load(run_dir / "metrics.json")
    assert record.status == "interrupted" and [e["epoch"] for e in record.epochs] == [1]
    assert (run_dir / "checkpoints" / "checkpoint-8" / "trainer_state.json").is_file()
    assert not (run_dir / "checkpoints" / "checkpoint-16").exists()  # the partial epoch saved nothing
    if signum != signal.SIGTERM:
        return  # resuming is the same for every signal: once is enough

    # The same config resumes it, here in this process (the signal was the subprocess's part; the
    # command finding its unfinished run dir again is tests/test_resume.py's).
    train(compose_config(*ARGS, output_dir=run_dir))
    resumed = RunRecord.load(run_dir / "metrics.json")
    assert resumed.status == "completed" and resumed.resumed_from == ["checkpoint-8"]
    assert [e["epoch"] for e in resumed.epochs] == [1, 2]


class SignalAt(TrainerCallback):
    """Sends this process `signum` (as SLURM would) at an optimizer step, mid-epoch."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def test_slurm_usr1_warning_stops_after_the_step_keeping_the_last_epoch_checkpoint(tmp_path, monkeypatch):
    # 64 images / batch 16 = 4 steps per epoch; USR1 in epoch 2, as `sbatch --signal=USR1@90` sends it.
    import peft_food.training.pipeline as pipeline

    build = pipeline.build_trainer
    monkeypatch.setattr(
        pipeline,
        "build_trainer",
        lambda spec, **kw: build(spec, **{**kw, "callbacks": [*kw["callbacks"], SignalAt(signal.SIGUSR1, step=6)]}),
    )
    with pytest.raises(Interrupted) as stopped:
        train(compose_config(*TINY_QUIET, output_dir=tmp_path))
    assert stopped.value.signum == signal.SIGUSR1 and stopped.value.checkpoint.name == "checkpoint-4"
    record = RunRecord.load(tmp_path / "metrics.json")
    assert record.status == "interrupted" and [e["epoch"] for e in record.epochs] == [1]
    assert not (tmp_path / "checkpoints" / "checkpoint-8").exists()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # the run's handler is gone with the run


def with_callback(monkeypatch, callback: TrainerCallback) -> None:
    """Every run trained from here on gets `callback` beside its own (a signal at a chosen moment)."""
    import peft_food.training.pipeline as pipeline

    build = pipeline.build_trainer
    monkeypatch.setattr(
        pipeline, "build_trainer", lambda spec, **kw: build(spec, **{**kw, "callbacks": [*kw["callbacks"], callback]})
    )


def test_a_run_with_workers_stopped_mid_epoch_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path, monkeypatch):
    """Workers draw the augmentations from their own RNGs: the resumed run's new workers continue
    the states the interrupted run's had at its last epoch checkpoint (worker_rng.py), and no new
    iterator draws from the training process's RNG, so epochs 2 and 3 (and test) match to the digit."""
    args = [*TINY_QUIET, "train.workers=2", "train.epochs=3", "progress=false"]
    uninterrupted = train(compose_config(*args, output_dir=tmp_path / "a"))
    with monkeypatch.context() as patch:
        with_callback(patch, SignalAt(signal.SIGTERM, step=6))  # 4 steps per epoch: in epoch 2
        with pytest.raises(Interrupted):
            train(compose_config(*args, output_dir=tmp_path / "b"))
    assert (tmp_path / "b" / "checkpoints" / "checkpoint-4" / "worker_rng.json").is_file()
    resumed = train(compose_config(*args, output_dir=tmp_path / "b"))
    assert resumed.resumed_from == ["checkpoint-4"] and len(resumed.epochs) == 3
    assert resumed.epochs == uninterrupted.epochs and resumed.test == uninterrupted.test


class SignalAfterTraining(TrainerCallback):
    """SIGTERM at the first prediction step after training: during the test pass."""

    def __init__(self) -> None:
        self.trained = False

    def on_train_end(self, args, state, control, **kwargs):
        self.trained = True

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.trained:
            os.kill(os.getpid(), signal.SIGTERM)


def then_signal(module, name: str, monkeypatch) -> None:
    """`module.name` runs, then this process gets SIGTERM (the handler runs as it returns)."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(module, name, wrapped)


def at_stage(stage: str, monkeypatch) -> None:

    import peft_food.evaluation.results as results
    import peft_food.training.pipeline as pipeline

    if stage == "test pass":
        with_callback(monkeypatch, SignalAfterTraining())
    elif stage == "per-class files":
        then_signal(results, "_write_csv", monkeypatch)  # after per_class.csv, before the rest
    elif stage == "plots":  # the end-of-run pictures (not each epoch's curves.png): drawn, not yet in place
        save = results._save_figure

        def drawn_then_signal(fig, path, **kwargs):
            with monkeypatch.context() as inner:
                then_signal(fig, "savefig", inner)
                save(fig, path, **kwargs)

        monkeypatch.setattr(results, "_save_figure", drawn_then_signal)
    elif stage == "saving":
        then_signal(pipeline, "save_trained", monkeypatch)  # model/ written, its card not


@pytest.fixture(scope="module")
def uninterrupted(tiny_run):
    return tiny_run()[1]  # the same TINY_QUIET run, uninterrupted (shared)


@pytest.mark.parametrize("stage", ["test pass", "per-class files", "plots", "saving"])
def test_a_signal_after_the_last_epoch_stops_the_run_as_interrupted_and_it_resumes_to_completion(
    tmp_path, monkeypatch, stage, uninterrupted
):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        at_stage(stage, patch)
        with pytest.raises(Interrupted) as stopped:
            train(compose_config(*TINY_QUIET, output_dir=run_dir))
    assert stopped.value.signum == signal.SIGTERM and stopped.value.checkpoint.name == "checkpoint-8"
    record = RunRecord.load(run_dir / "metrics.json")
    assert record.status == "interrupted" and [e["epoch"] for e in record.epochs] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert not [p for p in written if p.stat().st_size == 0 and p.suffix != ".lock"]  # nothing left half-written
    assert not [p for p in written if p.name.endswith(".tmp")]
    if stage == "plots":
        assert not (run_dir / "confusion.png").exists() and (run_dir / "per_class.csv").is_file()

    resumed = train(compose_config(*TINY_QUIET, output_dir=run_dir))
    assert resumed.status == "completed" and resumed.resumed_from == ["checkpoint-8"]
    assert resumed.epochs == uninterrupted.epochs and resumed.test == uninterrupted.test
    assert (run_dir / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "model" / "README.md").is_file()


# The second SIGTERM arrives while the step the first one waits for is still running.
TWICE = """
import os, signal
from transformers import TrainerCallback
import peft_food.training.pipeline as pipeline

class Twice(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if state.global_step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

build = pipeline.build_trainer
pipeline.build_trainer = lambda spec, **kw: build(spec, **{**kw, "callbacks": [*kw["callbacks"], Twice()]})
from peft_food.cli.train import cli
cli()
"""


def run_script(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """`script` (which ends by calling the train command line) on the tiny run, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-c", script, *TINY_QUIET, "progress=false"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_second_sigterm_stops_at_once_with_one_line(tmp_path):
    done = run_script(TWICE, tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    assert out.count("SIGTERM received") == 1
    [line] = [line for line in done.stderr.splitlines() if line.startswith("peft-food-train:")]
    assert line.startswith("peft-food-train: stopped by SIGTERM; last checkpoint: ") and line.endswith(
        "checkpoint-4; run the same command again to resume"
    )
    [record] = tmp_path.glob("outputs/*/*/metrics.json")
    assert RunRecord.load(record).status == "interrupted"


# Ctrl-C while the command line is still starting (here: as the config is checked), before any
# handler of the run's own: one line, exit 130, no KeyboardInterrupt traceback.
EARLY = """
import os, signal
import peft_food.cli.train as train

parse = train.parse_config
def parse_then_ctrl_c(cfg):
    os.kill(os.getpid(), signal.SIGINT)
    return parse(cfg)
train.parse_config = parse_then_ctrl_c
train.cli()
"""


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    done = run_script(EARLY, tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 128 + signal.SIGINT, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "peft-food-train: interrupted (Ctrl-C) before anything was saved"


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs: a disk the test can fill (root only; skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


class FillDiskAt(TrainerCallback):
    """Once checkpoint `step` is saved, fills its disk with one file until the kernel says ENOSPC."""

    def __init__(self, disk: Path, step: int):
        self.filler, self.step = disk / "filler", step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            with self.filler.open("wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 2**20)
                        f.flush()
                except OSError:
                    pass


def test_a_full_disk_fails_the_run_in_one_line_and_the_same_command_resumes_once_there_is_space(
    small_disk, monkeypatch, uninterrupted
):
    run_dir = small_disk / "run"
    filler = FillDiskAt(small_disk, step=4)
    with monkeypatch.context() as patch:
        with_callback(patch, filler)  # the disk fills after epoch 1's checkpoint: epoch 2's record cannot be written
        with pytest.raises(UserError) as failed:
            train(compose_config(*TINY_QUIET, output_dir=run_dir))
    message = str(failed.value)
    assert "\n" not in message and message.startswith(f"no space left on the disk holding {run_dir}")
    assert "run the same command again to resume" in message and "hydra.run.dir=" in message
    assert RunRecord.load(run_dir / "metrics.json").status == "running"  # the disk was full: the last record stays
    assert not list(run_dir.rglob(".*.tmp"))  # no partial record left behind

    filler.filler.unlink()  # space again: the same command resumes from epoch 1's checkpoint
    resumed = train(compose_config(*TINY_QUIET, output_dir=run_dir))
    assert resumed.status == "completed" and resumed.resumed_from == ["checkpoint-4"]
    assert resumed.epochs == uninterrupted.epochs and resumed.test == uninterrupted.test
