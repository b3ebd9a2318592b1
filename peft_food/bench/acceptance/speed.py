"""The benchmark part: bench/train.py's own runs (ours against the seed recipe's settings, side by side
in one process) at the size's grid, with what a GPU acceptance adds to each row: the median step,
the model's FLOPs per step and the share of the matrix rate measured in the same run.

- step time: the median over the timed steps (bench.measure.StepTimer: CUDA events on a GPU, the
  wall clock on CPU), after the warm-up steps; images/s = batch / median step.
- memory: CUDA's peak allocated and peak reserved in the run (on CPU: peak RSS), the cache emptied
  before each run so one run's blocks are not the next one's.
- model FLOPs per step: torch's FlopCounterMode over one forward and backward of the method's model
  (on the meta device: shapes only), per image, times the batch; what the method computes (LoRA
  skips the frozen weights' gradients, full fine-tuning does not), not a hardware counter.
- matmul rate: the median of timed n x n x n products in the precision (bf16 on CUDA, fp32 on CPU)
  on random data; the achieved fraction is (FLOPs per step / median step) over it.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForImageClassification

from peft_food.bench.data import load_stored
from peft_food.bench.train import bench_train
from peft_food.config import BenchSpec, RunSpec
from peft_food.data.geometry import input_sizes
from peft_food.methods.apply import apply_peft
from peft_food.model.backbone import base_config, load_processor

BENCH_LABELS = 101  # bench_train's synthetic head: Food-101's classes


def matmul_rate(*, device: str, n: int, repeats: int = 20) -> dict[str, Any]:
    """FLOP/s of n x n x n products in bf16 (CUDA) or fp32 (CPU), median of `repeats` after warm-up."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=gen) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "n": n,
        "repeats": repeats,
        "median_s": median,
        "flop_per_s": 2 * n**3 / median,
        "tflop_per_s": 2 * n**3 / median / 1e12,
    }


def flops_per_image(spec: RunSpec, *, labels: int = BENCH_LABELS) -> float:
    """One forward and backward of the method's model for one image, counted on the meta device.
    Eager attention, so the attention products are counted as the matrix products they are."""
    model_spec = replace(spec.model, attn_implementation="eager")
    height, width = input_sizes(load_processor(spec.model))[0]
    with torch.device("meta"):
        skeleton = AutoModelForImageClassification.from_config(
            base_config(model_spec, labels=[str(i) for i in range(labels)]), attn_implementation="eager"
        )
        model = apply_peft(skeleton, peft=spec.peft, model=model_spec).train()
        pixels = torch.randn(1, 3, height, width)
    with FlopCounterMode(display=False) as counter:
        model(pixel_values=pixels).logits.sum().backward()
    return float(counter.get_total_flops())


def clear_device() -> None:
    """Free the last run's objects and CUDA's cached blocks, so the next run's peaks are its own
    (bench_train resets the peaks after this; Trainer's own clean-up comes after the reset). On CPU
    nothing to do: a collection there costs half a second and a process's RSS does not shrink."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def bench_row(
    spec: RunSpec,
    *,
    batch: int,
    warmup: int,
    steps: int,
    recipe: str,
    work: Path,
    flops: float,
    matmul: float,
    loaded: Any = None,
    stored: Any = None,
) -> dict[str, Any]:
    """One of bench_train's runs (synthetic pixels unless `loaded`), with the median's figures."""
    clear_device()
    bench = BenchSpec(
        sections=["train"],
        batch_size=batch,
        warmup_steps=warmup,
        train_steps=steps,
        methods=[spec.peft.method],
        inputs=["real" if loaded else "synthetic"],
    )
    row = bench_train(spec, bench, method_spec=spec.peft, recipe=recipe, loaded=loaded, stored=stored, out_dir=work)
    median = row["step_s_median"]
    row.update(
        method=spec.peft.label,
        recipe=recipe,
        batch=batch,
        img_per_s_median=batch / median,
        flops_per_step=flops * batch,
        achieved_flop_per_s=flops * batch / median,
        fraction_of_matmul=flops * batch / median / matmul,
    )
    return row


def photos_input(spec: RunSpec) -> Any:
    """The generated photos as bench_train's real input (the seed recipe decodes these JPEGs)."""
    from peft_food.data.splits import load_splits

    return load_splits(spec.data, seed=spec.seed)


def stored_input(spec: RunSpec, *, root: Path) -> Any:
    """The same splits through data stores under `root`, built on first use (ours reads these, as
    data.store=true does)."""
    return load_stored(spec, load_processor(spec.model), root=root)


def row_criteria(row: dict[str, Any]) -> dict[str, bool]:
    keys = ("step_s_median", "img_per_s_median", "peak_mem_mb", "flops_per_step", "fraction_of_matmul")
    return {
        "timed, every figure positive and finite": all(
            isinstance(row.get(k), (int, float)) and 0 < row[k] < float("inf") for k in keys
        )
    }
