"""The acceptance run: its parts in order of what matters most, each within the budget or skipped
with the reason, the record rewritten after each, the table printed last.

Order: the matmul rate; the benchmark methods' checks (every precision); the benchmark at the
targets' batch, ours and the seed recipe's settings; the photos, end to end on them; torchrun on
NCCL and the data store; train.compile; the other shipped methods' checks; the benchmark's other
batches. `--parts` picks groups of them (sizes.PARTS), `--methods` the methods checked; parts the
budget left out are named in a ready rerun command.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from peft_food.bench.acceptance import checks, runs, speed
from peft_food.bench.acceptance.compose import run_spec, shipped_methods
from peft_food.bench.acceptance.plan import Budget, Record, run_part, watchdog
from peft_food.bench.acceptance.report import summary, table
from peft_food.bench.acceptance.rows import Bench, make_photos
from peft_food.bench.acceptance.sizes import BENCH_METHODS, PARTS, SIZES, TARGETS, Size
from peft_food.errors import ConfigError
from peft_food.tracking.provenance import git_state, hardware, package_versions

# Seconds a part of each kind is guessed to take on the GPU before one has run (then: the longest so far).
PRIORS = {
    "matmul": 10,
    "train": 8,
    "bench": 6,
    "bench_more": 8,
    "bench_e2e": 20,
    "setup": 10,
    "torchrun": 40,
    "store": 30,
    "compile": 90,
}
NO_GPU = "needs CUDA: no GPU here"
Skip = str | Callable[[], str | None] | None  # a reason to skip a part, or a function giving one at its turn
GROUP_OF = {
    "train": "checks",
    "matmul": "bench",
    "bench": "bench",
    "setup": "e2e",
    "bench_e2e": "e2e",
    "torchrun": "runs",
    "store": "runs",
    "compile": "compile",
    "bench_more": "batches",
}


def header(*, size: Size, budget_s: float, device: str, argv: list[str]) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "command": " ".join(["python -m peft_food.bench.acceptance", *argv]),
        "size": size.name,
        "budget_s": budget_s,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {
            **hardware(),
            "cuda": torch.version.cuda if cuda else None,
            "memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
            "driver": driver() if cuda else None,
        },
        "versions": {**package_versions(), "torch_cuda": torch.version.cuda},
        "git": git_state(Path(__file__).resolve().parent),
        "run_on": device,
        "package_dir": str(Path(__file__).resolve().parents[2]),  # the source tree that ran
        "criteria": {
            "loss_window": checks.LOSS_WINDOW,
            "scale_floor": checks.SCALE_FLOOR,
            "reload_tol": checks.RELOAD_TOL,
            "export_tol": checks.EXPORT_TOL,
            "grid_tol": runs.GRID_TOL,
            "statement": (checks.__doc__ or "").split("Criteria", 1)[-1].strip(),
        },
        "targets": TARGETS,
    }


def driver() -> str | None:
    try:
        return (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def quiet() -> None:
    """Keep the console to what a reader of the run needs: every check builds a random-init model
    (said once, here) and saves and loads several, each with a progress bar."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    logging.getLogger("peft_food.model.backbone").setLevel(logging.ERROR)
    print("every model here is built from its config with random weights (model.pretrained=false)", flush=True)


def unusable(method: str, work: Path) -> str | None:
    """Why a shipped config cannot train as shipped (peft_config names no tuner), or None."""
    try:
        run_spec(f"peft={method}", output_dir=work)
    except ConfigError as err:
        return f"no shipped default: {err}"
    return None


def rerun(record: dict[str, Any], *, out_dir: Path, size: str) -> str | None:
    """The command that runs what the budget left out (None if nothing was)."""
    left = [c for c in record["checks"] if c["verdict"] == "skip" and (c["reason"] or "").startswith("budget:")]
    if not left:
        return None
    groups = [g for g in PARTS if any(GROUP_OF[c["kind"]] == g for c in left)]
    methods = sorted({c["name"].split("/")[1] for c in left if c["kind"] == "train"})
    return f"python -m peft_food.bench.acceptance {out_dir}-rest --size {size} --parts {','.join(groups)}" + (
        f" --methods {','.join(methods)}" if methods else ""
    )


def acceptance(
    out_dir: Path,
    *,
    size_name: str,
    budget_s: float,
    methods: list[str] | None,
    parts: list[str] | None,
    argv: list[str],
    started: float,
) -> int:
    size = SIZES[size_name]
    chosen_parts = set(parts or PARTS)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        # The toy's CPU figures are not speeds anyone reads; one thread keeps its time steady on a
        # small shared CPU, where oversubscribed threads can make its steps ten times slower.
        torch.set_num_threads(1)
    precisions = ("fp16", "bf16") if device == "cuda" else ("fp32",)
    quiet()
    out_dir.mkdir(parents=True, exist_ok=True)
    record = Record(out_dir, header(size=size, budget_s=budget_s, device=device, argv=argv))
    budget = Budget(budget_s, started=started)
    work = Path(tempfile.mkdtemp(prefix="peft_food_acceptance_"))

    def finish() -> dict[str, Any]:
        record.sections["summary"] = summary(record.as_dict(), batch=size.seed_batch, seed_precision=precisions[0])
        record.header["elapsed_s"] = round(time.monotonic() - started, 1)
        record.sections["rerun"] = rerun(record.as_dict(), out_dir=out_dir, size=size.name)
        record.write()
        return {**record.as_dict(), "path": str(record.path)}

    def stop() -> None:
        print(table(finish()), flush=True)
        shutil.rmtree(work, ignore_errors=True)
        os._exit(3)

    plan: list[tuple[str, str, Callable[[Path], tuple[dict, dict]], Skip]] = []

    def part(name: str, kind: str, fn: Callable[[Path], tuple[dict, dict]], skip: Skip = None) -> None:
        plan.append((name, kind, fn, skip))

    plan_parts(
        part,
        chosen_parts,
        size=size,
        device=device,
        precisions=precisions,
        work=work,
        budget=budget,
        record=record,
        methods=methods or list(size.check_methods or shipped_methods()),
    )
    record.planned = [(name, kind) for name, kind, _, _ in plan]  # a stopped run names the parts never reached
    timer = watchdog(record, budget, on_stop=stop)
    try:
        for name, kind, fn, skip in plan:
            folder = work / name.replace("/", "_")
            run_part(
                record,
                budget,
                name=name,
                kind=kind,
                prior=PRIORS[kind],
                part=functools.partial(fn, folder),
                skip=skip() if callable(skip) else skip,
            )
            shutil.rmtree(folder, ignore_errors=True)  # models and stores are GBs at full size
    finally:
        timer.cancel()
        result = finish()
        shutil.rmtree(work, ignore_errors=True)
    print(table(result), flush=True)
    return 0 if result["verdict"] == "pass" else 1


def plan_parts(
    part: Callable,
    chosen: set[str],
    *,
    size: Size,
    device: str,
    precisions: tuple[str, ...],
    work: Path,
    budget: Budget,
    record: Record,
    methods: list[str],
) -> None:
    """Every part of the run, in order, through `part(name, kind, fn, skip)`: fn(folder) -> (criteria,
    figures) runs later; `skip` is a reason, or a function giving one (or None) when the part's turn comes."""
    gpu_only = None if device == "cuda" else NO_GPU
    last = precisions[-1]  # bf16 on CUDA: the runs, compile and exports use it
    first = [m for m in BENCH_METHODS if m in methods]
    matmul: dict[str, Any] = {}

    def measure(_: Path) -> tuple[dict, dict]:
        matmul.update(speed.matmul_rate(device=device, n=8192 if device == "cuda" else 512))
        return {"measured": matmul["flop_per_s"] > 0}, matmul

    if chosen & {"bench", "e2e", "batches"}:  # every benchmark row's share of the matmul rate needs it
        part("matmul", "matmul", measure)
        record.sections["matmul"] = matmul
    if "checks" in chosen:
        train_checks(part, first, size=size, precisions=precisions, device=device)
    bench = Bench(part, size=size, device=device, matmul=matmul)
    if "bench" in chosen:
        bench.synthetic(batch=size.seed_batch, precisions=precisions, seed_precision=precisions[0])
    photos = work / "photos"
    if chosen & {"e2e", "runs"}:
        part("setup/photos", "setup", lambda _: make_photos(photos, size=size))
    no_photos = lambda: None if (photos / "meta").is_dir() else "no photos: the setup part did not make them"  # noqa: E731
    if "e2e" in chosen:
        bench.end_to_end(photos=photos, precision=precisions[0], stores=work / "e2e_stores", skip=no_photos)
    if "runs" in chosen:
        part(
            "torchrun/nccl",
            "torchrun",
            lambda w: runs.torchrun_check(size=size, precision=last, work=w, timeout=max(5.0, budget.left())),
            skip=gpu_only,
        )
        part(
            "store/normalise_on_device",
            "store",
            lambda w: runs.store_check(size=size, precision=last, device=device, photos=photos, work=w),
            skip=no_photos,
        )
    if "compile" in chosen:
        for method in ("lora", "full"):
            part(
                f"compile/{method}/{last}",
                "compile",
                lambda w, m=method: checks.method_check(
                    method=m, size=size, precision=last, device=device, work=w, compile=True, steps=10
                ),
                skip=gpu_only,
            )
    if "checks" in chosen:
        train_checks(part, [m for m in methods if m not in first], size=size, precisions=precisions, device=device)
    if "batches" in chosen:
        for batch in size.bench_batches:
            if batch != size.seed_batch:
                bench.synthetic(batch=batch, precisions=precisions, seed_precision=None)


def train_checks(part: Callable, methods: list[str], *, size: Size, precisions: tuple[str, ...], device: str) -> None:
    """Each method in each precision; the export and pipeline() check in the last one only (what is
    exported is the fp32 model either way)."""
    for method in methods:
        reason = unusable(method, Path(tempfile.gettempdir()))
        for precision in precisions:
            part(
                f"train/{method}/{precision}",
                "train",
                lambda w, m=method, p=precision: checks.method_check(
                    method=m, size=size, precision=p, device=device, work=w, export=p == precisions[-1]
                ),
                skip=reason,
            )
