"""Multirun sweeps through the real CLI: one W&B run per job in one group, failures recorded,
the rest of the sweep still runs, and peft-food-compare reads the result."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.errors import HydraException
from omegaconf import OmegaConf

from peft_food.tracking.record import RunRecord
from peft_food.tracking.sweep import grid_jobs, objective
from peft_food.training.pipeline import train
from tests.helpers import NO_WANDB, TINY, TINY_QUIET, compose_config, offline_env, read_run, run_files


def sweep(tmp_path: Path, *args: str, sweep_dir: bool = True) -> subprocess.CompletedProcess:
    """The sweep in `tmp_path/sweep`, or (sweep_dir=False) where Hydra puts it: multirun/<date>/<time>."""
    env = offline_env(tmp_path / "home")  # no ~/.netrc W&B login: offline by default
    where = [f"hydra.sweep.dir={tmp_path / 'sweep'}"] if sweep_dir else []
    return subprocess.run(
        [sys.executable, "-m", "peft_food", "-m", *TINY, *args, *where],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def basic_sweeper_jobs(params: dict[str, str], task: list[str]) -> list[list[str]]:
    """The job list Hydra's own basic sweeper launches: the reference grid_jobs must equal."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([*(f"{k}={v}" for k, v in params.items()), *task])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


@pytest.mark.parametrize(
    "params, task",
    [
        ({}, ["peft.r=4,8,16", "peft.alpha=8,16"]),
        # sweep-file params first; a command-line value for the same key keeps the key's place
        ({"peft.r": "4,8", "peft.alpha": "range(8,33,8)"}, ["peft=lora,dora", "peft.r=16,2", "seed=1"]),
        ({"peft": "choice(lora,ia3)"}, ["+extra=a,b", "~train.warmup_ratio", "train.lr=1e-3,glob(*)", "x='a,b'"]),
    ],
)
def test_grid_jobs_launch_in_the_basic_sweepers_order(params, task):
    hydra_cfg = OmegaConf.create({"sweeper": {"params": params}, "overrides": {"task": task}})
    jobs = [job for job, _ in grid_jobs(hydra_cfg)]
    assert jobs == basic_sweeper_jobs(params, task) and len(jobs) > 1


def test_grid_jobs_refuses_an_interval_as_the_basic_sweeper_does():
    hydra_cfg = OmegaConf.create({"sweeper": {"params": {}}, "overrides": {"task": ["train.lr=interval(0,1)"]}})
    with pytest.raises(HydraException, match="BasicSweeper does not support sweep type : INTERVAL_SWEEP"):
        grid_jobs(hydra_cfg)


def test_rank_by_alpha_grid_gives_one_wandb_run_per_job_in_one_group(tmp_path):
    done = sweep(tmp_path, "peft.r=2,4", "peft.alpha=4,8", "train.epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("[0-9]*"))
    assert len(jobs) == 4
    records = [RunRecord.load(job / "metrics.json") for job in jobs]
    assert [m.status for m in records] == ["completed"] * 4
    # startup_s counts from each job's own start: the first job's includes the process's imports,
    # the later ones (same process) do not, so none of them counts the jobs before it.
    startups = [m.efficiency.startup_s for m in records]
    assert all(0 < s < startups[0] for s in startups[1:]), startups

    runs = [read_run(f) for job in jobs for f in run_files(job)]
    assert len(runs) == 4 and len({r.run.run_id for r in runs}) == 4
    assert len({r.run.run_group for r in runs}) == 1 and runs[0].run.run_group.startswith("sweep-")
    assert [r.run.display_name for r in runs] == ["r=2,alpha=4", "r=2,alpha=8", "r=4,alpha=4", "r=4,alpha=8"]
    assert all(set(r.run.tags) == {"lora", "vit_tiny"} for r in runs)
    assert [(r.config["peft.r"], r.config["peft.alpha"]) for r in runs] == [(2, 4), (2, 8), (4, 4), (4, 8)]
    # Each run logged its own count: LoRA on q and v of 4 layers, 64 wide: 2 * 4 * 2 * 64 * r.
    head = 64 * 4 + 4
    assert [r.summary["trainable_params"] for r in runs] == [1024 * r + head for r in (2, 2, 4, 4)]
    assert all(r.exit_code == 0 for r in runs)

    # Nothing leaks between jobs: the last job equals the same config trained alone.
    alone = train(
        compose_config(*TINY_QUIET, "peft.r=4", "peft.alpha=8", "train.epochs=1", output_dir=tmp_path / "alone")
    )
    assert alone.epochs == records[3].epochs


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory):
    """A sweep of two jobs, one of which fails, in Hydra's own layout (multirun/<date>/<time>):
    (where the command ran, its result, the sweep dir)."""
    tmp_path = tmp_path_factory.mktemp("failing")
    done = sweep(tmp_path, "peft.r=0,4", "train.epochs=1", sweep_dir=False)
    [sweep_dir] = (tmp_path / "multirun").glob("*/*")
    return tmp_path, done, sweep_dir


def test_a_finished_sweep_is_named_in_multirun_latest_as_a_run_in_outputs_latest(failing_sweep):
    tmp_path, done, sweep_dir = failing_sweep  # finished, its failed job and all (compare shows both)
    assert "sweep finished" in done.stderr + done.stdout, done.stderr[-3000:]
    # Relative to where the command ran, as outputs/latest is: `peft-food-compare $(cat multirun/latest)`.
    assert (tmp_path / "multirun" / "latest").read_text() == f"{sweep_dir.relative_to(tmp_path)}\n"
    assert not (tmp_path / "outputs" / "latest").exists()  # a sweep job is not a run of outputs/


def test_failed_job_is_recorded_and_the_others_still_run(failing_sweep):
    _, done, sweep_dir = failing_sweep
    assert done.returncode == 1
    failed = RunRecord.load(sweep_dir / "0" / "metrics.json")
    completed = RunRecord.load(sweep_dir / "1" / "metrics.json")
    assert failed.status == "failed" and "peft.r=0 is invalid" in failed.error
    assert completed.status == "completed" and len(completed.epochs) == 1
    assert "sweep finished: 1 of 2 jobs completed" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_compare_prints_table_and_writes_csv_and_png(failing_sweep, capsys):
    from peft_food.cli.compare import main as compare

    tmp_path, _, sweep_dir = failing_sweep
    assert compare([str(sweep_dir), "--out", str(tmp_path / "report")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["job", "status", "method", "model", "r"]
    assert any(line.startswith("every job: alpha 16") for line in table)  # the same for both: said once
    assert table[1].split()[:5] == ["0", "failed", "lora", "vit_tiny", "0"]
    assert table[2].split()[:5] == ["1", "completed", "lora", "vit_tiny", "4"]
    assert any("peft.r=0 is invalid" in line for line in table)

    rows = list(csv.DictReader((tmp_path / "report" / "compare.csv").open()))
    assert [(row["job"], row["status"], row["r"]) for row in rows] == [("0", "failed", "0"), ("1", "completed", "4")]
    completed = RunRecord.load(sweep_dir / "1" / "metrics.json")
    assert rows[1]["monitor"] == "eval_accuracy" and float(rows[1]["val"]) == completed.best
    assert float(rows[1]["test"]) == completed.test["best"]["test_accuracy"] and rows[1]["protocol"] == "val_test"
    assert any(
        line.startswith("val: best val accuracy over the epochs (picks the checkpoint); test:") for line in table
    )
    assert int(rows[1]["trainable_params"]) == completed.counts.trainable_params
    png = (tmp_path / "report" / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_compare_rejects_a_dir_with_no_jobs(tmp_path, capsys):
    from peft_food.cli.compare import main as compare

    assert compare([str(tmp_path)]) == 2
    assert "no jobs in" in capsys.readouterr().err


@pytest.mark.slow
def test_committed_optuna_sweep_runs_trials(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    done = sweep(tmp_path, "+sweep=lora_optuna", "hydra.sweeper.n_trials=2", "train.epochs=1", NO_WANDB)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [RunRecord.load(p) for p in sorted((tmp_path / "sweep").glob("*/metrics.json"))]
    assert len(records) == 2 and all(m.status == "completed" for m in records)
    # Optuna maximised what each job returned: its best val accuracy (objective), not a test number.
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(objective(m) for m in records)
    assert all(objective(m) == m.best_epoch["eval_accuracy"] and m.protocol == "val_test" and m.test for m in records)
    assert "alembic" not in done.stdout + done.stderr  # Optuna's storage library sets up quietly
