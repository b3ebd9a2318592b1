"""The benchmark's printed table (bench.json holds every figure)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def table(result: dict[str, Any]) -> str:
    lines = [f"device: {result['device']['device']}  batch: {result['batch_size']}  model: {result['model']}"]
    if "data" in result:
        d = result["data"]
        lines.append("data path (img/s)        train      eval   workers")
        for name in ("ours", "seed_recipe"):
            lines.append(
                f"  {name:<20}{d[name]['train_img_per_s']:>9.1f}{d[name]['eval_img_per_s']:>10.1f}"
                f"{d[name]['workers']:>10}"
            )
        for w, r in d["ours"]["by_workers"].items():
            lines.append(
                f"  ours, {w} workers{'':<8}{r['train_img_per_s']:>9.1f}   per core {r['train_img_per_s_per_core']:.1f}"
            )
        p, c = d["ours_pil_decode"], d["ours_cached"]
        lines.append(f"  ours, PIL decode, 0 workers{p['train_img_per_s']:>9.1f}   (before data.fast_decode)")
        lines.append(
            f"  ours, cached, 0 workers{c['train_img_per_s']:>13.1f}   (decode once: {c['decode_once_s']:.1f} s)"
        )
        st = d["ours_store"]
        lines.append(
            f"  ours, data store, 0 workers{st['train_img_per_s']:>9.1f}{st['eval_img_per_s']:>10.1f}   "
            f"(train side {st['train_side']}: {st['train_mb_per_1000_images']:.0f} MB per 1,000 images, "
            f"eval {st['eval_mb_per_1000_images']:.0f} MB; built in {st['train_build_s'] + st['eval_build_s']:.1f} s)"
        )
        over = d["store_over_fast_decode_single_core"]
        lines.append(
            f"  data store single core: {d['speedup_train_store_single_core']:.2f}x the seed recipe, "
            f"{f'{over:.2f}x' if over else 'not timed vs'} data.fast_decode"
        )
        dec = d["decoders"]
        rates = "  ".join(f"{name} {rate:.0f}" for name, rate in dec["img_per_s_one_core"].items())
        diffs = ", ".join(
            f"{name} {diff} ({dec['images_differing_from_torchcodec'][name]} images)"
            for name, diff in dec["max_abs_diff_from_torchcodec"].items()
        )
        ratios = ", ".join(f"{key.replace('_over_', ' / ')} {v:.2f}x" for key, v in dec.items() if "_over_" in key)
        lines.append(f"  JPEG decode alone, {dec['images']} photos, img/s on one core: {rates} ({ratios})")
        lines.append(f"  largest pixel difference from TorchCodec's decode: {diffs}")
        single = d["speedup_train_single_core"]
        lines.append(
            f"  speed-up vs seed: {d['speedup_train']:.2f}x (single core: "
            f"{f'{single:.2f}x' if single else 'not timed'}, cached single core: "
            f"{d['speedup_train_cached_single_core']:.2f}x)"
        )
    if "startup" in result:
        st = result["startup"]
        lines.append(f"startup, {st['images']:,} images: seconds from each job's start to its first training step")
        lines.append("  " + "  ".join(f"{name} {s:.1f}" for name, s in st["startup_s"].items()))
        data_share = st["data_second_over_first"]
        lines.append(f"  one multirun process (-m): second job / first {st['multirun_second_over_first']:.0%}")
        lines.append(
            f"  a process per job (SLURM): second job with the store / first: {st['second_over_first']:.0%} (data stage alone: "
            f"{f'{data_share:.0%}' if data_share is not None else 'too small to time'}); "
            f"/ JPEG path: {st['second_over_jpeg']:.0%}"
        )
        for name, r in st["rss"].items():
            lines.append(
                f"  peak RSS growth reading {r['images_read']} images from the {r['store_mb']:.0f} MB "
                f"{name.replace('_', ' ')} ({r['images']} images): {r['peak_rss_growth_mb']:.0f} MB"
            )
    if result.get("train"):
        lines.append("training                     img/s   step ms  peak MB  eval img/s")
    for method, by_source in result.get("train", {}).items():
        for source, by_recipe in by_source.items():
            for recipe in ("ours", "seed_recipe"):
                r = by_recipe[recipe]
                lines.append(
                    f"  {method:<5}{source:<10}{recipe:<12}{r['img_per_s']:>7.1f}{r['step_s'] * 1000:>10.1f}"
                    f"{r['peak_mem_mb']:>9.0f}{r['eval_img_per_s']:>12.1f}"
                )
            lines.append(f"  {method:<5}{source:<10}speed-up {by_recipe['speedup']:.2f}x")
    if "methods" in result:
        m = result["methods"]
        against = m["against"]
        lines.append(
            f"methods ({m['input']} pixels, a process each, best of {m['repeats']}){'':<4}trainable   step ms"
            f"  train MB  peak MB" + (f"  time / {against}  memory / {against}" if against else "")
        )
        for row in m["by_method"].values():
            ratios = f"{row['step_over_full']:>11.2f}{row['train_mem_over_full']:>14.2f}" if against else ""
            lines.append(
                f"  {row['label']:<44}{row['trainable_params']:>11,}{row['step_s'] * 1000:>10.1f}"
                f"{row['train_mem_mb']:>10.0f}{row['peak_mem_mb']:>9.0f}{ratios}"
            )
    for d in result.get("dropout", {}).values():
        lines.append(
            f"  {d['method']} dropout {d['dropout']} vs 0 ({d['input']}): {d['img_per_s']:.1f} vs {d['img_per_s_without']:.1f} "
            f"img/s ({d['time_cost']:+.1%} time), peak {d['peak_mem_mb']:.0f} vs {d['peak_mem_mb_without']:.0f} MB "
            f"({d['memory_cost']:+.1%})"
        )
    return "\n".join(lines)
