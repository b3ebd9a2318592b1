"""Scaling out with the existing engines: torchrun DDP (2 CPU processes on gloo) and Hydra's
submitit launcher (the SLURM code path, run locally)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from peft_food.tracking.record import RunRecord
from tests.helpers import TINY, TINY_QUIET, offline_env, read_run, run_files


def clean_env(tmp_path: Path) -> dict:
    return offline_env(tmp_path / "home")


@pytest.mark.slow
def test_torchrun_two_processes_make_one_run_with_the_whole_eval_set(tmp_path, tiny_run):
    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "-m", "peft_food", *TINY],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dirs = list(tmp_path.glob("outputs/*/*"))
    assert len(run_dirs) == 1  # rank 1's own Hydra dir was folded into rank 0's
    record = RunRecord.load(run_dirs[0] / "metrics.json")
    _, alone = tiny_run()
    assert record.status == "completed" and record.provenance.world_size == 2
    assert record.counts.num_eval_samples == alone.counts.num_eval_samples == 32  # gathered over both ranks
    assert record.counts.trainable_params == alone.counts.trainable_params
    assert record.provenance.effective_batch_size == 2 * alone.provenance.effective_batch_size
    # Twice the batch per step: half the optimizer steps per epoch.
    steps = sorted(int(p.name.split("-")[1]) for p in (run_dirs[0] / "checkpoints").glob("checkpoint-*"))
    assert steps[-1] == 2 * 64 // (16 * 2)
    [run_file] = run_files(run_dirs[0])  # one W&B run, from rank 0
    assert read_run(run_file).summary["num_eval_samples"] == 32
    # One console: the package's lines, rank 0's only (each start-up line once), none of W&B's own
    # (~35 lines: header, history, summary, its sync hints), and the one sync command, for a dir that is there.
    console = done.stdout + done.stderr
    for line in ("trainable params:", "protocol val_test, 4 classes", "RANDOM weights", "] - epoch 1: val loss"):
        assert console.count(line) == 1, (line, console[-3000:])
    assert not [line for line in console.splitlines() if line.startswith("wandb:")], console[-3000:]
    [hint] = [line for line in console.splitlines() if "wandb sync" in line]
    assert Path(hint.split("wandb sync ")[1]) == run_file.parent


@pytest.mark.slow
def test_submitit_launcher_runs_each_sweep_job_in_its_own_process(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    # Each job gets its share of the cores: one (cpus_per_task), not all of them as torch would take
    # (without conftest.py's OMP_NUM_THREADS=1, which would make one thread the default).
    all_cores = {k: v for k, v in clean_env(tmp_path).items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "peft_food",
            "-m",
            "hydra/launcher=local",
            *TINY_QUIET,
            "train.epochs=1",
            "peft.r=2,4",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra.launcher.cpus_per_task=1",
        ],
        cwd=tmp_path,
        env=all_cores,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [RunRecord.load(tmp_path / "sweep" / str(i) / "metrics.json") for i in (0, 1)]
    assert [m.status for m in records] == ["completed", "completed"]
    assert [m.config["peft"]["r"] for m in records] == [2, 4]
    assert [m.provenance.hardware["torch_threads"] for m in records] == [1, 1]
    slots = os.cpu_count()  # one core per job: as many jobs at once as cores
    for i in (0, 1):
        assert f"with 1 of {slots} cores" in (tmp_path / "sweep" / str(i) / "train.log").read_text()
    assert (tmp_path / "sweep" / ".submitit").is_dir()  # went through submitit, not the basic launcher


def test_local_jobs_share_the_cores_and_wait_for_a_slot(tmp_path):
    from peft_food.training.cores import Share, job_slot, share_of

    assert share_of(cpus_per_task=2, cores=16) == Share(threads=2, slots=8)
    assert share_of(cpus_per_task=4, cores=2) == Share(threads=2, slots=1)  # never more than the machine
    assert share_of(cpus_per_task=None, cores=8) == Share(threads=8, slots=1)
    # One slot: a second job (another process) waits until the first one's training ends.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from peft_food.training.cores import Share, job_slot\n"
            f"with job_slot(__import__('pathlib').Path({str(tmp_path)!r}), share=Share(1, 1)):\n"
            "    print('in', flush=True); time.sleep(3)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "in\n"
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # tests run on one thread (conftest.py): from two, the slot's one is its own doing
    started = time.monotonic()
    with job_slot(tmp_path, share=Share(threads=1, slots=1), poll_s=0.05):
        waited = time.monotonic() - started
        assert torch.get_num_threads() == 1
    torch.set_num_threads(threads)  # this test process's own, for the tests after it
    holder.wait(timeout=30)
    assert waited > 1.5  # it waited for the holder's sleep to end


def test_slurm_launcher_config_composes_for_a_gpu_partition():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from peft_food.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 240)
