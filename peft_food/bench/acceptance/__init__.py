"""GPU acceptance: one command that proves the real job on a GPU in minutes and leaves a record.

    python -m peft_food.bench.acceptance experiments/gpu_acceptance/<date> --size full   # one H200, < 8 min
    python -m peft_food.bench.acceptance /tmp/acceptance --size toy                     # CPU, under a minute (CI)

From the source tree, no install (docs/gpu-acceptance.md has the wheels step). It runs:
- checks (checks.py, runs.py): every shipped method at its defaults, each precision (fp16 and bf16 on
  CUDA, fp32 on CPU), N optimizer steps on learnable pixels (losses finite and falling, GradScaler's
  scale, trainable count against the meta device, the saved model reloaded, export + pipeline());
  torchrun on NCCL; the data store feeding a run normalised on the device; train.compile for LoRA
  and full fine-tuning;
- the benchmark (speed.py, bench/train.py's runs): LoRA, full, VPT, SSF and AdaptFormer at the size's
  batches and precisions, ours against the seed recipe's settings, synthetic and end to end.
Each part is a check with a verdict (pass, fail, or skip with the reason) in OUT_DIR/acceptance.json,
rewritten after every part; parts that would not fit in --budget-s are skipped, not overrun
(plan.py). The table prints last; the exit status is 0 if nothing failed, 1 if a check failed, 3 if
the budget ran out inside a part.
"""
