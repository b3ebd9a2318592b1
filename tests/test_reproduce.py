"""Committed experiment records re-run and check themselves; same seed, same numbers on CPU."""

import contextlib
import io
import json
import re
import shutil

import pytest
from omegaconf import OmegaConf

from peft_food.cli.reproduce import main as reproduce
from peft_food.config import parse_config
from peft_food.tracking.experiments import ACROSS_VERSIONS, LOCK_FILE, version_changes
from peft_food.tracking.provenance import package_versions
from peft_food.tracking.record import RunRecord
from peft_food.training.pipeline import train
from tests.helpers import MINI, REPO, TINY_QUIET, compose_config, copy_run, needs_mini

QUICKSTART = REPO / "experiments" / "quickstart"


def test_same_config_and_seed_give_the_same_accuracy_to_the_last_digit(tiny_run, tiny_rerun, tmp_path):
    _, first = tiny_run()  # shared, trained earlier in the session: whatever ran since, the same numbers
    # The second training of that config: the tiny record's re-run (its config.yaml is first's, resolved).
    second = RunRecord.load(tiny_rerun[0] / "run" / "metrics.json")
    assert first.epochs == second.epochs
    other_seed = train(compose_config(*TINY_QUIET, "seed=7", output_dir=tmp_path / "c"))
    assert other_seed.epochs != first.epochs


def test_committed_quickstart_record_reproduces(tmp_path, capsys):
    assert reproduce([str(QUICKSTART), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # Exact on the records' environment (experiments/requirements.lock), within the measured
    # cross-version tolerance on any other release pip may give a fresh machine.
    exact = not version_changes(
        RunRecord.load(QUICKSTART / "runs" / "run" / "metrics.json").provenance.versions, package_versions()
    )[0]
    assert ("reproduced exactly" if exact else "reproduced within the cross-version tolerance") in out


@pytest.fixture
def tiny_record(tiny_run, tmp_path):
    """A record of a tiny run made here and now (so its versions are the installed ones), and a
    function that rewrites a field of its metrics.json."""
    record_dir = tmp_path / "experiments" / "tiny"
    run_dir = copy_run(tiny_run()[0], tmp_path / "run")
    assert reproduce([str(record_dir), "--record", str(run_dir)]) == 0
    metrics_file = record_dir / "runs" / "run" / "metrics.json"

    def edit(change):
        metrics = json.loads(metrics_file.read_text())
        change(metrics)
        metrics_file.write_text(json.dumps(metrics))
        return metrics

    return record_dir, edit


@pytest.fixture(scope="module")
def tiny_rerun(tiny_run, tmp_path_factory):
    """One re-run of the tiny record, shared: (its --out dir, what it printed). A test checking an
    altered copy of the record against it passes a copy of that dir as --out: the completed job is
    read back, as a stopped re-run continues, not trained again (same config, same seed: the same
    numbers as a fresh re-run)."""
    tmp = tmp_path_factory.mktemp("tiny_rerun")
    record_dir = tmp / "experiments" / "tiny"
    assert reproduce([str(record_dir), "--record", str(copy_run(tiny_run()[0], tmp / "run"))]) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert reproduce([str(record_dir), "--out", str(tmp / "out")]) == 0
    return tmp / "out", printed.getvalue()


def test_altered_record_fails_and_shows_the_difference(tiny_record, tiny_rerun, tmp_path, capsys):
    record_dir, edit = tiny_record
    recorded = edit(lambda m: None)
    true_value, true_test = recorded["epochs"][1]["eval_accuracy"], recorded["test"]["final"]["test_accuracy"]
    edit(lambda m: m["epochs"][1].update(eval_accuracy=true_value + 0.01))
    edit(lambda m: m["test"]["final"].update(test_accuracy=true_test - 0.02))  # test is checked too

    assert reproduce([str(record_dir), "--out", str(copy_run(tiny_rerun[0], tmp_path / "out"))]) == 1
    out = capsys.readouterr().out
    assert "NOT reproduced (2 difference(s))" in out and "versions: the record's (exact check)" in out
    assert f"epoch 2 eval_accuracy recorded {true_value + 0.01:.6g}, now {true_value:.6g}" in out
    assert f"final checkpoint test_accuracy recorded {true_test - 0.02:.6g}, now {true_test:.6g}" in out


def test_a_rerun_shows_its_epochs_as_training_does(tiny_rerun):
    out_dir, printed = tiny_rerun
    out = printed.splitlines()
    started = out.index(f"run (1 of 1): training in {out_dir / 'run'}")
    epochs = [i for i, line in enumerate(out) if re.search(r"\] - epoch [12]: val loss \d\.\d{4} accuracy", line)]
    result = next(i for i, line in enumerate(out) if line.startswith("run: MATCH"))
    assert len(epochs) == 2 and started < epochs[0] < epochs[1] < result, out


def test_record_made_under_other_versions_is_checked_within_the_measured_tolerance(
    tiny_record, tiny_rerun, tmp_path, capsys
):
    """A record whose torch differs from the installed one: the difference is printed, and the
    check is the cross-version tolerance, which passes a gap inside it and fails one beyond it."""
    record_dir, edit = tiny_record
    tol = OmegaConf.load(record_dir / "experiment.yaml").tolerance_across_versions.eval_accuracy
    assert tol == ACROSS_VERSIONS["eval_accuracy"] > 0

    def shift(metrics):
        metrics["provenance"]["versions"]["torch"] = "2.0.0"
        metrics["provenance"]["versions"]["wandb"] = "0.1.0"
        metrics["epochs"][0]["eval_accuracy"] += tol / 2  # inside the tolerance: not a difference
        metrics["epochs"][1]["eval_accuracy"] += tol + 0.01  # beyond it

    true_value = edit(lambda m: None)["epochs"][1]["eval_accuracy"]
    edit(shift)
    assert reproduce([str(record_dir), "--out", str(copy_run(tiny_rerun[0], tmp_path / "out"))]) == 1
    out = capsys.readouterr().out
    assert "NOT reproduced (1 difference(s))" in out
    assert f"epoch 2 eval_accuracy recorded {true_value + tol + 0.01:.6g}, now {true_value:.6g}" in out
    installed = package_versions()["torch"]
    assert f"versions differ from the record's: torch 2.0.0 recorded, {installed} installed" in out
    assert "cross-version tolerance (eval_accuracy +-" in out and "pip install -r experiments/requirements.lock" in out
    assert "also differ (cannot move the numbers): wandb 0.1.0 recorded" in out


def test_committed_records_were_made_in_the_locked_environment():
    """experiments/requirements.lock is the environment of every committed CPU record (but those
    kept to document other versions, which say so in their experiment.yaml)."""
    pins = dict(
        line.split("==") for line in (REPO / LOCK_FILE).read_text().splitlines() if line and not line.startswith("#")
    )
    checked = 0
    for meta_file in (REPO / "experiments").glob("*/experiment.yaml"):
        meta = OmegaConf.load(meta_file)
        if meta.status != "recorded" or meta.get("versions_note"):
            continue
        for metrics_file in meta_file.parent.glob("runs/*/metrics.json"):
            versions = RunRecord.load(metrics_file).provenance.versions
            assert {k: v for k, v in versions.items() if k in pins} == {k: pins[k] for k in versions if k in pins}
            checked += 1
    assert checked >= 45  # quickstart, mini_rank_alpha (4), mini_methods (40)


def test_records_awaiting_a_gpu_say_how_to_fill_them(capsys):
    assert reproduce([str(REPO / "experiments" / "seed_lora")]) == 2
    err = capsys.readouterr().err
    assert "no recorded results yet" in err and "peft-food-train experiment=seed_lora" in err


@pytest.mark.slow
@needs_mini
def test_committed_mini_sweep_record_reproduces_on_the_real_photos(tmp_path, capsys):
    # One of the record's four runs, re-run as the record is committed: the four share every code
    # path (vit_tiny, the photos, LoRA on query/value, 8 epochs) and differ only in LoRA's r and
    # alpha, so a drift in any of that shows in each of them; r4_alpha8 differs from lora.yaml's
    # defaults (r 16, alpha 16) in both, so it also shows that the record's own r and alpha are
    # what is re-trained. Its config.yaml is untouched: data.root stays relative to the repository
    # root, which the copy has beside it as the checkout has (a link to the same shared/ folder).
    committed = REPO / "experiments" / "mini_rank_alpha"
    repo = tmp_path / "repo"
    record = repo / "experiments" / "mini_rank_alpha"
    (record / "runs").mkdir(parents=True)
    (tmp_path / "shared").symlink_to(MINI.parent.parent)
    assert OmegaConf.load(committed / "runs" / "r4_alpha8" / "config.yaml").data.root == "../shared/data/food101-mini"
    shutil.copy(committed / "experiment.yaml", record / "experiment.yaml")
    shutil.copytree(committed / "runs" / "r4_alpha8", record / "runs" / "r4_alpha8")
    assert reproduce([str(record), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count(": MATCH") == 1 and "r4_alpha8: MATCH" in out


@pytest.mark.slow
@needs_mini
def test_committed_methods_by_backbones_record_reproduces_a_run_of_each_family(tmp_path, capsys):
    subset = REPO / "experiments" / "mini_methods"
    record = tmp_path / "record"
    (record / "runs").mkdir(parents=True)
    shutil.copy(subset / "experiment.yaml", record / "experiment.yaml")
    # 2 of the record's 40 runs (the mini_rank_alpha test re-runs vit_tiny + LoRA on the same photos,
    # trainer and seed): one on each backbone family and one of each method family the package runs
    # differently. SSF (the package's own hooks) on dinov2_tiny, of the ViT family; AdaLoRA (a peft
    # tuner) on swin_tiny, the windowed backbone with its own module names, whose val-best
    # checkpoint is epoch 4 of 8, saved mid-pruning with other ranks than the last: it must load,
    # and the test accuracy recorded is that checkpoint's.
    for name in ["modeldinov2_tiny_peftssf", "modelswin_tiny_peftadalora"]:
        shutil.copytree(subset / "runs" / name, record / "runs" / name)
        config = OmegaConf.load(record / "runs" / name / "config.yaml")
        config.data.root = str(MINI)  # the copy lives outside the repo: point at the photos directly
        OmegaConf.save(config, record / "runs" / name / "config.yaml")
    assert reproduce([str(record), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.count("MATCH") == 2


@pytest.mark.parametrize("name", ["methods_backbones", "methods_backbones_vpt"])
def test_pending_methods_by_backbones_record_holds_every_job_of_the_grid(name):
    record = REPO / "experiments" / name
    meta = OmegaConf.load(record / "experiment.yaml")
    assert meta.status == "awaiting a run on GPU"
    assert meta.command == f"peft-food-train -m +sweep={name}"
    pairs = set()
    for config_file in (record / "runs").glob("*/config.yaml"):
        config = OmegaConf.merge(OmegaConf.load(config_file), {"output_dir": "unused"})
        spec = parse_config(config)  # every job's config is valid as committed
        assert spec.model.pretrained and spec.data.test_split == "validation" and spec.data.protocol == "val_test"
        pairs.add((spec.model.name, spec.peft.label))
    models = {"vit_base", "vit_base_in1k", "deit_small", "dinov2_small", "swin_t"}
    methods = {
        "full",
        "linear_probe",
        "bitfit",
        "lora",
        "dora",
        "loha",
        "lokr",
        "ia3",
        "vera",
        "oft",
        "boft",
        "hra",
        "fourierft",
        "ln_tuning",
        "adalora",
        "ssf",
        "adaptformer",
        "adapter",
    }
    if name.endswith("_vpt"):  # VPT prompts every backbone but Swin, shallow and deep
        models, methods = models - {"swin_t"}, {"vpt", "vpt_deep"}
    assert pairs == {(m, p) for m in models for p in methods}


def test_a_rerun_stopped_by_sigterm_says_so_in_one_line_and_the_same_command_resumes_it(
    tiny_record, tmp_path, monkeypatch, capsys
):
    import os
    import signal

    from transformers import TrainerCallback

    import peft_food.training.pipeline as pipeline

    class SigtermAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:  # in epoch 2 of 2, after epoch 1's checkpoint
                os.kill(os.getpid(), signal.SIGTERM)

    record_dir, _ = tiny_record
    monkeypatch.chdir(tmp_path)  # the default outputs/reproduce/<record>/<time>/
    capsys.readouterr()
    build = pipeline.build_trainer
    with monkeypatch.context() as patch:
        patch.setattr(
            pipeline,
            "build_trainer",
            lambda spec, **kw: build(spec, **{**kw, "callbacks": [*kw["callbacks"], SigtermAt()]}),
        )
        assert reproduce([str(record_dir)]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    [line] = err.strip().splitlines()
    assert line.startswith("peft-food-reproduce: stopped by SIGTERM; last checkpoint: ") and line.endswith("resume")
    [job] = tmp_path.glob("outputs/reproduce/tiny/*/run")
    assert RunRecord.load(job / "metrics.json").status == "interrupted"

    assert reproduce([str(record_dir)]) == 0  # the same command
    assert "tiny: reproduced exactly" in capsys.readouterr().out
    assert list(tmp_path.glob("outputs/reproduce/tiny/*/run")) == [job]  # continued, not started over
    resumed = RunRecord.load(job / "metrics.json")
    assert resumed.status == "completed" and resumed.resumed_from == ["checkpoint-4"]
