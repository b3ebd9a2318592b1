"""The acceptance run's summary against the targets, and the short table it prints last (the JSON
holds every figure). Torch-free."""

from __future__ import annotations

from typing import Any

from peft_food.bench.acceptance.sizes import TARGETS


def rows(record: dict[str, Any], *kinds: str) -> dict[tuple, dict[str, Any]]:
    """The benchmark's timed rows by (method, precision, batch, recipe)."""
    found = {}
    for check in record["checks"]:
        if check["kind"] in kinds and check["verdict"] == "pass":
            f = check["figures"]
            found[(f["method"], f["precision"], f["batch"], f["recipe"])] = f
    return found


def summary(record: dict[str, Any], *, batch: int, seed_precision: str) -> dict[str, Any]:
    """The targets' figures, where the rows they need were measured (None where not)."""
    synthetic, e2e = rows(record, "bench", "bench_more"), rows(record, "bench_e2e")
    out: dict[str, Any] = {"batch": batch, "targets": TARGETS}
    precisions = sorted({key[1] for key in synthetic if key[3] == "ours"})
    for p in precisions:
        lora, full = synthetic.get(("lora", p, batch, "ours")), synthetic.get(("full", p, batch, "ours"))
        out[f"lora_img_per_s_{p}"] = lora and lora["img_per_s_median"]
        out[f"full_img_per_s_{p}"] = full and full["img_per_s_median"]
        out[f"lora_over_full_peak_mem_{p}"] = lora and full and lora["peak_mem_mb"] / full["peak_mem_mb"]
        out[f"lora_over_full_peak_reserved_{p}"] = (
            lora and full and lora.get("peak_reserved_mb") and lora["peak_reserved_mb"] / full["peak_reserved_mb"]
        )
        for (method, precision, b, recipe), row in synthetic.items():
            seed = synthetic.get((method, seed_precision, batch, "seed_recipe"))
            if precision == p and b == batch and recipe == "ours" and seed:
                out[f"over_seed_synthetic_{method}_{p}"] = row["img_per_s_median"] / seed["img_per_s_median"]
    for (method, precision, b, recipe), row in e2e.items():
        seed = e2e.get((method, precision, b, "seed_recipe"))
        if recipe == "ours" and seed:
            out[f"over_seed_end_to_end_{method}_{precision}"] = row["img_per_s_median"] / seed["img_per_s_median"]
    return out


def brief(check: dict[str, Any]) -> str:
    """A check's key figures in a few words."""
    f = check["figures"]
    if check["kind"] in ("train", "compile") and "loss_first_mean" in f:
        parts = [
            f"loss {f['loss_first_mean']:.2f}->{f['loss_last_mean']:.2f}",
            f"trainable {f['trainable_params']:,}"
            + (
                "" if f["trainable_params"] == f["trainable_params_meta"] else f" (meta {f['trainable_params_meta']:,})"
            ),
        ]
        if "final_scale" in f:
            parts.append(f"scale {f['final_scale']:g}")
        if "reload_max_abs_logit_diff" in f:
            parts.append(f"reload {f['reload_max_abs_logit_diff']:.0e}")
        if "export_max_abs_prob_diff" in f:
            parts.append(f"export {f['export_max_abs_prob_diff']:.0e}")
        if check["kind"] == "compile":
            parts.append(f"first step {f['first_step_s']:.1f} s, then {f['median_step_s'] * 1000:.0f} ms")
        return ", ".join(parts)
    if check["kind"] in ("bench", "bench_more", "bench_e2e") and "img_per_s_median" in f:
        reserved = f" / {f['peak_reserved_mb']:,.0f}" if f.get("peak_reserved_mb") else ""
        return (
            f"{f['img_per_s_median']:,.0f} img/s, {f['step_s_median'] * 1000:.1f} ms, "
            f"{f['peak_mem_mb']:,.0f}{reserved} MB, {f['fraction_of_matmul']:.0%} of matmul"
        )
    if check["kind"] == "torchrun" and "backend" in f:
        return f"backend {f['backend']}, world {f['world_size']}, all-reduce {f['all_reduce']:g}"
    if check["kind"] == "store" and "input_device" in f:
        return f"{f['input_dtype']} on {f['input_device']}, off grid {f['max_off_8bit_grid']:.0e}"
    if check["kind"] == "setup" and "photos" in f:
        return f"{f['photos']:,} JPEGs at {f['size'][0]}x{f['size'][1]}, {f['mb']} MB"
    if check["kind"] == "matmul" and "tflop_per_s" in f:
        return f"{f['dtype']} {f['n']}^3: {f['tflop_per_s']:.1f} TFLOP/s"
    return ", ".join(f"{k} {v}" for k, v in f.items() if isinstance(v, (int, float, str)))[:90]


def fmt(value: Any, pattern: str) -> str:
    return "not measured" if value is None else format(value, pattern)


def table(record: dict[str, Any]) -> str:
    """One line per check, then the targets beside their figures, then the verdict (last, so the
    tail of a long log still shows it)."""
    head = record["counts"]
    verdict = (
        f"{record['verdict'].upper()}: {head['pass']} pass, {head['fail']} fail, {head['skip']} skipped "
        f"in {record.get('elapsed_s', 0):.0f} s of {record['budget_s']:.0f}"
    )
    lines = [f"peft_food acceptance, size {record['size']} on {record['device']['device']}"]
    for check in record["checks"]:
        detail = check["reason"] if check["verdict"] != "pass" else brief(check)
        seconds = f"{check['seconds']:6.1f}s" if check["seconds"] is not None else "       "
        lines.append(f"  {check['verdict']:<5}{seconds}  {check['name']:<38}{detail}")
    lines += targets(record.get("summary", {}), size=record["size"])
    if record.get("stopped"):
        lines.append(f"STOPPED: {record['stopped']}")
    if record.get("rerun"):
        lines.append(f"the budget left parts out; to run them: {record['rerun']}")
    lines.append(verdict)
    lines.append(f"wrote {record['path']}")
    return "\n".join(lines)


def targets(s: dict[str, Any], *, size: str) -> list[str]:
    if not any(key.startswith(("lora_img_per_s_", "over_seed_end_to_end_")) for key in s):
        return []
    t = s["targets"]
    lines = [
        f"targets (batch {s['batch']}; {'one H200' if size == 'full' else 'toy: not comparable'})"
        f"{'':<10}measured      target"
    ]
    for p in ("fp16", "bf16", "fp32"):
        if f"lora_img_per_s_{p}" not in s:
            continue
        lines.append(f"  LoRA img/s, {p:<30}{fmt(s[f'lora_img_per_s_{p}'], '>10,.0f')}  >= {t['lora_img_per_s']:,}")
        lines.append(
            f"  full fine-tuning img/s, {p:<18}{fmt(s[f'full_img_per_s_{p}'], '>10,.0f')}  >= {t['full_img_per_s']:,}"
        )
        lines.append(
            f"  LoRA / full peak memory, {p:<17}{fmt(s[f'lora_over_full_peak_mem_{p}'], '>10.2f')}  "
            f"<= {t['lora_over_full_peak_mem']}"
        )
        for method in ("lora", "full"):
            ratio = s.get(f"over_seed_synthetic_{method}_{p}")
            if ratio is not None:
                lines.append(f"  ours / seed, synthetic pixels, {method} {p:<6}{ratio:>10.1f}x (model-bound)")
    for key, value in s.items():
        if key.startswith("over_seed_end_to_end_"):
            method, precision = key.removeprefix("over_seed_end_to_end_").split("_")
            lines.append(
                f"  ours / seed end to end, {method} {precision:<12}{value:>10.1f}x >= {t['over_seed_end_to_end']:g}x"
            )
    return lines
