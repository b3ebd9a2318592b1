"""The train section: images/s, step time and peak memory per method, ours against the seed recipe's
settings, through training's own Trainer (training/trainer.py `build_image_trainer`)."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import set_seed

from peft_food.bench.measure import PeakRSS, StepTimer
from peft_food.config import BenchSpec, RunSpec
from peft_food.data.geometry import input_sizes
from peft_food.data.splits import Splits
from peft_food.data.transforms import attach_transforms
from peft_food.methods import MethodSpec
from peft_food.methods.apply import apply_peft
from peft_food.model.backbone import count_parameters, load_base
from peft_food.training.trainer import (
    NO_SELECTION,
    build_image_trainer,
    resolve_precision,
    resolve_workers,
)

log = logging.getLogger(__name__)


class SyntheticPixels(Dataset):
    """Random images already at model size: the model alone sets the pace. `pool` distinct images
    at most (indices wrap): at 224 px a long run's own would be GBs made before the first step."""

    def __init__(self, *, n: int, size: tuple[int, int], num_labels: int, uint8: bool, pool: int | None = None):
        gen = torch.Generator().manual_seed(0)
        count = min(n, pool or n)
        self.pixels = torch.randint(0, 256, (count, 3, *size), dtype=torch.uint8, generator=gen)
        if not uint8:
            self.pixels = self.pixels.float().div(255)
        self.labels = torch.randint(0, num_labels, (count,), generator=gen)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = i % len(self.labels)
        return {"pixel_values": self.pixels[j], "labels": int(self.labels[j])}


def bench_train(
    spec: RunSpec,
    bench: BenchSpec,
    *,
    method_spec,
    recipe: str,
    loaded: Splits | None,
    out_dir: Path,
    stored: Splits | None = None,
) -> dict[str, Any]:
    """One short training run; `loaded` is the real data (end to end), None for synthetic pixels;
    `stored`: the same through data stores, which ours reads with data.store=true."""
    ours = recipe == "ours"
    set_seed(spec.seed)
    model_spec = replace(spec.model, attn_implementation=spec.model.attn_implementation if ours else "eager")
    labels = loaded.labels if loaded else [f"c{i}" for i in range(101)]
    base, processor = load_base(model=model_spec, labels=labels)
    model = apply_peft(base, peft=method_spec, model=spec.model)
    size = input_sizes(processor)[0]  # the model's input (a crop where the processor crops: DeiT, DINOv2)
    steps = bench.warmup_steps + bench.train_steps
    n = bench.batch_size * steps
    if loaded:
        if ours and stored is not None:
            splits = attach_transforms(stored, processor)
        else:
            splits = attach_transforms(loaded, processor, uint8=ours, fast_decode=ours and spec.data.fast_decode)
        train_ds, eval_ds = splits.train, splits.val
    else:
        pool = 4 * bench.batch_size
        train_ds = SyntheticPixels(n=n, size=size, num_labels=len(labels), uint8=ours, pool=pool)
        eval_ds = SyntheticPixels(n=min(n, pool), size=size, num_labels=len(labels), uint8=ours)
    train_spec = replace(
        spec.train,
        batch_size=bench.batch_size,
        eval_batch_size=bench.batch_size,
        grad_accum=1,
        max_steps=steps,
        logging_steps=10_000,
        compile=ours and spec.train.compile,
    )
    precision = resolve_precision(spec.train.precision)
    workers = resolve_workers(spec.train.workers) if ours and loaded else 0
    timer = StepTimer(bench.warmup_steps)
    # Training's own Trainer, with what the bench changes: no checkpoints, no per-epoch evaluation
    # (NO_SELECTION, as protocol retrain), and for the seed recipe its unfused AdamW (ours keeps
    # training's default, fused where torch has it).
    overrides = dict(NO_SELECTION, save_strategy="no", **({} if ours else {"optim": "adamw_torch"}))
    trainer = build_image_trainer(
        model=model,
        processor=processor,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        train=train_spec,
        precision=precision,
        workers=workers,
        run_dir=out_dir,
        seed=spec.seed,
        callbacks=[timer],
        metrics=None,
        **overrides,
    )
    args = trainer.args
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if torch.cuda.is_available() else None
    with PeakRSS() as rss:
        trainer.train()
    reserved = None
    if torch.cuda.is_available():
        peak, start, reserved = torch.cuda.max_memory_allocated(), before, torch.cuda.max_memory_reserved() / 2**20
    else:
        peak, start = rss.peak, rss.start
    peak_mb, train_mem_mb = peak / 2**20, (peak - start) / 2**20  # the latter: what training added to the loaded model
    times = timer.times
    started = time.perf_counter()
    evaluated = trainer.evaluate()
    eval_n = len(eval_ds)
    step_s = sum(times) / len(times)
    return {
        "img_per_s": bench.batch_size / step_s,
        "step_s": step_s,
        "step_s_median": statistics.median(times),
        "steps_timed": len(times),
        "timing": timer.timing,
        "peak_reserved_mb": reserved,
        "peak_mem_mb": peak_mb,
        "train_mem_mb": train_mem_mb,
        "trainable_params": count_parameters(model)["trainable_params"],
        "eval_img_per_s": eval_n / (time.perf_counter() - started),
        "precision": precision,
        "attention": model_spec.attn_implementation,
        "optim": args.optim,
        "workers": workers,
        "compile": args.torch_compile,
        "gradient_checkpointing": spec.train.gradient_checkpointing,
        "input_size": list(size),
        "eval_loss": evaluated.get("eval_loss"),
        "data_store": bool(loaded and ours and stored is not None),
    }


def dropout_cost(
    spec: RunSpec,
    bench: BenchSpec,
    *,
    method: MethodSpec,
    inputs: dict[str, Splits | None],
    out_dir: Path,
    stored: Splits | None = None,
) -> dict[str, Any]:
    """A method with dropout as configured (LoRA: the seed's 0.1) against the same method without
    it, our settings, first input, alternating `bench.repeats` times (best of each). Dropout on the
    LoRA input path is an extra pass over each targeted layer's input, kept for the backward pass."""
    source = bench.inputs[0]
    runs: dict[str, list[dict[str, Any]]] = {"with": [], "without": []}
    for _ in range(bench.repeats):
        for name, spec_ in (("with", method), ("without", replace(method, dropout=0.0))):
            runs[name].append(
                bench_train(
                    spec,
                    bench,
                    method_spec=spec_,
                    recipe="ours",
                    loaded=inputs[source],
                    stored=stored if source == "real" else None,
                    out_dir=out_dir,
                )
            )
    best = {name: max(r["img_per_s"] for r in rs) for name, rs in runs.items()}
    peak = {name: min(r["peak_mem_mb"] for r in rs) for name, rs in runs.items()}
    return {
        "method": method.label,
        "dropout": method.dropout,
        "input": source,
        "repeats": bench.repeats,
        "img_per_s": best["with"],
        "img_per_s_without": best["without"],
        "peak_mem_mb": peak["with"],
        "peak_mem_mb_without": peak["without"],
        "time_cost": best["without"] / best["with"] - 1,
        "memory_cost": peak["with"] / peak["without"] - 1,
    }


def bench_all_train(
    spec: RunSpec,
    bench: BenchSpec,
    *,
    methods: dict[str, MethodSpec],
    loaded: Splits | None,
    stored: Splits | None,
    out_dir: Path,
) -> dict[str, Any]:
    inputs = {source: loaded if source == "real" else None for source in bench.inputs}
    result: dict[str, Any] = {"train": {}}
    for method in bench.methods:
        result["train"][method] = {}
        for source in bench.inputs:
            pair = {
                recipe: bench_train(
                    spec,
                    bench,
                    method_spec=methods[method],
                    recipe=recipe,
                    loaded=inputs[source],
                    stored=stored if source == "real" else None,
                    out_dir=out_dir / "scratch",
                )
                for recipe in ("ours", "seed_recipe")
            }
            pair["speedup"] = pair["ours"]["img_per_s"] / pair["seed_recipe"]["img_per_s"]
            result["train"][method][source] = pair
    result["dropout"] = {
        name: dropout_cost(spec, bench, method=method, inputs=inputs, out_dir=out_dir / "scratch", stored=stored)
        for name, method in methods.items()
        if getattr(method, "dropout", 0) > 0
    }
    # Each method's peak memory against the method that trains everything (full fine-tuning), if timed.
    whole = next((name for name, method in methods.items() if method.saves_whole_model), None)
    if whole is not None:
        first = bench.inputs[0]
        peak = {name: result["train"][name][first]["ours"]["peak_mem_mb"] for name in bench.methods}
        result["peak_mem_over_full"] = {name: peak[name] / peak[whole] for name in bench.methods if name != whole}
    return result
