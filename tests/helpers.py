"""What the tests share, in one module: composing the real peft_food/conf/ with small overrides
(TINY = tiny ViT on CPU + few synthetic images), the paths of the repository and the food101-mini
photos, the saved model's logits on a run's eval split, and a reader of W&B's offline run files
(W&B's own protobuf definitions, no mock).

Reading a W&B offline run: the run-*.wandb file is a LevelDB-style log: a 7-byte header (":W&B",
magic 0xBEE1, version), then 32 KiB blocks of chunks, each `crc32 (4) | length (2, little-endian) |
type (1) | payload`, where type 1 is a whole record and 2/3/4 are the first/middle/last pieces of a
split one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from wandb.proto import wandb_internal_pb2 as pb

from peft_food.config import CONF_DIR, parse_config
from peft_food.data.splits import load_splits
from peft_food.data.transforms import attach_transforms, collate, normalize
from peft_food.saved.artifacts import load_trained

REPO = Path(__file__).resolve().parent.parent
MINI = REPO.parent / "shared" / "data" / "food101-mini"
# The one skip for every test that reads the real photos (a mark, on the test itself).
needs_mini = pytest.mark.skipif(not MINI.is_dir(), reason=f"{MINI} not present")


# What makes W&B log in or pick a mode: unset, a run is offline as for a user without an account.
WANDB_LOGIN = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "NETRC")


def offline_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment for a subprocess, as the `offline_wandb` fixture leaves it in-process: no
    W&B key, mode or dir, and a HOME (`home`) without ~/.netrc; then `extra`."""
    return {**{k: v for k, v in os.environ.items() if k not in WANDB_LOGIN}, "HOME": str(home), **extra}


def scrub_wandb(monkeypatch: pytest.MonkeyPatch, *, home: Path) -> None:
    """In this process, what offline_env gives a subprocess (the `offline_wandb` fixture; a
    module-scoped fixture calls it with a MonkeyPatch of its own)."""
    for var in WANDB_LOGIN:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))


# Tiny ViT on CPU in fp32 with no workers, and few synthetic images (TINY = both).
TINY_TRAIN = [
    "model=vit_tiny",
    "train.epochs=2",
    "train.batch_size=16",
    "train.eval_batch_size=32",
    "train.grad_accum=1",
    "train.precision=fp32",
    "train.workers=0",
    "train.logging_steps=2",
]
SYNTHETIC = [
    "data=synthetic",
    "data.num_classes=4",
    "data.per_class=16",
    "data.val_per_class=8",
    "data.test_per_class=8",
    "data.image_size=32",
]
TINY = TINY_TRAIN + SYNTHETIC
# No W&B run: what every test trains with unless it reads what W&B logged.
NO_WANDB = "logger=none"
TINY_QUIET = [*TINY, NO_WANDB]


def compose_config(*overrides: str, output_dir: Path | None = None, conf_dir: str = CONF_DIR):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        extra = [f"output_dir={output_dir}"] if output_dir is not None else []
        return compose(config_name="train", overrides=[*overrides, *extra])


def spec_of(*overrides: str, conf_dir: str = CONF_DIR):
    """The typed specs (config.parse_config) of the composed config, for a test that trains nothing
    (its output_dir is a placeholder)."""
    return parse_config(compose_config(*overrides, output_dir=Path("/tmp/unused"), conf_dir=conf_dir))


def compose_hydra(*overrides: str, conf_dir: str = CONF_DIR):
    """The `hydra` node of the composed config (sweeper, launcher, the overrides as a run records them)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True).hydra


def copy_run(run_dir: Path, target: Path) -> Path:
    """A copy of a shared run dir (tests/conftest.py tiny_run) that a test may change."""
    shutil.copytree(run_dir, target)
    return target


@contextlib.contextmanager
def umask(mask: int):
    """The process's umask set to `mask` for the block (files written in it get 0o666 & ~mask)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


# A split's pixels depend only on the data config (TINY's, as eval_logits composes it) and the saved
# processor's settings: prepared once per session for each, so every run with the same processor
# reads the same tensor; the model is still loaded from the run's files each time.
_TINY_PIXELS: dict[tuple[str, str], tuple[torch.Tensor, np.ndarray]] = {}


def eval_logits(run_dir: Path, split: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """Logits of the saved model on one split of the run's data (val: what picked the checkpoint;
    test: what is reported), and the labels (loaded from run_dir; a run trained on TINY's data)."""
    trained = load_trained(run_dir)
    key = (split, trained.processor.to_json_string())
    if key not in _TINY_PIXELS:
        splits = load_splits(parse_config(compose_config(*TINY, output_dir=run_dir)).data, seed=42)
        data = getattr(attach_transforms(splits, trained.processor), split)
        batch = collate([data[i] for i in range(len(data))])
        pixels = normalize(batch["pixel_values"], mean=trained.processor.image_mean, std=trained.processor.image_std)
        _TINY_PIXELS[key] = pixels, batch["labels"].numpy()
    pixels, labels = _TINY_PIXELS[key]
    with torch.inference_mode():
        return trained.model(pixel_values=pixels).logits.numpy(), labels


def check_fp16_autocast_training(model: Any, *, steps: int, pixels: torch.Tensor, labels: torch.Tensor) -> None:
    """The GPU recipe's fp16 (autocast over fp32 weights, loss scaling) on the CPU's fp16 autocast:
    the logits come out in half precision, the loss falls, every trainable tensor moves (scaling
    must keep tiny gradients from underflowing) and the frozen ones and the fp32 masters stay."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(pixel_values=pixels, labels=labels)
        assert out.logits.dtype == torch.float16  # autocast really ran the model in half precision
        scaler.scale(out.loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(out.loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, name  # master weights stay fp32
        assert torch.equal(p, before[name]) != p.requires_grad, name  # trained moved, frozen did not


BLOCK = 32 * 1024
HEADER = 7


def raw_records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # too little room left: the writer padded the block
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0:
            continue
        assert crc == zlib.crc32(bytes([kind]) + payload) & 0xFFFFFFFF, "corrupt chunk"
        if kind == 1:
            records.append(payload)
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            records.append(pending + payload)
    return records


@dataclass
class RunLog:
    run: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # name -> MetricRecord
    artifacts: list["Artifact"] = field(default_factory=list)
    exit_code: int | None = None

    def artifact(self, type_: str) -> "Artifact":
        [found] = [a for a in self.artifacts if a.type == type_]
        return found


@dataclass
class Artifact:
    """A logged artifact as staged for `wandb sync`: its files are on local disk until uploaded."""

    type: str
    name: str
    aliases: list[str]
    metadata: dict[str, Any]
    files: dict[str, Path]  # path inside the artifact -> staged local copy

    def json(self, path: str) -> Any:
        return json.loads(self.files[path].read_text())


def _key(item) -> str:
    return item.key or ".".join(item.nested_key)


def read_run(path: Path) -> RunLog:
    out = RunLog()
    for raw in raw_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.run = record.run
            for item in record.run.config.update:
                out.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                out.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            out.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                out.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "artifact":
            a = record.artifact
            out.artifacts.append(
                Artifact(
                    type=a.type,
                    name=a.name,
                    aliases=list(a.aliases),
                    metadata=json.loads(a.metadata or "{}"),
                    files={c.path: Path(c.local_path) for c in a.manifest.contents},
                )
            )
        elif kind == "metric":
            out.metrics[record.metric.name or record.metric.glob_name] = record.metric
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
    return out


def run_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/*run-*/run-*.wandb"))


# (speed-b) No examples.png in a run dir: what a test passes when it asserts nothing about the test
# examples figure (logger.examples, 16 by default, drawn at every run's end: ~0.5 s of a tiny run's
# ~2 s of CPU time on a 2-core AMD EPYC CPU).
NO_EXAMPLES = "logger.examples=0"
