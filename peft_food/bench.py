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
  (data.store=true, built into the run dir and removed at the end).
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
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
import psutil
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset
from transformers import TrainerCallback, set_seed

from peft_food.config import CONF_DIR, BenchSpec, RunSpec, parse_bench, parse_config
from peft_food.data import Splits, load_splits
from peft_food.errors import UserError
from peft_food.methods import METHODS, PeftSpec
from peft_food.model import apply_peft, load_base, load_processor
from peft_food.record import FILE as RECORD_FILE
from peft_food.record import RunRecord
from peft_food.tracking import hardware
from peft_food.trainer import (
    ImageTrainer,
    resolve_precision,
    resolve_workers,
    training_arguments,
)
from peft_food.transforms import attach_transforms, collate, normalize, store_plan

log = logging.getLogger(__name__)


# --- data ----------------------------------------------------------------------------------


def data_rate(ds, *, workers: int, batch_size: int, limit: int, mean, std) -> float:
    """Images/s delivered as normalised float batches (the work a training step waits for).
    The main process gets one torch thread, as each dataloader worker does: with 0 workers the
    path then runs on one core, and with workers the main process's batch normalise does not
    spin extra threads on the cores the workers decode on (that cost ~30% at 2 workers on 2 cores).
    On a GPU, training does the normalise there and leaves the CPU to the workers in the same way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _data_rate(ds, workers=workers, batch_size=batch_size, limit=limit, mean=mean, std=std)
    finally:
        torch.set_num_threads(threads)


def _data_rate(ds, *, workers: int, batch_size: int, limit: int, mean, std) -> float:
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate, shuffle=False,
                        persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
    iterator = iter(loader)
    normalize(next(iterator)["pixel_values"], mean=mean, std=std)  # start-up and first batch untimed
    seen, started = 0, time.perf_counter()
    for batch in iterator:
        normalize(batch["pixel_values"], mean=mean, std=std)
        seen += len(batch["labels"])
        if seen >= limit:
            break
    return seen / (time.perf_counter() - started)


def bench_data(loaded: Splits, spec: RunSpec, bench: BenchSpec, processor: Any, *, stored: Splits) -> dict[str, Any]:
    """`stored`: the same splits read through data stores (data.store), built just before."""
    limit = min(bench.images, len(loaded.train) - bench.batch_size)
    kw = dict(batch_size=bench.batch_size, limit=limit, mean=processor.image_mean, std=processor.image_std)
    eval_kw = {**kw, "limit": min(limit, len(loaded.eval) - 1)}
    ours_kw = dict(uint8=True, fast_decode=spec.data.fast_decode)
    cores = os.cpu_count() or 1
    worker_counts = list(bench.workers) if bench.workers is not None else list(range(cores + 1))
    # name: (attached splits, workers). "pil_decode" is the step before the tensor path: uint8 out
    # of the workers, PIL decode and augment. "store": the data store's pixels, no decode at all.
    paths = {"seed_recipe": (attach_transforms(loaded, processor, uint8=False), 0),
             "pil_decode": (attach_transforms(loaded, processor, uint8=True, fast_decode=False), 0),
             "store": (attach_transforms(stored, processor), 0),
             **{f"ours_{w}": (attach_transforms(loaded, processor, **ours_kw), w) for w in worker_counts}}

    # Rounds over every path in turn, best of each: a slow spell of this shared machine then
    # lowers one sample of each path, not one whole path, so the ratios stay side by side.
    train_rate = dict.fromkeys(paths, 0.0)
    for _ in range(bench.repeats):
        for name, (splits, workers) in paths.items():
            train_rate[name] = max(train_rate[name], data_rate(splits.train, workers=workers, **kw))
    per_workers = {str(w): {"train_img_per_s": train_rate[f"ours_{w}"],
                            "train_img_per_s_per_core": train_rate[f"ours_{w}"] / max(1, min(w, cores))}
                   for w in worker_counts}
    best = max(per_workers, key=lambda w: per_workers[w]["train_img_per_s"])
    eval_rate = {name: max(data_rate(paths[key][0].eval, workers=workers, **eval_kw) for _ in range(bench.repeats))
                 for name, key, workers in (("seed_recipe", "seed_recipe", 0), ("ours", f"ours_{best}", int(best)),
                                            ("store", "store", 0))}
    single = per_workers["0"]["train_img_per_s"] if "0" in per_workers else None
    seed = {"train_img_per_s": train_rate["seed_recipe"], "eval_img_per_s": eval_rate["seed_recipe"], "workers": 0}
    pil_decode = {"train_img_per_s": train_rate["pil_decode"], "workers": 0}
    ours = {"train_img_per_s": per_workers[best]["train_img_per_s"], "workers": int(best),
            "eval_img_per_s": eval_rate["ours"], "train_img_per_s_per_core_0_workers": single,
            "by_workers": per_workers}
    store = {"train_img_per_s": train_rate["store"], "eval_img_per_s": eval_rate["store"], "workers": 0,
             **store_sizes(stored)}
    # Decode-once cache (data.cache=true): epochs after the first only crop, resize and flip.
    started = time.perf_counter()
    cached_splits = attach_transforms(loaded, processor, cache=True, **ours_kw)
    decode_s = time.perf_counter() - started
    cached = {"train_img_per_s": max(data_rate(cached_splits.train, workers=0, **kw) for _ in range(bench.repeats)),
              "workers": 0, "decode_once_s": decode_s,
              "decode_once_img_per_s": (len(loaded.train) + len(loaded.eval)) / decode_s}
    return {"ours": ours, "seed_recipe": seed, "ours_cached": cached, "ours_pil_decode": pil_decode, "ours_store": store,
            "fast_decode": spec.data.fast_decode, "images_timed": limit, "repeats": bench.repeats,
            "speedup_train_pil_decode_single_core": pil_decode["train_img_per_s"] / seed["train_img_per_s"],
            "speedup_train_cached_single_core": cached["train_img_per_s"] / seed["train_img_per_s"],
            "speedup_train_store_single_core": store["train_img_per_s"] / seed["train_img_per_s"],
            "store_over_fast_decode_single_core": store["train_img_per_s"] / single if single else None,
            "speedup_train": ours["train_img_per_s"] / seed["train_img_per_s"],
            "speedup_train_single_core": single / seed["train_img_per_s"] if single else None}


def store_sizes(stored: Splits) -> dict[str, Any]:
    """Disk per 1,000 images of each form, and the stored train side."""
    out: dict[str, Any] = {"train_side": stored.stores["train"].form.side}
    for kind, store in stored.stores.items():
        out[f"{kind}_mb_per_1000_images"] = store.nbytes / 2**20 / len(store) * 1000
        out[f"{kind}_build_s"] = store.build_s
    return out


def load_stored(spec: RunSpec, processor: Any, *, root: Path) -> Splits:
    """The run's splits through data stores under `root` (built there if missing)."""
    return load_splits(spec.data, seed=spec.seed,
                       plan=store_plan(processor, side=spec.data.store_side, store_dir=str(root)))


# --- startup -------------------------------------------------------------------------------


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


def bench_startup(spec: RunSpec, bench: BenchSpec, processor: Any, *, out_dir: Path, passed: list[str]) -> dict[str, Any]:
    """Seconds from a job's start to its first training step (the record's startup_s), `peft-food-train`
    run as a sweep job would be, on a `bench.startup_images` Food-101-layout folder: the JPEG path
    (screening), the first job with data.store (screening + building the stores), the second job
    (the stores are there), and a job with no images to read (imports, model, Trainer: the floor);
    then one multirun process of two jobs with the store (the basic launcher: one process, so its
    second job pays no imports).
    Then peak RSS while reading `bench.images` training images from that folder's store and from
    the small one of data.root: the same images touched, stores of very different sizes."""
    if spec.data.source != "food101_local":
        raise UserError("bench.sections=[startup] builds its folder from Food-101-layout photos: "
                        "use data=food101_local data.root=<folder>")
    folder = food101_folder(Path(spec.data.root), out_dir / "startup_data", count=bench.startup_images)
    stores = out_dir / "stores"
    common = [*passed, "train.epochs=1", "train.max_steps=1", f"train.batch_size={bench.batch_size}",
              "train.grad_accum=1", "logger=none", "progress=false"]
    local = ["data=food101_local", f"data.root={folder}", "data.eval_per_class=1", f"data.store_dir={stores}"]
    jobs = {"jpeg": [*local, "data.store=false"], "store_first": [*local, "data.store=true"],
            "store_second": [*local, "data.store=true"], "no_data": ["data=synthetic"]}
    startup = {}
    for name, extra in jobs.items():
        run_dir = out_dir / "startup" / name
        done = subprocess.run([sys.executable, "-m", "peft_food.train", *common, *extra, f"hydra.run.dir={run_dir}"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"startup job {name} failed: {done.stderr[-2000:]}")
        startup[name] = RunRecord.load(run_dir / RECORD_FILE).efficiency.startup_s
    # A Hydra multirun (`-m`, the basic launcher) runs its jobs in one process: its second job pays
    # no imports. Two jobs on a store dir of their own, so the first builds and the second reuses.
    sweep_dir = out_dir / "startup" / "multirun"
    done = subprocess.run([sys.executable, "-m", "peft_food.train", "-m", *common, *local[:-1],
                           f"data.store_dir={stores / 'multirun'}", "data.store=true", "seed=1,2",
                           f"hydra.sweep.dir={sweep_dir}"], capture_output=True, text=True)
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
        rss[name] = {"store_mb": splits.stores["train"].nbytes / 2**20, "images": len(splits.stores["train"]),
                     "images_read": limit + bench.batch_size, "peak_rss_growth_mb": (peak.peak - peak.start) / 2**20}
    # The data stage's own share: each job less the job with no images (None where the first job's is
    # under half a second: within the jitter of process start-up).
    data_s = {name: max(0.0, startup[name] - startup["no_data"]) for name in ("jpeg", "store_first", "store_second")}
    return {"images": bench.startup_images, "startup_s": startup,
            "second_over_first": startup["store_second"] / startup["store_first"],
            "multirun_second_over_first": startup["multirun_second"] / startup["multirun_first"],
            "second_over_jpeg": startup["store_second"] / startup["jpeg"],
            "data_second_over_first": data_s["store_second"] / data_s["store_first"] if data_s["store_first"] >= 0.5 else None,
            "rss": rss}


# --- training ------------------------------------------------------------------------------


class SyntheticPixels(Dataset):
    """Random images already at model size: the model alone sets the pace."""

    def __init__(self, *, n: int, size: int, num_labels: int, uint8: bool):
        gen = torch.Generator().manual_seed(0)
        self.pixels = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
        if not uint8:
            self.pixels = self.pixels.float().div(255)
        self.labels = torch.randint(0, num_labels, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"pixel_values": self.pixels[i], "labels": int(self.labels[i])}


class StepTimer(TrainerCallback):
    """Wall time from one optimizer step's end to the next: the data wait is part of the step."""

    def __init__(self, warmup: int):
        self.warmup, self.times, self._last = warmup, [], 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        if state.global_step > self.warmup:
            self.times.append(now - self._last)
        self._last = now


class PeakRSS:
    """Highest resident memory while the block runs, sampled every 10 ms (CPU runs)."""

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, process.memory_info().rss + sum(
                c.memory_info().rss for c in process.children(recursive=True)))

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def bench_train(spec: RunSpec, bench: BenchSpec, *, method_spec, recipe: str, loaded: Splits | None,
                out_dir: Path, stored: Splits | None = None) -> dict[str, Any]:
    """One short training run; `loaded` is the real data (end to end), None for synthetic pixels;
    `stored`: the same through data stores, which ours reads with data.store=true."""
    ours = recipe == "ours"
    set_seed(spec.seed)
    model_spec = replace(spec.model, attn_implementation=spec.model.attn_implementation if ours else "eager")
    labels = loaded.labels if loaded else [f"c{i}" for i in range(101)]
    base, processor = load_base(model=model_spec, labels=labels)
    model = apply_peft(base, peft=method_spec, model=spec.model)
    size = processor.size.get("height", processor.size.get("shortest_edge"))
    steps = bench.warmup_steps + bench.train_steps
    n = bench.batch_size * steps
    if loaded:
        if ours and stored is not None:
            splits = attach_transforms(stored, processor)
        else:
            splits = attach_transforms(loaded, processor, uint8=ours, fast_decode=ours and spec.data.fast_decode)
        train_ds, eval_ds = splits.train, splits.eval
    else:
        train_ds = SyntheticPixels(n=n, size=size, num_labels=len(labels), uint8=ours)
        eval_ds = SyntheticPixels(n=min(n, 4 * bench.batch_size), size=size, num_labels=len(labels), uint8=ours)
    train_spec = replace(spec.train, batch_size=bench.batch_size, eval_batch_size=bench.batch_size, grad_accum=1,
                         max_steps=steps, logging_steps=10_000)
    precision = resolve_precision(spec.train.precision)
    workers = resolve_workers(spec.train.workers) if ours and loaded else 0
    args = training_arguments(train=train_spec, precision=precision, workers=workers, run_dir=out_dir, seed=spec.seed,
                              report_to=[])
    args.save_strategy, args.eval_strategy, args.load_best_model_at_end = "no", "no", False
    args.optim = "adamw_torch_fused" if ours else "adamw_torch"
    args.torch_compile = bool(ours and spec.train.compile)
    timer = StepTimer(bench.warmup_steps)
    trainer = ImageTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collate,
                           callbacks=[timer], mean=processor.image_mean, std=processor.image_std)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        trainer.train()
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else rss.peak / 2**20
    started = time.perf_counter()
    evaluated = trainer.evaluate()
    eval_n = len(eval_ds)
    step_s = sum(timer.times) / len(timer.times)
    return {"img_per_s": bench.batch_size / step_s, "step_s": step_s, "peak_mem_mb": peak_mb,
            "eval_img_per_s": eval_n / (time.perf_counter() - started), "precision": precision,
            "attention": model_spec.attn_implementation, "optim": args.optim, "workers": workers,
            "compile": args.torch_compile, "eval_loss": evaluated.get("eval_loss"),
            "data_store": bool(loaded and ours and stored is not None)}


def dropout_cost(spec: RunSpec, bench: BenchSpec, *, method: PeftSpec, inputs: dict[str, Splits | None],
                 out_dir: Path, stored: Splits | None = None) -> dict[str, Any]:
    """A method with dropout as configured (LoRA: the seed's 0.1) against the same method without
    it, our settings, first input, alternating `bench.repeats` times (best of each). Dropout on the
    LoRA input path is an extra pass over each targeted layer's input, kept for the backward pass."""
    source = bench.inputs[0]
    runs: dict[str, list[dict[str, Any]]] = {"with": [], "without": []}
    for _ in range(bench.repeats):
        for name, spec_ in (("with", method), ("without", replace(method, dropout=0.0))):
            runs[name].append(bench_train(spec, bench, method_spec=spec_, recipe="ours", loaded=inputs[source],
                                          stored=stored if source == "real" else None, out_dir=out_dir))
    best = {name: max(r["img_per_s"] for r in rs) for name, rs in runs.items()}
    peak = {name: min(r["peak_mem_mb"] for r in rs) for name, rs in runs.items()}
    return {"method": method.label, "dropout": method.dropout, "input": source, "repeats": bench.repeats,
            "img_per_s": best["with"], "img_per_s_without": best["without"],
            "peak_mem_mb": peak["with"], "peak_mem_mb_without": peak["without"],
            "time_cost": best["without"] / best["with"] - 1, "memory_cost": peak["with"] / peak["without"] - 1}


# --- report --------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    lines = [f"device: {result['device']['device']}  batch: {result['batch_size']}  model: {result['model']}"]
    if "data" in result:
        d = result["data"]
        lines.append("data path (img/s)        train      eval   workers")
        for name in ("ours", "seed_recipe"):
            lines.append(f"  {name:<20}{d[name]['train_img_per_s']:>9.1f}{d[name]['eval_img_per_s']:>10.1f}"
                         f"{d[name]['workers']:>10}")
        for w, r in d["ours"]["by_workers"].items():
            lines.append(f"  ours, {w} workers{'':<8}{r['train_img_per_s']:>9.1f}   per core {r['train_img_per_s_per_core']:.1f}")
        p, c = d["ours_pil_decode"], d["ours_cached"]
        lines.append(f"  ours, PIL decode, 0 workers{p['train_img_per_s']:>9.1f}   (before data.fast_decode)")
        lines.append(f"  ours, cached, 0 workers{c['train_img_per_s']:>13.1f}   (decode once: {c['decode_once_s']:.1f} s)")
        st = d["ours_store"]
        lines.append(f"  ours, data store, 0 workers{st['train_img_per_s']:>9.1f}{st['eval_img_per_s']:>10.1f}   "
                     f"(train side {st['train_side']}: {st['train_mb_per_1000_images']:.0f} MB per 1,000 images, "
                     f"eval {st['eval_mb_per_1000_images']:.0f} MB; built in {st['train_build_s'] + st['eval_build_s']:.1f} s)")
        over = d["store_over_fast_decode_single_core"]
        lines.append(f"  data store single core: {d['speedup_train_store_single_core']:.2f}x the seed recipe, "
                     f"{f'{over:.2f}x' if over else 'not timed vs'} data.fast_decode")
        single = d["speedup_train_single_core"]
        lines.append(f"  speed-up vs seed: {d['speedup_train']:.2f}x (single core: "
                     f"{f'{single:.2f}x' if single else 'not timed'}, cached single core: "
                     f"{d['speedup_train_cached_single_core']:.2f}x)")
    if "startup" in result:
        st = result["startup"]
        lines.append(f"startup, {st['images']:,} images: seconds from each job's start to its first training step")
        lines.append("  " + "  ".join(f"{name} {s:.1f}" for name, s in st["startup_s"].items()))
        data_share = st["data_second_over_first"]
        lines.append(f"  one multirun process (-m): second job / first {st['multirun_second_over_first']:.0%}")
        lines.append(f"  a process per job (SLURM): second job with the store / first: {st['second_over_first']:.0%} (data stage alone: "
                     f"{f'{data_share:.0%}' if data_share is not None else 'too small to time'}); "
                     f"/ JPEG path: {st['second_over_jpeg']:.0%}")
        for name, r in st["rss"].items():
            lines.append(f"  peak RSS growth reading {r['images_read']} images from the {r['store_mb']:.0f} MB "
                         f"{name.replace('_', ' ')} ({r['images']} images): {r['peak_rss_growth_mb']:.0f} MB")
    if result.get("train"):
        lines.append("training                     img/s   step ms  peak MB  eval img/s")
    for method, by_source in result.get("train", {}).items():
        for source, by_recipe in by_source.items():
            for recipe in ("ours", "seed_recipe"):
                r = by_recipe[recipe]
                lines.append(f"  {method:<5}{source:<10}{recipe:<12}{r['img_per_s']:>7.1f}{r['step_s'] * 1000:>10.1f}"
                             f"{r['peak_mem_mb']:>9.0f}{r['eval_img_per_s']:>12.1f}")
            lines.append(f"  {method:<5}{source:<10}speed-up {by_recipe['speedup']:.2f}x")
    for d in result.get("dropout", {}).values():
        lines.append(f"  {d['method']} dropout {d['dropout']} vs 0 ({d['input']}): {d['img_per_s']:.1f} vs {d['img_per_s_without']:.1f} "
                     f"img/s ({d['time_cost']:+.1%} time), peak {d['peak_mem_mb']:.0f} vs {d['peak_mem_mb_without']:.0f} MB "
                     f"({d['memory_cost']:+.1%})")
    return "\n".join(lines)


def run_bench(cfg: DictConfig, *, out_dir: Path, passed: list[str] = ()) -> dict[str, Any]:
    """`passed`: the command line's model and precision overrides, for the startup section's jobs."""
    spec = parse_config(cfg)
    bench = parse_bench(cfg)
    # The configured method's settings where it is timed, each other method's defaults.
    methods = {name: spec.peft if spec.peft.method == name else METHODS[name]() for name in bench.methods}
    processor = load_processor(spec.model)  # no model needed for the data section
    result: dict[str, Any] = {"device": hardware(), "model": spec.model.name, "batch_size": bench.batch_size,
                              "precision": resolve_precision(spec.train.precision),
                              "attention": spec.model.attn_implementation, "compile": spec.train.compile,
                              "workers": resolve_workers(spec.train.workers), "data_store": spec.data.store}
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
            result.update(bench_all_train(spec, bench, methods=methods, loaded=loaded,
                                          stored=stored if spec.data.store else None, out_dir=out_dir))
        if "startup" in bench.sections:
            result["startup"] = bench_startup(spec, bench, processor, out_dir=out_dir, passed=list(passed))
    finally:
        shutil.rmtree(stores, ignore_errors=True)
        shutil.rmtree(out_dir / "startup_data", ignore_errors=True)
    (out_dir / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def bench_all_train(spec: RunSpec, bench: BenchSpec, *, methods: dict[str, PeftSpec], loaded: Splits | None,
                    stored: Splits | None, out_dir: Path) -> dict[str, Any]:
    inputs = {source: loaded if source == "real" else None for source in bench.inputs}
    result: dict[str, Any] = {"train": {}}
    for method in bench.methods:
        result["train"][method] = {}
        for source in bench.inputs:
            pair = {recipe: bench_train(spec, bench, method_spec=methods[method], recipe=recipe, loaded=inputs[source],
                                        stored=stored if source == "real" else None, out_dir=out_dir / "scratch")
                    for recipe in ("ours", "seed_recipe")}
            pair["speedup"] = pair["ours"]["img_per_s"] / pair["seed_recipe"]["img_per_s"]
            result["train"][method][source] = pair
    result["dropout"] = {name: dropout_cost(spec, bench, method=method, inputs=inputs, out_dir=out_dir / "scratch",
                                            stored=stored)
                         for name, method in methods.items() if getattr(method, "dropout", 0) > 0}
    if {"lora", "full"} <= set(bench.methods):
        first = bench.inputs[0]
        result["peak_mem_lora_over_full"] = (result["train"]["lora"][first]["ours"]["peak_mem_mb"]
                                             / result["train"]["full"][first]["ours"]["peak_mem_mb"])
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    # The model and precision the command line chose, for the startup section's training jobs.
    passed = [o for o in HydraConfig.get().overrides.task if o.split("=")[0].lstrip("+~").startswith(("model", "train.precision"))]
    try:
        result = run_bench(cfg, out_dir=out_dir, passed=passed)
    except UserError as err:
        print(f"peft-food-bench: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(table(result))
    if "peak_mem_lora_over_full" in result:
        print(f"peak memory LoRA / full: {result['peak_mem_lora_over_full']:.2f}")
    print(f"wrote {out_dir / 'bench.json'}")
