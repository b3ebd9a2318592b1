"""What each `--size` runs: the model, the checks' steps and batch, the benchmark's grid. Torch-free,
so the command line answers `--help` and a bad size at once.

full is the GPU targets' setting (ViT-B/16, random weights, 224 px); toy is the same code path on a
4-layer ViT at 32 px, small enough for CI's 2 CPU cores (under a minute, imports included).
"""

from __future__ import annotations

from dataclasses import dataclass

# The benchmark's methods: the targets name LoRA and full fine-tuning; VPT, SSF and AdaptFormer are the
# methods whose forward hooks (or prompts) autocast must carry. The checks take these first.
BENCH_METHODS = ("lora", "full", "vpt", "ssf", "adaptformer")


@dataclass(frozen=True)
class Size:
    name: str
    model: tuple[str, ...]  # model overrides (peft_food/conf/model/)
    check_batch: int  # per optimizer step, in every method's check
    check_steps: int  # optimizer steps per check (losses compared first vs last `window`)
    check_methods: tuple[str, ...] | None  # None: every shipped peft config (peft_food/conf/peft/)
    bench_batches: tuple[int, ...]
    seed_batch: int  # the seed recipe side by side at this batch (the targets' batch)
    warmup_steps: int  # untimed (allocator, autotune, first-step overheads)
    timed_steps: int  # the benchmark's median is over these
    e2e_timed_steps: int  # end to end (the seed recipe decodes every image: data-bound, slow)
    jpeg_size: tuple[int, int]  # width, height of the generated photos (Food-101's are ~512x384)
    jpeg_classes: int
    jpeg_train_per_class: int
    jpeg_test_per_class: int


SIZES = {
    "full": Size(
        name="full",
        model=("model=vit_base", "model.pretrained=false"),
        check_batch=64,
        check_steps=20,
        check_methods=None,
        bench_batches=(128, 256),
        seed_batch=128,
        warmup_steps=5,
        timed_steps=20,
        e2e_timed_steps=10,
        jpeg_size=(512, 384),
        jpeg_classes=10,
        jpeg_train_per_class=200,
        jpeg_test_per_class=5,
    ),
    "toy": Size(
        name="toy",
        model=("model=vit_tiny",),
        check_batch=16,
        check_steps=20,
        check_methods=BENCH_METHODS,
        bench_batches=(8, 16),
        seed_batch=8,
        warmup_steps=1,
        timed_steps=3,
        e2e_timed_steps=3,
        jpeg_size=(64, 48),
        jpeg_classes=4,
        jpeg_train_per_class=12,
        jpeg_test_per_class=2,
    ),
}

# The groups of parts `--parts` chooses from (run.py runs them in its own order): every method's
# check; the benchmark at the targets' batch with the seed recipe beside it; end to end on photos;
# torchrun and the data store; train.compile; the benchmark at the other batches.
PARTS = ("checks", "bench", "e2e", "runs", "compile", "batches")

# What the benchmark is measured against: printed beside the figures, never asserted.
TARGETS = {
    "lora_img_per_s": 5000,  # LoRA, batch 128, one H200
    "full_img_per_s": 3500,  # full fine-tuning, batch 128, one H200
    "lora_over_full_peak_mem": 0.7,  # LoRA's peak CUDA memory at most this share of full fine-tuning's
    "over_seed_end_to_end": 10.0,  # ours / the seed recipe's settings, end to end on the same GPU
}
