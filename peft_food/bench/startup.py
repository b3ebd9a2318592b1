"""The startup section: seconds from a sweep job's start to its first training step, real jobs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from peft_food.bench.data import load_stored
from peft_food.bench.measure import PeakRSS, data_rate
from peft_food.config import BenchSpec, RunSpec
from peft_food.data.transforms import attach_transforms
from peft_food.errors import UserError
from peft_food.tracking.record import RECORD_FILE, RunRecord

log = logging.getLogger(__name__)


def food101_folder(photos: Path, target: Path, *, count: int) -> Path:
    """A Food-101-layout folder of `count` images (3:1 train:test per class, as Food-101's
    750:250) made of hard links to the photos in `photos` (a Food-101-layout folder): distinct
    files to the data path, no copies on disk."""
    classes = (photos / "meta" / "classes.txt").read_text().split()
    (target / "meta").mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    per_class = count // len(classes)
    for name in classes:
        sources = sorted((photos / "images" / name).glob("*.jpg"))
        (target / "images" / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            link = target / "images" / name / f"{k:06d}.jpg"
            if not link.exists():
                try:
                    os.link(sources[k % len(sources)], link)
                except OSError:  # another filesystem: copy
                    shutil.copyfile(sources[k % len(sources)], link)
            lists["train" if k < per_class * 3 // 4 else "test"].append(f"{name}/{k:06d}")
    (target / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    for split, entries in lists.items():
        (target / "meta" / f"{split}.txt").write_text("\n".join(entries) + "\n")
    return target


def bench_startup(
    spec: RunSpec, bench: BenchSpec, processor: Any, *, out_dir: Path, passed: list[str]
) -> dict[str, Any]:
    """Seconds from a job's start to its first training step (the record's startup_s), `peft-food-train`
    run as a sweep job would be, on a `bench.startup_images` Food-101-layout folder: the JPEG path
    (screening), the first job with data.store (screening + building the stores), the second job
    (the stores are there), and a job with no images to read (imports, model, Trainer: the floor);
    then one multirun process of two jobs with the store (the basic launcher: one process, so its
    second job pays no imports).
    Then peak RSS while reading `bench.images` training images from that folder's store and from
    the small one of data.root: the same images touched, stores of very different sizes."""
    if spec.data.source != "food101_local":
        raise UserError(
            "bench.sections=[startup] builds its folder from Food-101-layout photos: "
            "use data=food101_local data.root=<folder>"
        )
    folder = food101_folder(Path(spec.data.root), out_dir / "startup_data", count=bench.startup_images)
    stores = out_dir / "stores"
    common = [
        *passed,
        "train.epochs=1",
        "train.max_steps=1",
        f"train.batch_size={bench.batch_size}",
        "train.grad_accum=1",
        "logger=none",
        "progress=false",
    ]
    local = [
        "data=food101_local",
        f"data.root={folder}",
        "data.val_per_class=1",
        "data.test_per_class=1",
        f"data.store_dir={stores}",
    ]
    jobs = {
        "jpeg": [*local, "data.store=false"],
        "store_first": [*local, "data.store=true"],
        "store_second": [*local, "data.store=true"],
        "no_data": ["data=synthetic"],
    }
    startup = {}
    for name, extra in jobs.items():
        run_dir = out_dir / "startup" / name
        done = subprocess.run(
            [sys.executable, "-m", "peft_food", *common, *extra, f"hydra.run.dir={run_dir}"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"startup job {name} failed: {done.stderr[-2000:]}")
        startup[name] = RunRecord.load(run_dir / RECORD_FILE).efficiency.startup_s
    # A Hydra multirun (`-m`, the basic launcher) runs its jobs in one process: its second job pays
    # no imports. Two jobs on a store dir of their own, so the first builds and the second reuses.
    sweep_dir = out_dir / "startup" / "multirun"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "peft_food",
            "-m",
            *common,
            *local[:-1],
            f"data.store_dir={stores / 'multirun'}",
            "data.store=true",
            "seed=1,2",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"startup multirun failed: {done.stderr[-2000:]}")
    for job, name in ((0, "multirun_first"), (1, "multirun_second")):
        startup[name] = RunRecord.load(sweep_dir / str(job) / RECORD_FILE).efficiency.startup_s
    big = load_stored(replace(spec, data=replace(spec.data, root=str(folder))), processor, root=stores)
    small = load_stored(spec, processor, root=stores)
    limit = min(bench.images, len(small.train) - bench.batch_size)
    kw = dict(workers=0, batch_size=bench.batch_size, limit=limit, mean=processor.image_mean, std=processor.image_std)
    rss = {}
    data_rate(attach_transforms(small, processor).train, **{**kw, "limit": 2 * bench.batch_size})  # allocator warm-up
    for name, splits in (("small_store", small), ("large_store", big)):
        attached = attach_transforms(splits, processor)
        with PeakRSS() as peak:
            data_rate(attached.train, **kw)
        rss[name] = {
            "store_mb": splits.stores["train"].nbytes / 2**20,
            "images": len(splits.stores["train"]),
            "images_read": limit + bench.batch_size,
            "peak_rss_growth_mb": (peak.peak - peak.start) / 2**20,
        }
    # The data stage's own share: each job less the job with no images (None where the first job's is
    # under half a second: within the jitter of process start-up).
    data_s = {name: max(0.0, startup[name] - startup["no_data"]) for name in ("jpeg", "store_first", "store_second")}
    return {
        "images": bench.startup_images,
        "startup_s": startup,
        "second_over_first": startup["store_second"] / startup["store_first"],
        "multirun_second_over_first": startup["multirun_second"] / startup["multirun_first"],
        "second_over_jpeg": startup["store_second"] / startup["jpeg"],
        "data_second_over_first": data_s["store_second"] / data_s["store_first"]
        if data_s["store_first"] >= 0.5
        else None,
        "rss": rss,
    }
