"""The data section: images/s through the train and eval transforms, each path side by side."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from peft_food.bench.decode import bench_decoders
from peft_food.bench.measure import data_rate
from peft_food.config import BenchSpec, RunSpec
from peft_food.data.splits import Splits, load_splits
from peft_food.data.store import store_plan
from peft_food.data.transforms import attach_transforms

log = logging.getLogger(__name__)


def bench_data(loaded: Splits, spec: RunSpec, bench: BenchSpec, processor: Any, *, stored: Splits) -> dict[str, Any]:
    """`stored`: the same splits read through data stores (data.store), built just before."""
    limit = min(bench.images, len(loaded.train) - bench.batch_size)
    kw = dict(batch_size=bench.batch_size, limit=limit, mean=processor.image_mean, std=processor.image_std)
    eval_kw = {**kw, "limit": min(limit, len(loaded.val) - 1)}
    ours_kw = dict(uint8=True, fast_decode=spec.data.fast_decode)
    cores = os.cpu_count() or 1
    worker_counts = list(bench.workers) if bench.workers is not None else list(range(cores + 1))
    # name: (attached splits, workers). "pil_decode" is the step before the tensor path: uint8 out
    # of the workers, PIL decode and augment. "store": the data store's pixels, no decode at all.
    paths = {
        "seed_recipe": (attach_transforms(loaded, processor, uint8=False), 0),
        "pil_decode": (attach_transforms(loaded, processor, uint8=True, fast_decode=False), 0),
        "store": (attach_transforms(stored, processor), 0),
        **{f"ours_{w}": (attach_transforms(loaded, processor, **ours_kw), w) for w in worker_counts},
    }

    # Rounds over every path in turn, best of each: a slow spell of this shared machine then
    # lowers one sample of each path, not one whole path, so the ratios stay side by side.
    train_rate = dict.fromkeys(paths, 0.0)
    for _ in range(bench.repeats):
        for name, (splits, workers) in paths.items():
            train_rate[name] = max(train_rate[name], data_rate(splits.train, workers=workers, **kw))
    per_workers = {
        str(w): {
            "train_img_per_s": train_rate[f"ours_{w}"],
            "train_img_per_s_per_core": train_rate[f"ours_{w}"] / max(1, min(w, cores)),
        }
        for w in worker_counts
    }
    best = max(per_workers, key=lambda w: per_workers[w]["train_img_per_s"])
    eval_rate = {
        name: max(data_rate(paths[key][0].val, workers=workers, **eval_kw) for _ in range(bench.repeats))
        for name, key, workers in (
            ("seed_recipe", "seed_recipe", 0),
            ("ours", f"ours_{best}", int(best)),
            ("store", "store", 0),
        )
    }
    single = per_workers["0"]["train_img_per_s"] if "0" in per_workers else None
    seed = {"train_img_per_s": train_rate["seed_recipe"], "eval_img_per_s": eval_rate["seed_recipe"], "workers": 0}
    pil_decode = {"train_img_per_s": train_rate["pil_decode"], "workers": 0}
    ours = {
        "train_img_per_s": per_workers[best]["train_img_per_s"],
        "workers": int(best),
        "eval_img_per_s": eval_rate["ours"],
        "train_img_per_s_per_core_0_workers": single,
        "by_workers": per_workers,
    }
    store = {
        "train_img_per_s": train_rate["store"],
        "eval_img_per_s": eval_rate["store"],
        "workers": 0,
        **store_sizes(stored),
    }
    # Decode-once cache (data.cache=true): epochs after the first only crop, resize and flip.
    started = time.perf_counter()
    cached_splits = attach_transforms(loaded, processor, cache=True, **ours_kw)
    decode_s = time.perf_counter() - started
    cached = {
        "train_img_per_s": max(data_rate(cached_splits.train, workers=0, **kw) for _ in range(bench.repeats)),
        "workers": 0,
        "decode_once_s": decode_s,
        "decode_once_img_per_s": (len(loaded.train) + len(loaded.val) + len(loaded.test)) / decode_s,
    }
    return {
        # The JPEG decoders alone, on every photo of the splits: pixels and images/s side by side.
        "decoders": bench_decoders(loaded, repeats=bench.repeats),
        "ours": ours,
        "seed_recipe": seed,
        "ours_cached": cached,
        "ours_pil_decode": pil_decode,
        "ours_store": store,
        "fast_decode": spec.data.fast_decode,
        "images_timed": limit,
        "repeats": bench.repeats,
        "speedup_train_pil_decode_single_core": pil_decode["train_img_per_s"] / seed["train_img_per_s"],
        "speedup_train_cached_single_core": cached["train_img_per_s"] / seed["train_img_per_s"],
        "speedup_train_store_single_core": store["train_img_per_s"] / seed["train_img_per_s"],
        "store_over_fast_decode_single_core": store["train_img_per_s"] / single if single else None,
        "speedup_train": ours["train_img_per_s"] / seed["train_img_per_s"],
        "speedup_train_single_core": single / seed["train_img_per_s"] if single else None,
    }


def store_sizes(stored: Splits) -> dict[str, Any]:
    """Disk per 1,000 images of each form, and the stored train side."""
    out: dict[str, Any] = {"train_side": stored.stores["train"].form.side}
    # One store per form: the val split's eval-form store stands for test's (the same form).
    for kind, store in (("train", stored.stores["train"]), ("eval", stored.stores["val"])):
        out[f"{kind}_mb_per_1000_images"] = store.nbytes / 2**20 / len(store) * 1000
        out[f"{kind}_build_s"] = store.build_s
    return out


def load_stored(spec: RunSpec, processor: Any, *, root: Path) -> Splits:
    """The run's splits through data stores under `root` (built there if missing)."""
    return load_splits(
        spec.data, seed=spec.seed, plan=store_plan(processor, side=spec.data.store_side, store_dir=str(root))
    )
