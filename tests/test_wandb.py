"""The W&B side of a run, read back from the offline run files (no mocked wandb): one clean
config, the user's WANDB_* settings, per-class results, the model as an artifact, W&B Sweeps."""

import csv
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from peft_food.cli.compare import main as compare
from peft_food.cli.predict import main as predict
from peft_food.config import parse_config
from peft_food.training.pipeline import train
from tests.helpers import REPO, TINY, compose_config, offline_env, read_run, run_files, scrub_wandb


def leaves(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            keys |= leaves(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


@pytest.fixture(scope="module")
def lora_wandb_run(tmp_path_factory):
    """One offline W&B run, shared by the three tests that read it (none changes it)."""
    run_dir = tmp_path_factory.mktemp("wandb") / "run"
    cfg = compose_config(*TINY, "train.epochs=2", "logger.examples=6", output_dir=run_dir)
    with pytest.MonkeyPatch.context() as patch:  # what the offline_wandb fixture does, for the module
        scrub_wandb(patch, home=tmp_path_factory.mktemp("home"))
        record = train(cfg)
    [run_file] = run_files(run_dir)
    return run_dir, record, read_run(run_file), cfg


def test_the_run_config_is_the_resolved_config_the_method_and_the_provenance_only(lora_wandb_run):
    run_dir, record, wb, cfg = lora_wandb_run
    resolved = parse_config(cfg).config
    expected = {"method"} | leaves(resolved) | leaves({"provenance": asdict(record.provenance)})
    assert set(wb.config) - {"_wandb"} == expected
    assert wb.config["train.lr"] == resolved["train"]["lr"] and "learning_rate" not in wb.config
    assert wb.config["provenance.git.sha"] == record.provenance.git["sha"]
    assert wb.config["provenance.versions.torch"] == record.provenance.versions["torch"]
    # Trainer's metrics are still logged, under the names transformers' callback uses.
    assert any("train/loss" in h and "train/global_step" in h for h in wb.history)
    assert wb.run.project == "peft-food" and wb.run.job_type == "train"


def test_per_class_results_go_to_the_run_dir_and_to_wandb(lora_wandb_run):
    run_dir, record, wb, _ = lora_wandb_run
    rows = list(csv.DictReader((run_dir / "per_class.csv").open()))
    assert [r["class"] for r in rows] == record.labels
    assert sum(int(r["eval_images"]) for r in rows) == record.counts.num_eval_samples
    examples = list(csv.DictReader((run_dir / "examples.csv").open()))
    assert len(examples) == 6
    correct = [e["correct"] == "True" for e in examples]
    assert correct == sorted(correct)  # misclassified ones first
    for image in ("confusion.png", "examples.png"):
        assert (run_dir / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    [logged] = [h for h in wb.history if "per_class._type" in h]
    assert logged["per_class.nrows"] == len(record.labels) and logged["examples.nrows"] == 6
    assert logged["confusion._type"] == "image-file"
    tables = {a.name.rsplit("-", 1)[-1]: a for a in wb.artifacts if a.type == "run_table"}
    per_class = tables["per_class"].json("per_class.table.json")
    assert [row[0] for row in per_class["data"]] == record.labels
    assert [row[2] for row in per_class["data"]] == [float(r["accuracy"]) for r in rows]
    shown = tables["examples"]
    assert sum(p.startswith("media/images/") for p in shown.files) == 6  # the images themselves


def test_the_model_is_an_artifact_that_predicts_like_the_run(lora_wandb_run, tmp_path, capsys):
    run_dir, record, wb, _ = lora_wandb_run
    model = wb.artifact("model")
    assert set(model.aliases) == {"best", "latest"} and model.name == f"model-{wb.run.run_id}"
    assert model.metadata["method"] == "lora" and model.metadata["best"] == record.best
    assert model.metadata["trainable_params"] == record.counts.trainable_params
    assert {"adapter_model.safetensors", "peft_food.json", "preprocessor_config.json", "base/model.safetensors"} <= set(
        model.files
    )

    downloaded = tmp_path / "artifact"  # what `wandb artifact get` would write
    for path, staged in model.files.items():
        (downloaded / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(staged, downloaded / path)
    image = tmp_path / "dish.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 90, 30)).save(image)
    assert predict([str(run_dir), str(image), "--json"]) == 0
    from_run = capsys.readouterr().out
    assert predict([str(downloaded), str(image), "--json"]) == 0
    assert capsys.readouterr().out == from_run


def test_full_fine_tuning_logs_its_model_only_when_asked(tmp_path, offline_wandb):
    for log_model, expected in (("null", []), ("true", ["model"])):
        run_dir = tmp_path / log_model
        train(compose_config(*TINY, "peft=full", "train.epochs=1", f"logger.log_model={log_model}", output_dir=run_dir))
        [run_file] = run_files(run_dir)
        assert [a.type for a in read_run(run_file).artifacts if a.type == "model"] == expected


def test_wandb_environment_is_honoured_and_the_config_wins_over_it(tmp_path, offline_wandb, monkeypatch):
    env = {
        "WANDB_PROJECT": "cluster-proj",
        "WANDB_RUN_GROUP": "cluster-group",
        "WANDB_NAME": "cluster-name",
        "WANDB_JOB_TYPE": "cluster-job",
        "WANDB_TAGS": "night, a100",
        "WANDB_NOTES": "from the script",
        "WANDB_DIR": str(tmp_path / "wandb-dir"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    train(compose_config(*TINY, "train.epochs=1", "logger.examples=0", output_dir=tmp_path / "env"))
    assert not (tmp_path / "env" / "wandb").exists()  # WANDB_DIR decides where the files go
    [run_file] = sorted((tmp_path / "wandb-dir").glob("wandb/offline-run-*/run-*.wandb"))
    run = read_run(run_file).run
    assert (run.project, run.run_group, run.display_name, run.job_type, run.notes) == (
        "cluster-proj",
        "cluster-group",
        "cluster-name",
        "cluster-job",
        "from the script",
    )
    assert set(run.tags) == {"night", "a100", "lora", "vit_tiny"}

    train(
        compose_config(
            *TINY,
            "train.epochs=1",
            "logger.examples=0",
            "logger.project=mine",
            "logger.group=g",
            "logger.job_type=probe",
            f"logger.dir={tmp_path / 'mine'}",
            "logger.tags=[x]",
            output_dir=tmp_path / "explicit",
        )
    )
    [run_file] = sorted((tmp_path / "mine").glob("wandb/offline-run-*/run-*.wandb"))
    run = read_run(run_file).run
    assert (run.project, run.run_group, run.display_name, run.job_type) == ("mine", "g", "cluster-name", "probe")
    assert set(run.tags) == {"x", "night", "a100", "lora", "vit_tiny"}


def sweep(tmp_path: Path, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = offline_env(tmp_path / "home", **(env_extra or {}))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "peft_food",
            "-m",
            *TINY,
            "train.epochs=1",
            "logger.examples=0",
            *args,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_seeds_group_by_setting_and_compare_says_whether_a_gap_is_noise_and_the_users_wandb_group_is_kept(
    tmp_path, capsys
):
    # One sweep shows both: the seeds grouped by setting, and the user's WANDB_RUN_GROUP kept for
    # every job (a sweep's own group is the default only: tests/test_sweep.py sees it without one).
    done = sweep(tmp_path, "peft.r=2,4", "seed=1,2", env_extra={"WANDB_RUN_GROUP": "my-study"})
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [read_run(f) for job in sorted((tmp_path / "sweep").glob("[0-9]")) for f in run_files(job)]
    assert [r.run.run_group for r in runs] == ["my-study"] * 4
    # The sweep's names where none is set.
    assert [r.run.display_name for r in runs] == ["r=2,seed=1", "r=2,seed=2", "r=4,seed=1", "r=4,seed=2"]
    assert [r.config["logger.setting"] for r in runs] == ["r=2", "r=2", "r=4", "r=4"]
    assert {r.run.job_type for r in runs} == {"sweep"}

    assert compare([str(tmp_path / "sweep"), "--wandb"]) == 0
    out = capsys.readouterr().out
    section = out[out.index("\nsetting ") :].strip().splitlines()
    # Selected on val (mean over the seeds), reported on test (mean over the same seeds).
    val = {
        setting: sum(r.summary["best_val_accuracy"] for r in pair) / 2
        for setting, pair in (("r=2", runs[:2]), ("r=4", runs[2:]))
    }
    test = {
        setting: sum(r.summary["test/accuracy"] for r in pair) / 2
        for setting, pair in (("r=2", runs[:2]), ("r=4", runs[2:]))
    }
    top = max(val, key=val.get)
    assert section[1].split()[:3] == [top, "2", f"{val[top]:.4f}"]
    assert f"{test[top]:.4f} +- " in section[1]
    assert ("within the noise" in section[2]) or ("beyond the noise" in section[2])
    assert "best run by val" in out

    # --wandb: one more run, of job type compare, holding the figure and the table.
    [compare_run] = [read_run(f) for f in run_files(tmp_path / "sweep")]
    assert compare_run.run.job_type == "compare" and compare_run.exit_code == 0
    logged = {key.split(".")[0] for h in compare_run.history for key in h}
    assert {"compare", "runs"} <= logged


FEW_IMAGES = [
    "data.num_classes=4",
    "data.per_class=8",
    "data.val_per_class=2",
    "data.test_per_class=2",
    "data.image_size=32",
]


@pytest.mark.parametrize("spec", sorted((REPO / "experiments" / "wandb_sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_command_a_wandb_agent_runs_composes_and_trains(spec, tmp_path):
    sweep_spec = yaml.safe_load(spec.read_text())
    # The first point of the search, as the agent passes it: key=value pairs (${args_no_hyphens}).
    point = {
        key: p["values"][0] if "values" in p else p.get("value", p.get("min"))
        for key, p in sweep_spec["parameters"].items()
    }
    args = [f"{key}={value}" for key, value in point.items()]
    assert sweep_spec["command"] == ["${env}", "${program}", "${args_no_hyphens}"]
    exe = shutil.which(sweep_spec["program"], path=str(Path(sys.executable).parent))
    # Pinned to the offline quickstart so it runs here (what `experiment: {value: quickstart}` adds),
    # on fewer and smaller images: what is checked is that the command composes, trains and logs.
    env = offline_env(tmp_path / "home", WANDB_MODE="offline")
    done = subprocess.run(
        [exe, *args, "experiment=quickstart", "train.epochs=1", "logger.examples=0", *FEW_IMAGES],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert sweep_spec["metric"]["name"] in summary  # the metric the sweep optimises is in the summary
    [run_file] = run_files(next(tmp_path.glob("outputs/*/*")))
    config = read_run(run_file).config
    assert {key: config[key] for key in point} == pytest.approx(point)


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released): connections to it are refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("problem", ["malformed key", "unreachable"])
def test_an_online_run_wandb_cannot_start_fails_fast_in_one_line_and_records_failed(
    tmp_path, offline_wandb, monkeypatch, problem
):
    """The record is written failed (W&B starts inside the failure path), within the bound, and the
    error is one line naming the fix; no network beyond localhost."""
    from peft_food.errors import UserError
    from peft_food.tracking.record import RunRecord

    if problem == "malformed key":
        monkeypatch.setenv("WANDB_API_KEY", "not-a-key")
    else:
        monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")  # the bound under test (30 s by default)
    started = time.monotonic()
    with pytest.raises(UserError) as failed:
        train(compose_config(*TINY, "logger.mode=online", output_dir=tmp_path / "run"))
    assert time.monotonic() - started < 30
    message = str(failed.value)
    assert "\n" not in message and "pass logger.mode=offline" in message, message
    assert ("API key" in message) if problem == "malformed key" else ("127.0.0.1" in message)
    record = RunRecord.load(tmp_path / "run" / "metrics.json")
    assert record.status == "failed" and "W&B could not start an online run" in record.error
