"""The GPU acceptance checks as pytest tests (marker `gpu`): the functions `python -m
peft_food.bench.acceptance OUT --size full` runs, at the same size (ViT-B/16, random weights, 224 px),
with their criteria as assertions. Skipped where CUDA is absent: CI is CPU-only. On the GPU machine,
after the wheels step of docs/gpu-acceptance.md:

    python3 -m pytest -m gpu tests/gpu -q -x -p no:cacheprovider

The command is the one to run first (one budgeted run, a record); these re-run one part on its own.
"""

import pytest
import torch

from peft_food.bench.acceptance import checks, runs
from peft_food.bench.acceptance.compose import shipped_methods
from peft_food.bench.acceptance.images import write_food101_layout
from peft_food.bench.acceptance.rows import Bench
from peft_food.bench.acceptance.run import unusable
from peft_food.bench.acceptance.sizes import SIZES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU (CI is CPU-only): run on the GPU machine, docs/gpu-acceptance.md",
    ),
]

FULL = SIZES["full"]


def assert_met(criteria: dict[str, bool], figures: dict) -> None:
    unmet = [what for what, met in criteria.items() if not met]
    shown = {k: v for k, v in figures.items() if not isinstance(v, (list, dict))}
    assert not unmet, f"not met: {unmet}; figures: {shown}"


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("method", shipped_methods())
def test_each_method_trains_reloads_and_exports_under_autocast(method, precision, tmp_path):
    if reason := unusable(method, tmp_path / "compose"):
        pytest.skip(reason)
    assert_met(*checks.method_check(method=method, size=FULL, precision=precision, device="cuda", work=tmp_path / "w"))


def test_torchrun_one_process_on_nccl(tmp_path):
    assert_met(*runs.torchrun_check(size=FULL, precision="bf16", work=tmp_path, timeout=300))


def test_the_data_store_feeds_a_cuda_run_normalised_on_the_device(tmp_path):
    photos = write_food101_layout(
        tmp_path / "photos", classes=4, train_per_class=40, test_per_class=4, size=FULL.jpeg_size
    )
    assert_met(*runs.store_check(size=FULL, precision="bf16", device="cuda", photos=photos, work=tmp_path / "w"))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_train_compile(method, tmp_path):
    assert_met(
        *checks.method_check(
            method=method, size=FULL, precision="bf16", device="cuda", work=tmp_path / "w", compile=True, steps=10
        )
    )


@pytest.mark.parametrize("recipe", ["ours", "seed_recipe"])
def test_a_benchmark_row_at_the_targets_setting(recipe, tmp_path):
    """LoRA at batch 128: timed by CUDA events, memory from CUDA's allocator, FLOPs against the matmul rate."""
    from peft_food.bench.acceptance.speed import matmul_rate

    bench = Bench(None, size=FULL, device="cuda", matmul=matmul_rate(device="cuda", n=8192))
    criteria, row = bench.row(tmp_path, spec=bench.spec("lora", "bf16"), batch=128, recipe=recipe)
    assert_met(criteria, row)
    assert row["timing"] == "cuda_events" and row["peak_reserved_mb"] >= row["peak_mem_mb"]
    assert row["attention"] == ("sdpa" if recipe == "ours" else "eager")
