"""The acceptance parts that run training as a user does: under torchrun on NCCL, and from a data
store with the batches normalised on the device.

torchrun: `python -m torch.distributed.run --standalone --nproc_per_node=1` starts ddp.py, which trains
through train(cfg) and reports the process group: passed if the run completed, the backend is nccl,
the world size 1 and an all-reduce across the group returns it.

data store: train(cfg) on JPEGs in Food-101's layout with data.store=true (built into the part's own
dir). A global forward pre-hook reads the first patch-embedding input: passed if the run completed,
the stores were built, and the pixels reached the model on the run's device as float32 lying exactly
on the 8-bit grid of the processor's normalisation ((x * std + mean) * 255 within GRID_TOL of an
integer in [0, 255]), i.e. uint8 batches normalised once (ImageTrainer does so after the move).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from peft_food.bench.acceptance.compose import compose
from peft_food.bench.acceptance.sizes import Size
from peft_food.config import parse_config
from peft_food.model.backbone import load_processor
from peft_food.training.pipeline import train

GRID_TOL = 1e-3


def torchrun_check(*, size: Size, precision: str, work: Path, timeout: float) -> tuple[dict[str, bool], dict[str, Any]]:
    result = work / "ddp.json"
    side = 224 if size.name == "full" else 32
    overrides = [
        *size.model,
        "peft=lora",
        "data=synthetic",
        "data.num_classes=10",
        "data.per_class=16",
        "data.val_per_class=4",
        "data.test_per_class=4",
        f"data.image_size={side}",
        "train.epochs=1",
        "train.batch_size=32",
        "train.eval_batch_size=64",
        "train.grad_accum=1",
        f"train.precision={precision}",
        "train.workers=2",
        "logger=none",
        "progress=false",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=1",
            "-m",
            "peft_food.bench.acceptance.ddp",
            str(result),
            str(work / "run"),
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "4"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}")
    report = json.loads(result.read_text())
    return (
        {
            "the run completed": report["status"] == "completed",
            "process group on nccl": report.get("backend") == "nccl",
            "world size 1, all-reduce across it gives 1": report.get("world_size") == 1
            and report.get("all_reduce") == 1.0,
        },
        report,
    )


@contextmanager
def first_patch_input() -> Iterator[dict[str, Any]]:
    """The first input any Conv2d sees while the block runs (ViT's patch embedding): device, dtype
    and the tensor itself (on CPU)."""
    seen: dict[str, Any] = {}

    def hook(module: torch.nn.Module, args: tuple) -> None:
        if not seen and isinstance(module, torch.nn.Conv2d) and args and torch.is_tensor(args[0]):
            seen.update(
                device=args[0].device.type,
                dtype=str(args[0].dtype).removeprefix("torch."),
                pixels=args[0].detach().float().cpu(),
            )

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def store_check(
    *, size: Size, precision: str, device: str, photos: Path, work: Path
) -> tuple[dict[str, bool], dict[str, Any]]:
    stores = work / "stores"
    workers = "null" if device == "cuda" else "0"  # CPU toy: decode in the process (CI's 2 cores)
    cfg = compose(
        *size.model,
        "peft=lora",
        "data=food101_local",
        f"data.root={photos}",
        "data.store=true",
        f"data.store_dir={stores}",
        "train.epochs=1",
        f"train.batch_size={size.check_batch}",
        f"train.eval_batch_size={size.check_batch}",
        "train.grad_accum=1",
        f"train.precision={precision}",
        f"train.workers={workers}",
        output_dir=work / "run",
    )
    processor = load_processor(parse_config(cfg).model)
    with first_patch_input() as seen:
        record = train(cfg)
    mean = torch.tensor(processor.image_mean).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std).view(1, -1, 1, 1)
    levels = (seen["pixels"] * std + mean) * 255
    off_grid = float((levels - levels.round()).abs().max())
    built = sorted(p.name for p in stores.rglob("*") if p.is_dir() and p.parent == stores)
    figures = {
        "status": record.status,
        "input_device": seen["device"],
        "input_dtype": seen["dtype"],
        "max_off_8bit_grid": off_grid,
        "levels_min": float(levels.min()),
        "levels_max": float(levels.max()),
        "stores": built,
        "train_img_per_s": record.efficiency.train_img_per_s,
        "peak_mem_mb": record.efficiency.peak_mem_mb,
        "test": record.test,
        "workers": workers,
    }
    return (
        {
            "the run completed": record.status == "completed",
            "data stores built in the part's store_dir": bool(built),
            f"pixels reach the model on {device}": seen["device"] == device,
            "as float32": seen["dtype"] == "float32",
            f"normalised exactly from 8-bit values (within {GRID_TOL:g})": off_grid <= GRID_TOL
            and -0.5 <= figures["levels_min"]
            and figures["levels_max"] <= 255.5,
        },
        figures,
    )
