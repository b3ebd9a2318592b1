"""A run's Trainer checkpoints (`<run dir>/checkpoints/checkpoint-N/`): which one a resume trusts.

Trainer writes a checkpoint in place, file by file (weights, optimizer, scheduler, RNG states,
trainer_state.json last), so a kill -9 or a full disk can leave the newest one torn. A resume takes
the newest *complete* one, each file Trainer reads checked whole, and the process holding the run
dir deletes the torn ones after it (one warning line) so Trainer writes them again.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

from peft_food.tracking.record import RunRecord

log = logging.getLogger(__name__)


def _checkpoints(run_dir: Path) -> list[Path]:
    found = [p for p in (run_dir / "checkpoints").glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _zip_whole(path: Path) -> bool:
    """torch.save's files are zip archives: a truncated one has no central directory."""
    return path.is_file() and zipfile.is_zipfile(path)


def _safetensors_whole(path: Path) -> bool:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes: whole
    when the header parses and the last tensor ends where the file does."""
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        return path.stat().st_size == 8 + size + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


def complete(checkpoint: Path) -> bool:
    """Everything Trainer reads to resume exactly (transformers' _load_from_checkpoint,
    _load_optimizer_and_scheduler, _load_rng_state), each whole: trainer_state.json (Trainer writes
    it last), the model's weights, optimizer.pt, scheduler.pt and an RNG state (scaler.pt too if fp16
    wrote one)."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    weights = sorted(checkpoint.glob("*.safetensors"))
    states = ["optimizer.pt", "scheduler.pt", *(["scaler.pt"] if (checkpoint / "scaler.pt").exists() else [])]
    rng = sorted(checkpoint.glob("rng_state*.pth"))
    return (
        bool(weights)
        and all(map(_safetensors_whole, weights))
        and bool(rng)
        and all(_zip_whole(checkpoint / name) for name in states)
        and all(map(_zip_whole, rng))
    )


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (a torn newer one is passed over: drop_torn_checkpoints)."""
    return next((c for c in reversed(_checkpoints(run_dir)) if complete(c)), None)


def drop_torn_checkpoints(run_dir: Path) -> None:
    """Delete the checkpoints newer than the newest complete one, torn by a kill or a full disk, with
    one warning line: the resumed run writes them again (Trainer's rotation would count them as
    saved). Only by the process holding the run dir: a live run's newest checkpoint may be half-written."""
    latest = latest_checkpoint(run_dir)
    newest = int(latest.name.split("-")[-1]) if latest else -1
    for torn in [c for c in _checkpoints(run_dir) if int(c.name.split("-")[-1]) > newest]:
        shutil.rmtree(torn, ignore_errors=True)
        log.warning(
            "%s is incomplete (torn by a kill or a full disk): deleted, resuming from %s",
            torn,
            latest.name if latest else "the start",
        )


def checkpoint_epoch(checkpoint: Path) -> float:
    return float(json.loads((checkpoint / "trainer_state.json").read_text()).get("epoch") or 0)


def kept_epochs(previous: RunRecord | None, checkpoint: Path | None) -> list[dict[str, Any]]:
    """The previous launch's recorded epochs up to the checkpoint this launch resumes from: the
    record holds them from the first write on, whatever happens to this launch."""
    if previous is None or checkpoint is None:
        return []
    until = checkpoint_epoch(checkpoint)
    return [e for e in previous.epochs if e.get("epoch", math.inf) <= until + 1e-6]
