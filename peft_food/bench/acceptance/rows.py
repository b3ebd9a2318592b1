"""The benchmark's rows as acceptance parts (speed.py measures one row): ours for each method and
precision at a batch, the seed recipe's settings beside them, and LoRA and full fine-tuning end to end
on generated photos. The FLOPs of each method are counted once; the photos are read once."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from peft_food.bench.acceptance import speed
from peft_food.bench.acceptance.compose import run_spec
from peft_food.bench.acceptance.images import write_food101_layout
from peft_food.bench.acceptance.sizes import BENCH_METHODS, Size


class Bench:
    def __init__(self, part: Callable | None, *, size: Size, device: str, matmul: dict[str, Any]):
        """`part(name, kind, fn, skip=None)` adds one part (run.py's plan); `matmul`: the rate's figures,
        filled by the matmul part before any row runs."""
        self.part, self.size, self.device, self.matmul = part, size, device, matmul
        self._flops: dict[str, float] = {}
        self._photo_splits: Any = None

    def spec(self, method: str, precision: str, *extra: str) -> Any:
        return run_spec(
            *self.size.model,
            f"peft={method}",
            f"train.precision={precision}",
            *extra,
            output_dir=Path(tempfile.gettempdir()),
        )

    def flops(self, spec: Any) -> float:
        if spec.peft.method not in self._flops:
            self._flops[spec.peft.method] = speed.flops_per_image(spec)
        return self._flops[spec.peft.method]

    def row(
        self, work: Path, *, spec: Any, batch: int, recipe: str, steps: int | None = None, **inputs: Any
    ) -> tuple[dict, dict]:
        row = speed.bench_row(
            spec,
            batch=batch,
            warmup=self.size.warmup_steps,
            steps=steps or self.size.timed_steps,
            recipe=recipe,
            work=work,
            flops=self.flops(spec),
            matmul=self.matmul.get("flop_per_s", float("nan")),
            **inputs,
        )
        return speed.row_criteria(row), row

    def synthetic(self, *, batch: int, precisions: tuple[str, ...], seed_precision: str | None) -> None:
        """Ours for every method and precision at `batch`; then, if `seed_precision`, the seed recipe's.
        Rows at the targets' batch are kind `bench`, at the others `bench_more`."""
        kind = "bench" if batch == self.size.seed_batch else "bench_more"
        for precision in precisions:
            for method in BENCH_METHODS:
                self.part(
                    f"bench/{method}/{precision}/b{batch}/ours",
                    kind,
                    lambda w, m=method, p=precision: self.row(w, spec=self.spec(m, p), batch=batch, recipe="ours"),
                )
        for method in BENCH_METHODS if seed_precision else ():
            self.part(
                f"bench/{method}/{seed_precision}/b{batch}/seed_recipe",
                kind,
                lambda w, m=method: self.row(w, spec=self.spec(m, seed_precision), batch=batch, recipe="seed_recipe"),
            )

    def end_to_end(self, *, photos: Path, precision: str, stores: Path, skip: Callable[[], str | None]) -> None:
        """LoRA and full fine-tuning on the photos at the targets' batch: ours from data stores with
        the run's workers, the seed recipe decoding each JPEG in the training process."""
        for method in ("lora", "full"):
            for recipe in ("ours", "seed_recipe"):
                self.part(
                    f"bench_e2e/{method}/{precision}/b{self.size.seed_batch}/{recipe}",
                    "bench_e2e",
                    lambda w, m=method, r=recipe: self.e2e_row(
                        w, method=m, precision=precision, recipe=r, photos=photos, stores=stores
                    ),
                    skip=skip,
                )

    def e2e_row(
        self, work: Path, *, method: str, precision: str, recipe: str, photos: Path, stores: Path
    ) -> tuple[dict, dict]:
        workers = () if self.device == "cuda" else ("train.workers=0",)  # CPU toy: no worker start-up
        spec = self.spec(method, precision, "data=food101_local", f"data.root={photos}", *workers)
        if self._photo_splits is None:  # read (and screened) once; the stores are built on first use
            self._photo_splits = speed.photos_input(spec)
        stored = speed.stored_input(spec, root=stores) if recipe == "ours" else None
        return self.row(
            work,
            spec=spec,
            batch=self.size.seed_batch,
            recipe=recipe,
            loaded=self._photo_splits,
            stored=stored,
            steps=self.size.e2e_timed_steps,
        )


def make_photos(root: Path, *, size: Size) -> tuple[dict, dict]:
    """The photos part: Food-101's layout at the size's photo size (end-to-end rows, data store part)."""
    write_food101_layout(
        root,
        classes=size.jpeg_classes,
        train_per_class=size.jpeg_train_per_class,
        test_per_class=size.jpeg_test_per_class,
        size=size.jpeg_size,
    )
    files = list((root / "images").rglob("*.jpg"))
    return {"photos written": bool(files)}, {
        "photos": len(files),
        "size": list(size.jpeg_size),
        "mb": round(sum(p.stat().st_size for p in files) / 2**20, 1),
    }
