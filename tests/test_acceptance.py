"""The GPU acceptance command (peft_food/bench/acceptance/) at toy size on CPU, as CI runs it: from the
source tree with `python -m`, without wandb (the GPU machine has none), every part recorded with a
verdict and its figures, the CUDA-only parts skipped with the reason, the table printed last; and the
budget and record mechanics (plan.py) on their own."""

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from peft_food.bench.acceptance.plan import Budget, Record, run_part, watchdog
from tests.helpers import REPO

METHODS = ["lora", "full", "vpt", "ssf", "adaptformer"]
EXPORTED = {"lora", "full", "ssf"}  # VPT and AdaptFormer change the forward: nothing to fold


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """One toy run, shared: (exit status, stdout, acceptance.json, its path)."""
    tmp = tmp_path_factory.mktemp("acceptance")
    blocked = tmp / "no_wandb" / "wandb"  # importing wandb fails, as on the GPU machine
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('wandb is not installed on the GPU machine')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked.parent), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", "peft_food.bench.acceptance", str(tmp / "out"), "--size", "toy"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (tmp / "out" / "acceptance.json").is_file(), done.stderr[-3000:]
    path = tmp / "out" / "acceptance.json"
    return done.returncode, done.stdout, json.loads(path.read_text()), path


def positive(value) -> bool:
    return isinstance(value, (int, float)) and 0 < value and math.isfinite(value)


def test_toy_run_records_every_part_with_a_verdict(toy):
    status, _, record, _ = toy
    assert status == 0 and record["verdict"] == "pass", [c for c in record["checks"] if c["verdict"] == "fail"]
    assert record["package_dir"] == str(REPO / "peft_food")  # the source tree, not an installed copy
    assert record["size"] == "toy" and record["run_on"] == "cpu" and record["elapsed_s"] < record["budget_s"]
    checks = {c["name"]: c for c in record["checks"]}
    expected = {
        "matmul",
        "setup/photos",
        "torchrun/nccl",
        "store/normalise_on_device",
        *(f"train/{m}/fp32" for m in METHODS),
        "compile/lora/fp32",
        "compile/full/fp32",
        *(f"bench/{m}/fp32/b{b}/ours" for m in METHODS for b in (8, 16)),
        *(f"bench/{m}/fp32/b8/seed_recipe" for m in METHODS),
        *(f"bench_e2e/{m}/fp32/b8/{r}" for m in ("lora", "full") for r in ("ours", "seed_recipe")),
    }
    assert set(checks) == expected
    skipped = {name for name, c in checks.items() if c["verdict"] == "skip"}
    assert skipped == {"torchrun/nccl", "compile/lora/fp32", "compile/full/fp32"}
    assert all("CUDA" in checks[name]["reason"] for name in skipped)
    assert all(
        c["verdict"] == "pass" and c["criteria"] and all(c["criteria"].values()) and c["seconds"] > 0
        for name, c in checks.items()
        if name not in skipped
    )


def test_toy_checks_train_reload_and_export_each_method(toy):
    checks = {c["name"]: c for c in toy[2]["checks"]}
    for method in METHODS:
        check = checks[f"train/{method}/fp32"]
        f = check["figures"]
        assert len(f["losses"]) == 20 and f["loss_last_mean"] < f["loss_first_mean"]
        assert f["trainable_params"] == f["trainable_params_meta"] > 0
        assert 0 <= f["reload_max_abs_logit_diff"] <= 1e-4
        assert any(k.startswith("reloaded logits") for k in check["criteria"])
        if method in EXPORTED:
            assert f["export_same_top1"] == f["export_images"] == 8 and f["export_max_abs_prob_diff"] <= 1e-3
        else:
            assert f["export"].startswith("not exported")
    store = checks["store/normalise_on_device"]["figures"]
    assert store["status"] == "completed" and store["input_device"] == "cpu" and store["input_dtype"] == "float32"
    assert store["stores"] and store["max_off_8bit_grid"] <= 1e-3


def test_toy_benchmark_figures_are_positive_and_side_by_side(toy):
    _, _, record, _ = toy
    rows = [c["figures"] for c in record["checks"] if c["kind"] in ("bench", "bench_more", "bench_e2e")]
    assert len(rows) == 19
    for row in rows:
        for key in (
            "step_s_median",
            "img_per_s_median",
            "peak_mem_mb",
            "flops_per_step",
            "achieved_flop_per_s",
            "fraction_of_matmul",
        ):
            assert positive(row[key]), (row["method"], key, row[key])
        assert row["timing"] == "wall_clock" and row["steps_timed"] == 3
    seed = [r for r in rows if r["recipe"] == "seed_recipe"]
    assert {r["attention"] for r in seed} == {"eager"} and {r["optim"] for r in seed} == {"adamw_torch"}
    e2e_ours = [c["figures"] for c in record["checks"] if c["kind"] == "bench_e2e" and c["figures"]["recipe"] == "ours"]
    assert all(r["data_store"] for r in e2e_ours)
    full = {r["method"]: r["flops_per_step"] for r in rows if r["recipe"] == "ours" and r["batch"] == 8}
    assert full["lora"] < full["full"]  # LoRA computes no gradient for the frozen weights
    assert positive(record["matmul"]["flop_per_s"])
    summary = record["summary"]
    for key in (
        "lora_img_per_s_fp32",
        "full_img_per_s_fp32",
        "lora_over_full_peak_mem_fp32",
        "over_seed_end_to_end_lora_fp32",
        "over_seed_end_to_end_full_fp32",
        "over_seed_synthetic_lora_fp32",
    ):
        assert positive(summary[key]), key
    assert summary["targets"]["lora_img_per_s"] == 5000


def test_toy_prints_the_table_last(toy):
    _, stdout, record, path = toy
    lines = stdout.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("peft_food acceptance, size toy on cpu"))
    table = lines[start:]
    # the head, a line per check, the targets (three per precision, two synthetic ratios, two end to end), the verdict
    assert len(table) == 1 + len(record["checks"]) + 1 + 3 + 2 + 2 + 2
    assert (
        table[-2] == f"PASS: {len(record['checks']) - 3} pass, 0 fail, 3 skipped in {record['elapsed_s']:.0f} s of 420"
    )
    assert table[-1] == f"wrote {path}"
    assert "LoRA img/s, fp32" in stdout and ">= 5,000" in stdout and ">= 10x" in stdout


def test_a_part_that_would_not_fit_is_skipped_and_one_that_fails_fails_the_run(tmp_path):
    record = Record(tmp_path, {"size": "toy"})
    budget = Budget(30, started=time.monotonic())
    run_part(record, budget, name="fits", kind="quick", prior=1, part=lambda: ({"ok": True}, {"x": float("nan")}))
    run_part(record, budget, name="too long", kind="long", prior=60, part=lambda: pytest.fail("must not run"))
    run_part(record, budget, name="raises", kind="quick", prior=1, part=lambda: 1 / 0)
    run_part(record, budget, name="unmet", kind="quick", prior=1, part=lambda: ({"loss falls": False}, {}))
    written = json.loads((tmp_path / "acceptance.json").read_text())
    verdicts = {c["name"]: (c["verdict"], c["reason"]) for c in written["checks"]}
    assert verdicts["fits"] == ("pass", None) and written["checks"][0]["figures"] == {"x": "nan"}
    assert verdicts["too long"][0] == "skip" and verdicts["too long"][1].startswith("budget: ")
    assert verdicts["raises"] == ("fail", "ZeroDivisionError: division by zero")
    assert "ZeroDivisionError" in written["checks"][2]["error"]
    assert verdicts["unmet"] == ("fail", "not met: loss falls")
    assert written["verdict"] == "fail" and written["counts"] == {"pass": 1, "fail": 2, "skip": 1}
    assert budget.estimate("quick", prior=99) < 99  # once one has run, its time replaces the guess


def test_a_part_running_past_the_budget_is_stopped_and_recorded(tmp_path):
    record = Record(tmp_path, {"size": "toy"})
    budget = Budget(0.5, started=time.monotonic())
    stopped, written = threading.Event(), []

    def on_stop():  # the command prints the table and exits here; the test keeps what was written
        written.append(json.loads((tmp_path / "acceptance.json").read_text()))
        stopped.set()

    record.planned = [("hangs", "slow"), ("after it", "train")]
    timer = watchdog(record, budget, on_stop=on_stop)
    run_part(record, budget, name="hangs", kind="slow", prior=0.1, part=lambda: ({"stopped": stopped.wait(10)}, {}))
    timer.cancel()
    [at_stop] = written
    assert "during hangs" in at_stop["stopped"] and at_stop["verdict"] == "fail"
    # the unfinished part and the ones never reached are recorded as left out by the budget (a rerun line names them)
    assert [(c["name"], c["verdict"], c["reason"]) for c in at_stop["checks"]] == [
        ("hangs", "skip", "budget: ran out while this part ran"),
        ("after it", "skip", "budget: not reached"),
    ]


def test_parts_the_budget_left_out_are_named_in_a_rerun_line():
    from peft_food.bench.acceptance.run import rerun

    budget = "budget: 12 s left of 420, a train part takes ~30 s"
    record = {
        "checks": [
            {"name": "train/lora/bf16", "kind": "train", "verdict": "pass", "reason": None},
            {"name": "train/hra/fp16", "kind": "train", "verdict": "skip", "reason": budget},
            {"name": "train/boft/bf16", "kind": "train", "verdict": "skip", "reason": budget},
            {"name": "bench/lora/bf16/b256/ours", "kind": "bench_more", "verdict": "skip", "reason": budget},
            {"name": "torchrun/nccl", "kind": "torchrun", "verdict": "skip", "reason": "needs CUDA: no GPU here"},
        ]
    }
    assert rerun(record, out_dir=Path("experiments/gpu_acceptance/d"), size="full") == (
        "python -m peft_food.bench.acceptance experiments/gpu_acceptance/d-rest --size full --parts checks,batches "
        "--methods boft,hra"
    )
    assert rerun({"checks": record["checks"][:1]}, out_dir=Path("x"), size="full") is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--parts", "bench,gpu"], "--parts has unknown gpu: choose from checks, bench, e2e, runs, compile, batches"),
        (["--methods", "lora,lorra"], "--methods has unknown lorra: choose from "),
        (["--budget-s", "0"], "--budget-s 0 is invalid"),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, args, message, capsys):
    from peft_food.bench.acceptance.__main__ import main  # what `python -m` runs, here in-process

    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path), *args])
    assert stopped.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "acceptance.json").exists()


def test_on_a_gpu_each_precision_is_set_against_the_seed_recipes_fp16():
    from peft_food.bench.acceptance.report import summary, table

    def row(method, precision, batch, recipe, img_s, mem, kind="bench"):
        figures = {
            "method": method,
            "precision": precision,
            "batch": batch,
            "recipe": recipe,
            "img_per_s_median": img_s,
            "peak_mem_mb": mem,
            "peak_reserved_mb": mem * 1.2,
            "step_s_median": batch / img_s,
            "fraction_of_matmul": 0.4,
        }
        return {
            "name": f"{kind}/{method}/{precision}/b{batch}/{recipe}",
            "kind": kind,
            "verdict": "pass",
            "reason": None,
            "seconds": 3.0,
            "figures": figures,
        }

    checks = [
        row("lora", "fp16", 128, "ours", 5200.0, 9000.0),
        row("full", "fp16", 128, "ours", 3000.0, 20000.0),
        row("lora", "bf16", 128, "ours", 5600.0, 9000.0),
        row("full", "bf16", 128, "ours", 3400.0, 20000.0),
        row("lora", "fp16", 128, "seed_recipe", 1300.0, 15000.0),
        row("full", "fp16", 256, "ours", 3300.0, 38000.0),  # another batch: not the targets'
        row("lora", "fp16", 128, "ours", 5000.0, 9000.0, kind="bench_e2e"),
        row("lora", "fp16", 128, "seed_recipe", 500.0, 9000.0, kind="bench_e2e"),
    ]
    record = {
        "checks": checks,
        "counts": {"pass": 8, "fail": 0, "skip": 0},
        "verdict": "pass",
        "size": "full",
        "device": {"device": "NVIDIA H200"},
        "budget_s": 420,
        "elapsed_s": 400,
        "path": "x/acceptance.json",
    }
    s = summary(record, batch=128, seed_precision="fp16")
    assert s["lora_img_per_s_bf16"] == 5600 and s["full_img_per_s_fp16"] == 3000
    assert s["lora_over_full_peak_mem_fp16"] == 0.45 and s["lora_over_full_peak_reserved_bf16"] == 0.45
    assert s["over_seed_synthetic_lora_bf16"] == 5600 / 1300 and "over_seed_synthetic_full_fp16" not in s
    assert s["over_seed_end_to_end_lora_fp16"] == 10.0
    printed = table({**record, "summary": s}).splitlines()
    words = [line.split() for line in printed]
    assert "LoRA img/s, bf16 5,600 >= 5,000".split() in words
    assert "ours / seed end to end, lora fp16 10.0x >= 10x".split() in words
    assert "ours / seed, synthetic pixels, lora bf16 4.3x (model-bound)".split() in words
    assert printed[-2].startswith("PASS: 8 pass")
