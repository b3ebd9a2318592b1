"""Read what a W&B offline run wrote, record by record, with wandb's own protobuf definitions.

The run-*.wandb file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version),
then 32 KiB blocks of chunks, each `crc32 (4) | length (2, little-endian) | type (1) | payload`,
where type 1 is a whole record and 2/3/4 are the first/middle/last pieces of a split one.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

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
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        payload = data[pos + HEADER:pos + HEADER + length]
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
            out.artifacts.append(Artifact(type=a.type, name=a.name, aliases=list(a.aliases),
                                          metadata=json.loads(a.metadata or "{}"),
                                          files={c.path: Path(c.local_path) for c in a.manifest.contents}))
        elif kind == "metric":
            out.metrics[record.metric.name or record.metric.glob_name] = record.metric
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
    return out


def run_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/*run-*/run-*.wandb"))
