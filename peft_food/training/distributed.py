"""Several processes, one run: `torchrun --nproc_per_node=N` (or `accelerate launch`) starts N
copies of the same Hydra command; Trainer runs them as DDP.

    torchrun --nproc_per_node=2 -m peft_food experiment=quickstart

Every rank runs hydra.main and may stamp its own output dir (lightning-hydra-template #393), so
all ranks adopt rank 0's and each other rank removes the dir it made: one run dir, one W&B run and one
metrics.json, all written by rank 0. Batch size is per device: the effective batch is
train.batch_size * train.grad_accum * N. Evaluation gathers predictions from every rank, so
accuracy is over the whole eval set.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from peft_food.training.claim import release


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def quiet_other_ranks() -> None:
    """One console under torchrun: every rank runs the same command and would print the same start-up
    lines; the console handlers of ranks other than 0 pass errors only (a rank that fails still says
    why). The run's train.log is rank 0's too."""
    if is_main_process():
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


def share_run_dir(output_dir: str) -> str:
    """Rank 0's run dir, on every rank (a no-op for a single process)."""
    if world_size() == 1:
        return output_dir
    import torch  # only under torchrun: the command line itself stays torch-free
    import torch.distributed as dist

    if not dist.is_initialized():
        # The same group Trainer (accelerate) would create; it reuses an initialised one.
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    shared = [output_dir]
    dist.broadcast_object_list(shared, src=0)
    if shared[0] != output_dir:
        release(Path(output_dir), remove=True)  # this rank's own dir (training/claim.py): rank 0 keeps the run
    # Every other rank's claimed dir is gone before rank 0 looks for a live copy of this command: a rank
    # that claimed first in the same second holds the older name, which would read as one.
    dist.barrier()
    return shared[0]
