"""The methods section: step time and training memory of every method side by side, on synthetic pixels
at the model's input size, each method trained in a process of its own.

    peft-food-bench model=vit_base model.pretrained=false peft=vpt peft.deep=true "bench.sections=[methods]" \
        "bench.methods=[full,lora,vpt,ssf,adaptformer]"

A process per method because a CPU run's memory is the process's resident set: after one method
has trained, the allocator keeps its freed pages, and the next method in the same process would
reuse them unseen. A fresh process's growth during training is what training that method costs:
gradients, optimizer state and the activations kept for the backward pass (the weights are loaded
before it is measured). On a GPU the same figure is CUDA's allocated peak less what was allocated
before training.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from peft_food.config import BenchSpec, RunSpec
from peft_food.methods import MethodSpec


def bench_method(spec: RunSpec, bench: BenchSpec, method_spec: MethodSpec, out_dir: Path) -> dict[str, Any]:
    """One method's short run in this process (the child's entry point): the train section's own
    run, ours recipe, on synthetic pixels."""
    from peft_food.bench.train import bench_train

    return bench_train(spec, bench, method_spec=method_spec, recipe="ours", loaded=None, out_dir=out_dir)


def bench_methods(spec: RunSpec, bench: BenchSpec, *, methods: dict[str, MethodSpec], out_dir: Path) -> dict[str, Any]:
    """Each method `bench.repeats` times, the methods taking turns (a slow spell of a shared machine
    then costs every method one sample, not one method all of its own), each run in a fresh process:
    the best step time and the least memory of each, and each against the whole-model method."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no pages of an earlier run
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    for _ in range(bench.repeats):
        for name, method_spec in methods.items():
            with context.Pool(1) as pool:
                runs[name].append(pool.apply(bench_method, (spec, bench, method_spec, out_dir / "scratch")))
    result = {
        name: {
            "label": methods[name].label,
            "trainable_params": rs[0]["trainable_params"],
            "step_s": min(r["step_s"] for r in rs),
            "img_per_s": max(r["img_per_s"] for r in rs),
            "train_mem_mb": min(r["train_mem_mb"] for r in rs),
            "peak_mem_mb": min(r["peak_mem_mb"] for r in rs),
        }
        for name, rs in runs.items()
    }
    whole = next((name for name, method in methods.items() if method.saves_whole_model), None)
    if whole is not None:
        for row in result.values():
            row["step_over_full"] = row["step_s"] / result[whole]["step_s"]
            row["train_mem_over_full"] = row["train_mem_mb"] / result[whole]["train_mem_mb"]
    return {"input": "synthetic", "repeats": bench.repeats, "against": whole, "by_method": result}
