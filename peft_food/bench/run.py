"""Benchmark: this package's data and training path against the seed recipe, side by side in one run.

    peft-food-bench data=food101_local data.root=../shared/data/food101-mini model=vit_tiny
    peft-food-bench model=vit_base model.pretrained=false data=food101_local data.root=... train.precision=bf16

Composes the same peft_food/conf/ groups as training (plus `bench.*`), prints a table and writes
`bench.json` in its run dir (outputs/bench/<date>/<time>/). Ratios are measured in the same
process on the same images, so they hold where absolute numbers are noisy.

- data: images/s through the train and eval transforms on real photos, for each worker count.
  ours = train JPEGs decoded and augmented as tensors (data.fast_decode), uint8 tensors out of
  the workers, one vectorised normalise per batch, persistent workers; seed_recipe = per-image
  ToTensor + Normalize in set_transform, 0 workers. Three more rows: PIL decode with uint8 out
  (before data.fast_decode), the decode-once cache (data.cache=true) and the data store
  (data.store=true, built into the run dir and removed at the end). And the JPEG decoders alone
  on every photo of the splits: TorchCodec (data.fast_decode's), torchvision's deprecated
  decode_jpeg and PIL, their pixel differences and images/s on one core.
- train: images/s, step time and peak memory for LoRA and full fine-tuning on synthetic pixels
  (model-bound) and on the real data path (end to end), ours vs the seed's settings (eager
  attention, unfused AdamW, float pipeline, 0 workers). Eval images/s too. And what LoRA's
  dropout (the seed's 0.1) costs in time and memory against the same LoRA without it. With
  data.store=true, ours reads the real photos from a data store.
- startup (bench.sections=[startup], data=food101_local): seconds from a job's start to its first
  training step, `peft-food-train` jobs on a bench.startup_images Food-101-layout folder (hard
  links to data.root's photos): JPEG path, first and second job with data.store each in its own
  process, a job with no images, and the two jobs of one multirun process; then peak RSS while
  reading from a small and a large store.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from peft_food.bench.data import bench_data, load_stored
from peft_food.bench.methods import bench_methods
from peft_food.bench.startup import bench_startup
from peft_food.bench.train import bench_all_train
from peft_food.config import parse_bench, parse_config
from peft_food.data.splits import load_splits
from peft_food.methods import METHODS
from peft_food.model.backbone import load_processor
from peft_food.tracking.provenance import hardware
from peft_food.training.trainer import (
    resolve_precision,
    resolve_workers,
)

log = logging.getLogger(__name__)


def run_bench(cfg: DictConfig, *, out_dir: Path, passed: list[str] = ()) -> dict[str, Any]:
    """`passed`: the command line's model and precision overrides, for the startup section's jobs."""
    spec = parse_config(cfg, extra_keys=("bench",))
    bench = parse_bench(cfg)
    # The configured method's settings where it is timed, each other method's defaults.
    methods = {name: spec.peft if spec.peft.method == name else METHODS[name]() for name in bench.methods}
    processor = load_processor(spec.model)  # no model needed for the data section
    result: dict[str, Any] = {
        "device": hardware(),
        "model": spec.model.name,
        "batch_size": bench.batch_size,
        "precision": resolve_precision(spec.train.precision),
        "attention": spec.model.attn_implementation,
        "compile": spec.train.compile,
        "workers": resolve_workers(spec.train.workers),
        "data_store": spec.data.store,
    }
    time_data = spec.data.source != "synthetic" and "data" in bench.sections  # nothing to decode otherwise
    train_real = "train" in bench.sections and "real" in bench.inputs and bool(bench.methods)
    # Read (and for local folders, screened) once: every section and run below re-uses it.
    loaded = load_splits(spec.data, seed=spec.seed) if time_data or train_real else None
    # The bench's own stores, built here (their build time is part of what is measured) and removed
    # at the end: a store is a cache of GBs, not a result.
    stores = out_dir / "stores"
    try:
        stored = load_stored(spec, processor, root=stores) if time_data or (train_real and spec.data.store) else None
        if time_data:
            result["data"] = bench_data(loaded, spec, bench, processor, stored=stored)
        if "train" in bench.sections:
            result.update(
                bench_all_train(
                    spec,
                    bench,
                    methods=methods,
                    loaded=loaded,
                    stored=stored if spec.data.store else None,
                    out_dir=out_dir,
                )
            )
        if "methods" in bench.sections:
            result["methods"] = bench_methods(spec, bench, methods=methods, out_dir=out_dir)
        if "startup" in bench.sections:
            result["startup"] = bench_startup(spec, bench, processor, out_dir=out_dir, passed=list(passed))
    finally:
        shutil.rmtree(stores, ignore_errors=True)
        shutil.rmtree(out_dir / "startup_data", ignore_errors=True)
    (out_dir / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
