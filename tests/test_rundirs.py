"""No launch deletes or adopts another's run, and every interrupted run resumes: launches in the same
second, a run dir named by hand, an edited config, a torn checkpoint, a run killed with -9 and one
killed during start-up, a run dir named past the filesystem's limit."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peft_food.cli.preflight import preflight
from peft_food.errors import ConfigError, UserError
from peft_food.tracking.compare import collect
from peft_food.tracking.record import RunRecord
from peft_food.training.checkpoints import complete, latest_checkpoint
from peft_food.training.claim import sweep_dead_starts
from peft_food.training.pipeline import train
from peft_food.training.rundir import RunDirLock, config_changes, plan_resume
from tests.helpers import NO_WANDB, TINY, TINY_QUIET, compose_config, copy_run, offline_env, read_run, run_files

ARGS = TINY_QUIET  # 64 train images / batch 16: 4 steps an epoch, 2 epochs


def env_for(tmp_path: Path) -> dict:
    return offline_env(tmp_path / "home")


def snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tiny_run, tmp_path_factory) -> tuple[Path, RunRecord]:
    """One uninterrupted tiny run (checkpoint-4 and -8), with the .hydra/ a launch of ARGS writes."""
    shared, record = tiny_run()  # TINY_QUIET = ARGS
    run_dir = copy_run(shared, tmp_path_factory.mktemp("finished") / "run")
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {a}\n" for a in ARGS))
    return run_dir, record


def killed_copy(finished: tuple[Path, RunRecord], where: Path) -> Path:
    """The finished run as a kill -9 during its last epoch's checkpoint leaves it: record `running`
    (its epochs written), no model yet, a stale lock of a dead process."""
    shutil.copytree(finished[0], where)
    record = RunRecord.load(where / "metrics.json")
    record.status, record.test = "running", None
    record.write(where / "metrics.json")
    shutil.rmtree(where / "model")
    (where / ".lock").write_text('{"host": "gone", "pid": 999999, "since": "2026-12-01T10:00:00"}')
    return where


@pytest.mark.slow
def test_launches_in_the_same_second_get_their_own_dirs_and_a_copy_is_refused(tmp_path):
    # A start-up stub of a launch that died (no live holder, nothing of a run): swept away.
    dead = tmp_path / "outputs" / "2026-11-30" / "09-00-00"
    (dead / ".hydra").mkdir(parents=True)
    (dead / "train.log").write_text("")
    (dead / ".lock").write_text('{"pid": 999999}')
    # Every launch in the same (frozen) second: seed=1, seed=2 and seed=1 again.
    frozen = "hydra.run.dir=outputs/2026-12-02/${now:01-00-00}"
    launches = [
        subprocess.Popen(
            [sys.executable, "-m", "peft_food", *ARGS, seed, frozen],
            cwd=tmp_path,
            env=env_for(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("seed=1", "seed=2", "seed=1")
    ]
    done = [(p, *p.communicate(timeout=600)) for p in launches]
    refused = [(p, err) for p, _, err in done if p.returncode != 0]
    assert len(refused) == 1, [err[-2000:] for _, _, err in done]
    [(copy, err)] = refused
    assert copy.returncode == 2 and copy.args[-2] == "seed=1"
    [line] = err.strip().splitlines()
    assert "is in use by a running training process" in line and "train.resume=false" in line

    runs = sorted(p for p in tmp_path.glob("outputs/*/*") if p.is_dir())
    assert len(runs) == 2 and {p.name for p in runs} <= {"01-00-00", "01-00-00-01", "01-00-00-02"}
    assert not dead.exists()
    seeds = []
    for run_dir in runs:
        record = RunRecord.load(run_dir / "metrics.json")
        seed = record.config["seed"]
        assert (
            record.status == "completed" and f"- seed={seed}\n" in (run_dir / ".hydra" / "overrides.yaml").read_text()
        )
        assert (run_dir / "model" / "adapter_model.safetensors").is_file() and not (run_dir / ".lock").exists()
        seeds.append(seed)
    assert sorted(seeds) == [1, 2]
    refused_dir = line.split(" is in use")[0].removeprefix("peft-food-train: error: ")
    assert RunRecord.load(Path(refused_dir) / "metrics.json").config["seed"] == 1  # the first copy, kept


@pytest.mark.slow
def test_a_run_dir_named_by_hand_is_its_own_run(tmp_path, finished):
    unfinished = killed_copy(finished, tmp_path / "outputs" / "2026-12-01" / "10-00-00")
    before = snapshot(unfinished)
    named = tmp_path / "outputs" / "2026-12-01" / "mine"  # beside it: the old search started at its grandparent
    done = subprocess.run(
        [sys.executable, "-m", "peft_food", *ARGS, f"hydra.run.dir={named}"],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" not in done.stdout + done.stderr
    assert snapshot(unfinished) == before  # neither resumed nor touched
    record = RunRecord.load(named / "metrics.json")
    assert record.status == "completed" and record.resumed_from == [] and len(record.epochs) == 2


def test_a_resume_whose_resolved_config_differs_is_refused_naming_the_keys(tmp_path, finished):
    outputs = tmp_path / "outputs"
    unfinished = killed_copy(finished, outputs / "2026-12-01" / "10-00-00")
    before = snapshot(unfinished)
    stub = outputs / "2026-12-04" / "12-00-00"  # the same overrides; the experiment's YAML edited since
    (stub / ".hydra").mkdir(parents=True)
    shutil.copy(unfinished / ".hydra" / "overrides.yaml", stub / ".hydra")
    with pytest.raises(UserError) as err:
        train(compose_config(*ARGS, "train.lr=0.5", "train.epochs=1", output_dir=stub), resume_search=outputs)
    [line] = str(err.value).splitlines()
    assert line.startswith(f"{unfinished} is an unfinished run of this command but its config differs: ")
    assert "train.lr (" in line and "-> 0.5)" in line and "train.epochs (2.0 -> 1.0)" in line
    assert "train.resume=false" in line and "output_dir" not in line
    assert snapshot(unfinished) == before
    # What may change on a resume: more epochs, how it resumes, what it logs, the loader's processes.
    config = RunRecord.load(unfinished / "metrics.json").config
    grown = {
        **config,
        "train": {**config["train"], "epochs": 5, "resume": True, "workers": 2},
        "logger": {**config["logger"], "mode": "offline"},
        "output_dir": str(stub),
    }
    assert config_changes(unfinished, config=grown) == []


def test_a_torn_checkpoint_is_passed_over_and_the_run_ends_as_an_uninterrupted_one(
    tmp_path, finished, caplog, offline_wandb
):
    run_dir = killed_copy(finished, tmp_path / "run")
    (run_dir / "checkpoints" / "checkpoint-8" / "trainer_state.json").unlink()  # torn mid-write
    assert latest_checkpoint(run_dir).name == "checkpoint-4"
    with caplog.at_level(logging.WARNING):
        resumed = train(compose_config(*TINY, output_dir=run_dir))  # W&B offline: the summary says how it ended
    assert [r.getMessage() for r in caplog.records if "incomplete" in r.getMessage()] == [
        f"{run_dir / 'checkpoints' / 'checkpoint-8'} is incomplete (torn by a kill or a full disk): deleted, "
        f"resuming from checkpoint-4"
    ]
    assert resumed.status == "completed" and resumed.resumed_from == ["checkpoint-4"]
    assert resumed.epochs == finished[1].epochs  # to the last digit; epoch 1 kept, epoch 2 redone
    assert resumed.test == finished[1].test
    [run_file] = run_files(run_dir)
    assert read_run(run_file).summary["resumed_after"] == "dead"  # killed: its record still said running


def test_a_checkpoint_is_complete_only_with_every_file_whole(tmp_path, finished):
    source = finished[0] / "checkpoints" / "checkpoint-8"
    assert complete(source)
    for name, damage in [
        ("adapter_model.safetensors", "truncate"),
        ("optimizer.pt", "truncate"),
        ("scheduler.pt", "delete"),
        ("rng_state.pth", "delete"),
        ("trainer_state.json", "truncate"),
    ]:
        torn = tmp_path / name
        shutil.copytree(source, torn)
        if damage == "delete":
            (torn / name).unlink()
        else:
            os.truncate(torn / name, (torn / name).stat().st_size // 2)
        assert not complete(torn), name


def test_a_running_record_whose_holder_is_gone_reads_as_dead(tmp_path, finished):
    sweep = tmp_path / "multirun" / "2026-12-01" / "10-00-00"
    job = killed_copy(finished, sweep / "0")
    [row] = collect(sweep)
    assert row["status"] == "dead"  # compare: killed, not running
    with RunDirLock(job):  # a live holder: running
        assert collect(sweep)[0]["status"] == "running"
    assert plan_resume(job, mode=None, search_root=None, config=None) == job  # and it resumes


def test_stubs_of_launches_that_died_during_start_up_are_swept_and_nothing_else(tmp_path, finished):
    outputs = tmp_path / "outputs"

    def stub(name: str, record: str | None = None) -> Path:
        path = outputs / "2026-12-01" / name
        (path / ".hydra").mkdir(parents=True)
        (path / "train.log").write_text("")
        (path / ".lock").write_text('{"pid": 999999}')
        if record:
            RunRecord(status=record).write(path / "metrics.json")
        return path

    dead, dead_running = stub("09-00-00"), stub("09-00-01", record="running")
    failed, live = stub("09-00-02", record="failed"), stub("09-00-03")
    run = killed_copy(finished, outputs / "2026-12-01" / "10-00-00")
    with RunDirLock(live):  # another launch, alive, still starting
        assert sweep_dead_starts(outputs) == [dead, dead_running]
    assert live.is_dir() and failed.is_dir() and (run / "checkpoints").is_dir()


@pytest.mark.parametrize(
    "override, key", [("hydra.run.dir=outputs/{long}", "hydra.run.dir"), ("hydra.job.name={long}", "hydra.job.name")]
)
def test_a_run_dir_name_over_the_filesystem_limit_is_one_line(tmp_path, override, key, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        preflight(
            ["experiment=quickstart", NO_WANDB, override.format(long="x" * 300)],
            config_name="train",
            prog="peft-food-train",
        )
    [line] = str(err.value).splitlines()
    assert line.startswith(f"{key}: the name 'xxx") and "over the filesystem's limit of" in line
    assert line.endswith(f"give a shorter {key}")
    assert not (tmp_path / "outputs").exists()
