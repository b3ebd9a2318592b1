"""What the acceptance command's torchrun check starts on each rank: one real training run through
`train(cfg)`, then a report of the process group it ran in (the backend accelerate chose, the world
size, one all-reduce across it), written as JSON by rank 0.

    python -m torch.distributed.run --standalone --nproc_per_node=1 -m peft_food.bench.acceptance.ddp \
        RESULT.json model=vit_tiny data=synthetic ... output_dir=RUN_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import torch
    import torch.distributed as dist

    from peft_food.bench.acceptance.compose import compose
    from peft_food.training.distributed import is_main_process
    from peft_food.training.pipeline import train

    result, run_dir, overrides = Path(argv[0]), Path(argv[1]), argv[2:]
    record = train(compose(*overrides, output_dir=run_dir))
    report = {
        "status": record.status,
        "world_size_recorded": record.provenance.world_size,
        "initialized": dist.is_initialized(),
    }
    if dist.is_initialized():
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        ones = torch.ones(1, device=device)
        dist.all_reduce(ones)  # every rank adds its 1: the world size, over the group's own backend
        report.update(backend=dist.get_backend(), world_size=dist.get_world_size(), all_reduce=float(ones.item()))
    report.update(train_img_per_s=record.efficiency.train_img_per_s, test=record.test)
    if is_main_process():
        result.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
