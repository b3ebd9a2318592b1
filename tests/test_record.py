"""The run record: one type, atomic writes, one-line errors for a damaged file, old records read."""

import csv
import json
import subprocess
import sys
import textwrap

import pytest

from peft_food.cli.compare import main as compare
from peft_food.tracking.record import Counts, DamagedRecord, RunRecord
from peft_food.training.rundir import plan_resume
from tests.helpers import REPO


def test_a_schema_1_record_reads_into_the_same_type():
    # mini_rank_alpha_torch2.15 was recorded in schema 1 (flat), before the protocol.
    record = RunRecord.load(REPO / "experiments" / "mini_rank_alpha_torch2.15" / "runs" / "r4_alpha32" / "metrics.json")
    assert record.status == "completed" and record.monitor == "eval_accuracy" and record.protocol == "seed"
    assert record.counts.trainable_params == 4_746 and record.counts.num_eval_samples == 200
    assert record.counts.num_test_samples is None and record.test is None
    assert record.best == 0.175 and record.best_epoch["epoch"] == 7 and record.final == 0.17
    assert record.provenance.hardware["device"] == "cpu" and record.efficiency.model_size_mb == 0.02


def test_committed_records_carry_no_machine_paths():
    for path in (REPO / "experiments").glob("*/runs/*/metrics.json"):
        text = path.read_text()
        assert "/tmp/" not in text and "/home/" not in text and "run_dir" not in text, path


def test_a_reader_never_sees_half_a_record_while_it_is_rewritten(tmp_path):
    path = tmp_path / "metrics.json"
    big = RunRecord(status="running", epochs=[{"epoch": float(i), "eval_accuracy": i / 5000} for i in range(5000)])
    big.write(path)
    # Another process rewrites the ~0.5 MB record as fast as it can, as every epoch of a run does.
    # 60 rewrites (~35 ms of CPU each on a 2-core AMD EPYC CPU): this reader reads throughout them,
    # so a file written in place would be caught half-written.
    writes = 60
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        from pathlib import Path
        from peft_food.tracking.record import RunRecord
        record = RunRecord.load(Path({str(path)!r}))
        for i in range({writes}):
            record.epochs[0]["eval_accuracy"] = i
            record.write(Path({str(path)!r}))
    """),
        ],
        cwd=REPO,
    )
    reads, seen = 0, set()
    while writer.poll() is None:
        record = RunRecord.load(path)  # raises DamagedRecord on a partial file
        assert len(record.epochs) == 5000
        reads += 1
        seen.add(record.epochs[0]["eval_accuracy"])
    assert writer.returncode == 0 and reads > 10
    assert len(seen) > 5  # the reads fell among the rewrites, not only before the first one
    assert RunRecord.load(path).epochs[0]["eval_accuracy"] == writes - 1
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_a_damaged_record_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"status": "completed", "epochs": [{"epoch": 1.0, "eval_acc')  # cut short
    with pytest.raises(DamagedRecord) as err:
        RunRecord.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value) and "JSONDecodeError" in str(err.value)


def sweep_with_a_damaged_job(root):
    for job, _status in (("0", "completed"), ("1", "damaged"), ("2", "failed")):
        (root / job / ".hydra").mkdir(parents=True)
    RunRecord(
        status="completed",
        method="lora",
        epochs=[{"epoch": 1.0, "eval_accuracy": 0.5, "eval_loss": 1.0}],
        counts=Counts(
            trainable_params=4_356,
            total_params=146_378,
            trainable_percent=2.9759,
            num_labels=4,
            num_train_samples=64,
            num_eval_samples=32,
        ),
        config={"model": {"name": "vit_tiny"}, "peft": {"r": 4}},
    ).write(root / "0" / "metrics.json")
    full = json.dumps(RunRecord(status="running", method="lora").to_json())
    (root / "1" / "metrics.json").write_text(full[: len(full) // 2])
    RunRecord(status="failed", error="ConfigError: peft.r=0 is invalid").write(root / "2" / "metrics.json")


def test_compare_shows_every_other_job_beside_a_damaged_one(tmp_path, capsys):
    sweep_with_a_damaged_job(tmp_path / "sweep")
    assert compare([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[1:4]] == [["0", "completed"], ["1", "damaged"], ["2", "failed"]]
    rows = list(csv.DictReader((tmp_path / "sweep" / "compare.csv").open()))
    assert [(r["job"], r["status"], r["val"]) for r in rows] == [
        ("0", "completed", "0.5"),
        ("1", "damaged", ""),
        ("2", "failed", ""),
    ]
    assert any(line.startswith("job 1 damaged: ") and "metrics.json is damaged" in line for line in out)
    assert "Traceback" not in "\n".join(out)


def test_compare_reads_several_sweeps_as_one_table_naming_each_job_by_its_sweep(tmp_path, capsys):
    sweep_with_a_damaged_job(tmp_path / "first")
    sweep_with_a_damaged_job(tmp_path / "second")
    assert compare([str(tmp_path / "first"), str(tmp_path / "second"), "--out", str(tmp_path / "both")]) == 0
    rows = list(csv.DictReader((tmp_path / "both" / "compare.csv").open()))
    # Both sweeps' 0/, 1/, 2/ stay apart: each job is named by its sweep.
    assert [(r["job"], r["status"]) for r in rows] == [
        (f"{sweep}/{job}", status)
        for sweep in ("first", "second")
        for job, status in (("0", "completed"), ("1", "damaged"), ("2", "failed"))
    ]
    assert not (tmp_path / "first" / "compare.csv").exists()  # --out: written there only
    assert "wrote " + str(tmp_path / "both" / "compare.csv") in capsys.readouterr().out


def test_resuming_over_a_damaged_record_is_a_one_line_error(tmp_path):
    import torch
    from safetensors.torch import save_file

    checkpoint = tmp_path / "checkpoints" / "checkpoint-8"  # whole: every file a resume reads (checkpoints.py)
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    save_file({"w": torch.zeros(2)}, checkpoint / "model.safetensors")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({}, checkpoint / name)
    (tmp_path / "metrics.json").write_text("{")
    with pytest.raises(DamagedRecord, match="metrics.json is damaged"):
        plan_resume(tmp_path, mode=None, search_root=None)
    assert plan_resume(tmp_path, mode=False, search_root=None) is None  # train.resume=false still starts


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_the_record_is_written_with_the_mode_the_umask_gives(tmp_path, umask, mode):
    # A teammate on a shared cluster reads metrics.json as they read every other file of the run
    # (a temp file from mkstemp alone would be 0600).
    import os

    previous = os.umask(umask)
    try:
        RunRecord(status="completed").write(tmp_path / "metrics.json")
    finally:
        os.umask(previous)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == mode


def test_compare_shows_a_record_with_values_of_the_wrong_type_as_damaged_naming_it(tmp_path, capsys):
    # Hand-edited or crafted records: each a TypeError or AttributeError traceback in compare before.
    sweep_with_a_damaged_job(tmp_path / "sweep")
    crafted = {
        "3": {"epochs": [{"epoch": 1.0, "eval_accuracy": 0.5}, {"epoch": 2.0, "eval_accuracy": [0.6]}]},
        "4": {"config": "lora"},
        "5": {"epochs": "1,2,3"},
        "6": {"efficiency": [1.5]},
    }
    for job, values in crafted.items():
        (tmp_path / "sweep" / job / ".hydra").mkdir(parents=True)
        body = {**RunRecord(status="completed", method="lora").to_json(), **values}
        (tmp_path / "sweep" / job / "metrics.json").write_text(json.dumps(body))
    assert compare([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = list(csv.DictReader((tmp_path / "sweep" / "compare.csv").open()))
    assert [(r["job"], r["status"]) for r in rows][3:] == [(job, "damaged") for job in crafted]
    for job, says in (
        ("3", "epochs[1].eval_accuracy is [0.6], not float"),
        ("4", 'config is "lora"'),
        ("5", 'epochs is "1,2,3"'),
        ("6", "efficiency is [1.5]"),
    ):
        [line] = [line for line in out if line.startswith(f"job {job} damaged: ")]
        assert str(tmp_path / "sweep" / job / "metrics.json") in line and says in line, line
    with pytest.raises(DamagedRecord, match="epochs is"):  # resume and reproduce read it the same way
        RunRecord.load(tmp_path / "sweep" / "5" / "metrics.json")


def a_run_dir(root, *, accuracy):
    """A run dir as peft-food-train leaves it: Hydra's .hydra/ (config.yaml among it) and the record."""
    (root / ".hydra").mkdir(parents=True)
    (root / ".hydra" / "config.yaml").write_text("seed: 42\n")
    (root / "train.log").write_text("")
    RunRecord(
        status="completed",
        method="lora",
        epochs=[{"epoch": 1.0, "eval_accuracy": accuracy, "eval_loss": 1.0}],
        config={"model": {"name": "vit_tiny"}},
    ).write(root / "metrics.json")
    return root


def test_compare_reads_a_run_dir_as_one_run_and_writes_nothing_into_it(tmp_path, capsys):
    first = a_run_dir(tmp_path / "outputs" / "2026-01-02" / "10-00-00", accuracy=0.5)
    second = a_run_dir(tmp_path / "outputs" / "2026-01-02" / "11-00-00", accuracy=0.75)
    before = sorted(p.name for p in first.rglob("*"))
    assert compare([str(first)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[1:2]] == [["2026-01-02/10-00-00", "completed"]]
    assert not any(line.startswith(".hydra") for line in out)  # its .hydra/ is no job
    assert "pass --out DIR" in out[-1]
    assert sorted(p.name for p in first.rglob("*")) == before  # no compare.csv / .png in the run dir

    assert compare([str(first), str(second), "--out", str(tmp_path / "report")]) == 0
    rows = list(csv.DictReader((tmp_path / "report" / "compare.csv").open()))
    assert [(r["job"], r["val"]) for r in rows] == [("2026-01-02/10-00-00", "0.5"), ("2026-01-02/11-00-00", "0.75")]
    capsys.readouterr()
    assert compare([str(first), "--wandb"]) == 2
    assert "pass --out DIR" in capsys.readouterr().err
    assert sorted(p.name for p in first.rglob("*")) == before
