"""The acceptance run: its parts in order of what matters most, each within the budget or skipped
with the reason, the record rewritten after each, the table printed last.

Order: the matmul rate; the benchmark methods' checks (every precision); the benchmark at the
targets' batch, ours and the seed recipe's settings; end to end on photos; torchrun on NCCL; the data
store; train.compile; the benchmark's other batches; the other shipped methods' checks.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from peft_food.bench.acceptance import checks, runs, speed
from peft_food.bench.acceptance.compose import run_spec, shipped_methods
from peft_food.bench.acceptance.images import write_food101_layout
from peft_food.bench.acceptance.plan import Budget, Record, run_part, watchdog
from peft_food.bench.acceptance.report import summary, table
from peft_food.bench.acceptance.sizes import BENCH_METHODS, SIZES, TARGETS, Size
from peft_food.errors import ConfigError
from peft_food.tracking.provenance import git_state, hardware, package_versions

# Seconds a part of each kind is guessed to take before one has run (then: the longest so far).
PRIORS = {"matmul": 10, "train": 10, "bench": 10, "bench_e2e": 20, "setup": 20, "torchrun": 45, "store": 40,
          "compile": 90}
NO_GPU = "needs CUDA: no GPU here"


def header(*, size: Size, budget_s: float, device: str, argv: list[str]) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {"command": " ".join(["python -m peft_food.bench.acceptance", *argv]), "size": size.name,
            "budget_s": budget_s, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": {**hardware(), "cuda": torch.version.cuda if cuda else None,
                       "memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
                       "driver": driver() if cuda else None},
            "versions": {**package_versions(), "torch_cuda": torch.version.cuda},
            "git": git_state(Path(__file__).resolve().parent), "run_on": device,
            "package_dir": str(Path(__file__).resolve().parents[2]),  # the source tree that ran
            "criteria": {"loss_window": checks.LOSS_WINDOW, "scale_floor": checks.SCALE_FLOOR,
                         "reload_tol": checks.RELOAD_TOL, "export_tol": checks.EXPORT_TOL, "grid_tol": runs.GRID_TOL,
                         "statement": (checks.__doc__ or "").split("Criteria", 1)[-1].strip()},
            "targets": TARGETS}


def driver() -> str | None:
    import subprocess

    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def unusable(method: str, work: Path) -> str | None:
    """Why a shipped config cannot train as shipped (peft_config names no tuner), or None."""
    try:
        run_spec(f"peft={method}", output_dir=work)
    except ConfigError as err:
        return f"no shipped default: {err}"
    return None


def acceptance(out_dir: Path, *, size_name: str, budget_s: float, methods: list[str] | None, argv: list[str],
               started: float) -> int:
    size = SIZES[size_name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        # The toy's CPU figures are not speeds anyone reads; one thread keeps its time steady on a
        # shared 2-core machine, where oversubscribed threads made its steps ten times slower.
        torch.set_num_threads(1)
    precisions = ("fp16", "bf16") if device == "cuda" else ("fp32",)
    seed_precision = precisions[0]  # the seed recipe trains in fp16 (fp32 without a GPU)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = Record(out_dir, header(size=size, budget_s=budget_s, device=device, argv=argv))
    budget = Budget(budget_s, started=started)
    work = Path(tempfile.mkdtemp(prefix="peft_food_acceptance_"))

    def finish() -> dict[str, Any]:
        record.sections["summary"] = summary(record.as_dict(), batch=size.seed_batch, seed_precision=seed_precision)
        record.header["elapsed_s"] = round(time.monotonic() - started, 1)
        record.write()
        return {**record.as_dict(), "path": str(record.path)}

    def stop() -> None:
        print(table(finish()), flush=True)
        shutil.rmtree(work, ignore_errors=True)
        os._exit(3)

    timer = watchdog(record, budget, on_stop=stop)

    def part(name: str, kind: str, fn: Callable[[Path], tuple[dict, dict]], skip: str | None = None) -> None:
        folder = work / name.replace("/", "_")
        run_part(record, budget, name=name, kind=kind, prior=PRIORS[kind], part=lambda: fn(folder), skip=skip)
        shutil.rmtree(folder, ignore_errors=True)  # models and stores are GBs at full size

    try:
        chosen = methods or list(size.check_methods or shipped_methods())
        first = [m for m in BENCH_METHODS if m in chosen]
        matmul: dict[str, Any] = {}

        def measure(_: Path) -> tuple[dict, dict]:
            matmul.update(speed.matmul_rate(device=device, n=8192 if device == "cuda" else 512))
            return {"measured": matmul["flop_per_s"] > 0}, matmul

        part("matmul", "matmul", measure)
        record.sections["matmul"] = matmul
        train_checks(part, first, size=size, precisions=precisions, device=device, work=work)
        rate = matmul.get("flop_per_s", float("nan"))
        bench = Bench(part, size=size, device=device, rate=rate)
        bench.synthetic(batches=(size.seed_batch,), precisions=precisions, seed_precision=seed_precision)
        bench.end_to_end(precision=seed_precision, work=work)
        part("torchrun/nccl", "torchrun", lambda w: runs.torchrun_check(
            size=size, precision=precisions[-1], work=w, timeout=max(5.0, budget.left())),
            skip=None if device == "cuda" else NO_GPU)
        part("store/normalise_on_device", "store", lambda w: runs.store_check(
            size=size, precision=precisions[-1], device=device, photos=bench.photos, work=w),
            skip=None if bench.photos else "no photos: the setup part failed")
        for method in ("lora", "full"):
            part(f"compile/{method}/{precisions[-1]}", "compile", lambda w, m=method: checks.method_check(
                method=m, size=size, precision=precisions[-1], device=device, work=w, compile=True, steps=10),
                skip=None if device == "cuda" else NO_GPU)
        bench.synthetic(batches=[b for b in size.bench_batches if b != size.seed_batch], precisions=precisions,
                        seed_precision=None)
        train_checks(part, [m for m in chosen if m not in first], size=size, precisions=precisions, device=device,
                     work=work)
    finally:
        timer.cancel()
        result = finish()
        shutil.rmtree(work, ignore_errors=True)
    print(table(result), flush=True)
    return 0 if result["verdict"] == "pass" else 1


def train_checks(part: Callable, methods: list[str], *, size: Size, precisions: tuple[str, ...], device: str,
                 work: Path) -> None:
    for method in methods:
        reason = unusable(method, work / "compose")
        for precision in precisions:
            part(f"train/{method}/{precision}", "train", lambda w, m=method, p=precision: checks.method_check(
                method=m, size=size, precision=p, device=device, work=w), skip=reason)


class Bench:
    """The benchmark's rows, each a part of its own: the FLOPs of each method are counted once, and
    the photos (for the end-to-end rows and the data store part) are made once."""

    def __init__(self, part: Callable, *, size: Size, device: str, rate: float):
        self.part, self.size, self.device, self.rate = part, size, device, rate
        self._flops: dict[str, float] = {}
        self.photos: Path | None = None  # the generated Food-101-layout folder, once made
        self._photo_splits: Any = None

    def spec(self, method: str, precision: str, *extra: str) -> Any:
        return run_spec(*self.size.model, f"peft={method}", f"train.precision={precision}", *extra,
                        output_dir=Path(tempfile.gettempdir()))

    def flops(self, spec: Any) -> float:
        if spec.peft.method not in self._flops:
            self._flops[spec.peft.method] = speed.flops_per_image(spec)
        return self._flops[spec.peft.method]

    def row(self, work: Path, *, spec: Any, batch: int, recipe: str, **inputs: Any) -> tuple[dict, dict]:
        row = speed.bench_row(spec, batch=batch, warmup=self.size.warmup_steps, steps=self.size.timed_steps,
                              recipe=recipe, work=work, flops=self.flops(spec), matmul=self.rate, **inputs)
        return speed.row_criteria(row), row

    def synthetic(self, *, batches, precisions, seed_precision: str | None) -> None:
        for batch in batches:
            for precision in precisions:
                for method in BENCH_METHODS:
                    self.part(f"bench/{method}/{precision}/b{batch}/ours", "bench", lambda w, m=method, p=precision, b=batch:
                              self.row(w, spec=self.spec(m, p), batch=b, recipe="ours"))
            if seed_precision is not None:
                for method in BENCH_METHODS:
                    self.part(f"bench/{method}/{seed_precision}/b{batch}/seed_recipe", "bench",
                              lambda w, m=method, b=batch: self.row(w, spec=self.spec(m, seed_precision), batch=b,
                                                                    recipe="seed_recipe"))

    def end_to_end(self, *, precision: str, work: Path) -> None:
        """LoRA and full fine-tuning on generated photos: ours from data stores with the run's workers,
        the seed recipe decoding JPEGs per image with 0 workers, at the targets' batch."""
        size = self.size

        def make(_: Path) -> tuple[dict, dict]:
            root = write_food101_layout(work / "photos", classes=size.jpeg_classes,
                                        train_per_class=size.jpeg_train_per_class,
                                        test_per_class=size.jpeg_test_per_class, size=size.jpeg_size)
            files = list((root / "images").rglob("*.jpg"))
            self.photos = root
            return {"photos written": bool(files)}, {"photos": len(files), "size": list(size.jpeg_size),
                                                     "mb": round(sum(p.stat().st_size for p in files) / 2**20, 1)}

        self.part("setup/photos", "setup", make)
        for method in ("lora", "full"):
            for recipe in ("ours", "seed_recipe"):
                self.part(f"bench_e2e/{method}/{precision}/b{size.seed_batch}/{recipe}", "bench_e2e",
                          lambda w, m=method, r=recipe: self.e2e_row(w, method=m, precision=precision, recipe=r,
                                                                     stores=work / "e2e_stores"),
                          skip=None if self.photos else "no photos: the setup part failed")

    def e2e_row(self, work: Path, *, method: str, precision: str, recipe: str, stores: Path) -> tuple[dict, dict]:
        workers = () if self.device == "cuda" else ("train.workers=0",)
        spec = self.spec(method, precision, "data=food101_local", f"data.root={self.photos}", *workers)
        if self._photo_splits is None:  # read (and screened) once; the stores are built on first use
            self._photo_splits = speed.photos_input(spec)
        loaded = self._photo_splits
        stored = speed.stored_input(spec, root=stores) if recipe == "ours" else None
        return self.row(work, spec=spec, batch=self.size.seed_batch, recipe=recipe, loaded=loaded, stored=stored)
