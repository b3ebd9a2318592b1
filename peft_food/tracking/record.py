"""The run record: what `<run dir>/metrics.json` holds, as one type with one reader and one writer.

Schema 3 (`"schema": 3`; schema 2 had no protocol or test, schema 1, without the key, was a
flat layout; both are read into the same type, as the seed protocol, so committed records of
every kind reproduce):

    status        starting | running | completed | failed | interrupted (| damaged: an unreadable file;
                  dead: running, but no live process holds the run dir, `status_now`)
    method        the method's label (lora, dora, full, bitfit, ...)
    protocol      val_test: epochs are evaluated on val, which picks the checkpoint; test is reported.
                  seed: the seed recipe's, one held-out split both picks and is reported
    monitor       the metric that picks the best checkpoint (eval_accuracy, eval_macro_f1, eval_loss, ...)
    epochs        one entry per evaluation of the selection split (val; seed protocol: the reported
                  split), each epoch or every train.eval_steps steps (fractional epochs): epoch, eval_loss and eval_<metric> for each train.metrics (Trainer's names)
    best, final   written for reading: the epoch the saved model comes from (best by monitor), the last
    test          protocol val_test: test_loss and test_<metric> of that best checkpoint ("best") and of
                  the last epoch ("final"), each measured once, at the end
    labels        class names in label order
    counts        trainable_params, total_params, trainable_percent, num_labels, num_train_samples,
                  num_eval_samples (val), num_test_samples
    efficiency    train_img_per_s (images trained per second of training: evaluation, checkpoints and
                  start-up excluded; the epoch log's img/s is the same per epoch), peak_mem_mb,
                  model_size_mb, runtime_s, epoch_wall_s and epoch_images (per epoch), startup_s
    provenance    git (sha, dirty), versions, hardware, command, precision, world_size,
                  effective_batch_size
    config        the resolved Hydra config that ran
    stopped_early train.early_stopping_patience ended the run: the epoch and step it stopped at, the
                  patience, the best monitor value before the stop and its step; null: it ran its course
    error, resumed_from, wandb_run_id

Writes are atomic (a temp file in the same folder, fsync, rename), so a run killed mid-write leaves
the previous record, never half of one; a file damaged some other way is one line from
`RunRecord.load`, not a traceback.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from peft_food.data.splits import selection_split
from peft_food.errors import UserError, first_line
from peft_food.evaluation.metrics import METRICS
from peft_food.files import holder_of, write_atomic

SCHEMA = 3
RECORD_FILE = "metrics.json"
# The run dir's lock file: an flock its live process holds (training/claim.py, rundir.py); the kernel
# drops it when that process dies, however it dies.
LOCK = ".lock"


class DamagedRecord(UserError):
    """A metrics.json that is not a readable record."""


@dataclass
class Counts:
    trainable_params: int
    total_params: int
    trainable_percent: float
    num_labels: int
    num_train_samples: int
    num_eval_samples: int  # the split evaluated every epoch: val (seed protocol: the reported split)
    num_test_samples: int | None = None  # None: the seed protocol, or a record made before the protocol


@dataclass
class Efficiency:
    train_img_per_s: float | None = None
    peak_mem_mb: float | None = None
    model_size_mb: float | None = None
    runtime_s: float | None = None
    epoch_wall_s: list[float] = field(default_factory=list)
    # Images trained in each epoch (a capped run's one epoch: its steps' images, not the dataset's).
    epoch_images: list[int] = field(default_factory=list)
    # Seconds from the job's start to its first training step: data (screening, or opening the data
    # stores), model, and for a process's first job its imports too (later jobs of a multirun share
    # the process). What a sweep job waits before it trains.
    startup_s: float | None = None

    def img_per_s(self, epoch: int | None = None) -> float | None:
        """Images trained per second of training, over one epoch (an index) or the whole run:
        the one definition of train_img_per_s and of the epoch log's img/s."""
        images = self.epoch_images if epoch is None else self.epoch_images[epoch:][:1]
        walls = self.epoch_wall_s if epoch is None else self.epoch_wall_s[epoch:][:1]
        return round(sum(images) / sum(walls), 2) if images and sum(walls) > 0 else None


@dataclass
class Provenance:
    git: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    precision: str | None = None
    world_size: int = 1
    effective_batch_size: int | None = None


@dataclass
class RunRecord:
    status: str = "starting"
    method: str = ""
    protocol: str = "val_test"
    monitor: str = "eval_accuracy"
    epochs: list[dict[str, float]] = field(default_factory=list)
    test: dict[str, dict[str, float]] | None = None
    labels: list[str] = field(default_factory=list)
    counts: Counts | None = None
    efficiency: Efficiency = field(default_factory=Efficiency)
    provenance: Provenance = field(default_factory=Provenance)
    config: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    resumed_from: list[str] = field(default_factory=list)
    wandb_run_id: str | None = None
    stopped_early: dict[str, Any] | None = None

    # --- derived ----------------------------------------------------------------------------

    @property
    def best_epoch(self) -> dict[str, float] | None:
        """The evaluation the saved model comes from: best by the monitor, the first of ties (as
        Trainer's load_best_model_at_end picks it)."""
        scored = [e for e in self.epochs if self.monitor in e]
        if not scored:
            return None
        sign = 1 if METRICS[self.monitor.removeprefix("eval_")].higher_is_better else -1
        return max(scored, key=lambda e: sign * e[self.monitor])

    @property
    def best(self) -> float | None:
        """The monitored metric of the best epoch (what a sweeper optimises)."""
        epoch = self.best_epoch
        return epoch[self.monitor] if epoch else None

    @property
    def final(self) -> float | None:
        return self.epochs[-1].get(self.monitor) if self.epochs else None

    @property
    def selected_on(self) -> str:
        """The split the epochs were evaluated on, which picked the checkpoint."""
        return selection_split(self.protocol)

    def reported(self, metric: str, *, checkpoint: str = "best") -> float | None:
        """The reported value of `metric` (accuracy, loss, ...) for the best or the final checkpoint:
        test under val_test, the selection split's own value under the seed protocol."""
        if self.protocol == "seed":
            epoch = self.best_epoch if checkpoint == "best" else (self.epochs[-1] if self.epochs else None)
            return (epoch or {}).get(f"eval_{metric}")
        if self.protocol == "retrain":  # nothing was selected: the last epoch is the model
            checkpoint = "final"
        return ((self.test or {}).get(checkpoint) or {}).get(f"test_{metric}")

    def describe_protocol(self, metric: str = "accuracy") -> str:
        """The protocol in words, for a table's caption, a card or the end of a run."""
        watched = self.monitor.removeprefix("eval_")
        counts = self.counts
        if self.protocol == "seed":
            sizes = f" ({counts.num_train_samples} train / {counts.num_eval_samples} held out)" if counts else ""
            return (
                f"{metric} on the held-out split of the epoch with the best {watched} on that same split: "
                f"selected on the reported split (seed protocol){sizes}"
            )
        if self.protocol == "retrain":
            sizes = (
                f" ({counts.num_train_samples} train + val / {counts.num_test_samples} test images)" if counts else ""
            )
            return f"test {metric} of the last epoch, trained on train + val: nothing selected{sizes}"
        sizes = (
            (
                f" ({counts.num_train_samples} train / {counts.num_eval_samples} val / {counts.num_test_samples} "
                f"test images)"
            )
            if counts
            else ""
        )
        return f"test {metric} of the checkpoint with the best val {watched}{sizes}"

    def summary(self) -> dict[str, Any]:
        """Flat scalars for W&B's run summary and tables: best_/final_<split>_<metric> of the epochs
        (split: val, or eval under the seed protocol), test/<metric> of the selected checkpoint and
        test_final/<metric> of the last one, counts, efficiency."""
        out: dict[str, Any] = {
            "status": self.status,
            "method": self.method,
            "monitor": self.monitor,
            "protocol": self.protocol,
            "precision": self.provenance.precision,
        }
        out.update(asdict(self.counts) if self.counts else {})
        out.update(asdict(self.efficiency))
        split = self.selected_on
        for prefix, epoch in (("best", self.best_epoch), ("final", self.epochs[-1] if self.epochs else None)):
            out.update(
                {f"{prefix}_{split}_{k.removeprefix('eval_')}": v for k, v in (epoch or {}).items() if k != "epoch"}
            )
        tested = self.test or {}
        for prefix, values in (("test", tested.get("best", tested.get("final"))), ("test_final", tested.get("final"))):
            out.update({f"{prefix}/{k.removeprefix('test_')}": v for k, v in (values or {}).items()})
        return out

    # --- files ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.update(best=self.best_epoch, final=self.epochs[-1] if self.epochs else None)
        return {"schema": SCHEMA, **body}

    def write(self, path: Path) -> None:
        """Atomically: readers see the previous record or this one, never part of one."""
        write_atomic(path, (json.dumps(self.to_json(), indent=2, default=str) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> "RunRecord":
        try:
            body = json.loads(path.read_text())
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
            return cls.from_json(body)
        except (ValueError, TypeError, KeyError) as err:  # JSONDecodeError is a ValueError
            raise DamagedRecord(
                f"{path} is damaged ({type(err).__name__}: {first_line(err)}): delete it, or restore it from a backup"
            ) from None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "RunRecord":
        schema = body.get("schema", 1)
        body = dict(body) if schema >= 2 else _from_schema_1(body)
        if schema < 3:  # before the protocol: the one eval split both picked and was reported
            body["protocol"] = "seed"
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in body.items() if k in known})
        record.counts = Counts(**record.counts) if isinstance(record.counts, dict) else record.counts
        record.efficiency = (
            Efficiency(**record.efficiency) if isinstance(record.efficiency, dict) else record.efficiency
        )
        record.provenance = (
            Provenance(**record.provenance) if isinstance(record.provenance, dict) else record.provenance
        )
        wrong = _wrong_type(record)
        if wrong:
            raise TypeError(wrong)
        return record


def _wrong_type(record: Any, *, prefix: str = "") -> str | None:
    """The first value not of its field's declared type (a hand-edited or crafted file: `epochs`
    a string, an accuracy a list), said in words; None when every field fits. Every reader then
    relies on the types (compare, reproduce, resume, the W&B summary)."""
    hints = get_type_hints(type(record))
    for f in fields(record):
        value = getattr(record, f.name)
        wrong = (
            _wrong_type(value, prefix=f"{prefix}{f.name}.")
            if is_dataclass(value)
            else _mismatch(value, hints[f.name], where=f"{prefix}{f.name}")
        )
        if wrong:
            return wrong
    return None


def _mismatch(value: Any, hint: Any, *, where: str) -> str | None:
    """Where a JSON value first departs from a type annotation (an int fits float, a bool fits
    neither), or None."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _mismatch(value, options[0], where=where)
    elif origin is list and isinstance(value, list):
        return next((m for i, item in enumerate(value) if (m := _mismatch(item, args[0], where=f"{where}[{i}]"))), None)
    elif origin is dict and isinstance(value, dict):
        return next(
            (
                m
                for k, v in value.items()
                if (m := _mismatch(k, args[0], where=where) or _mismatch(v, args[1], where=f"{where}.{k}"))
            ),
            None,
        )
    elif hint is Any or (
        hint in (int, float)
        and isinstance(value, (int, float) if hint is float else int)
        and not isinstance(value, bool)
    ):
        return None
    elif hint not in (int, float) and origin is None and isinstance(value, hint):
        return None
    shown = json.dumps(value, default=str)
    return f"{where} is {shown if len(shown) <= 40 else shown[:37] + '...'}, not {_name(hint)}"


def _name(hint: Any) -> str:
    if get_origin(hint) in (Union, UnionType):
        return " or ".join(_name(a) for a in get_args(hint))
    return hint.__name__ if get_origin(hint) is None else str(hint).replace("typing.", "")


def _required(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]


def _from_schema_1(flat: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 kept every key at the top level and monitored eval accuracy."""

    def take(cls: type) -> dict[str, Any]:
        return {f.name: flat[f.name] for f in fields(cls) if f.name in flat}

    counts = take(Counts)
    return {
        **{
            k: flat[k]
            for k in ("status", "method", "epochs", "labels", "config", "error", "resumed_from", "wandb_run_id")
            if k in flat
        },
        "monitor": "eval_accuracy",
        "counts": counts if len(counts) >= len(_required(Counts)) else None,
        "efficiency": take(Efficiency),
        "provenance": take(Provenance),
    }


def portable(config: dict[str, Any], *, root: Path | None = None) -> dict[str, Any]:
    """A run's config as it can be shared: without the run's own output dir, and data.root relative
    to `root` (a committed record, relative to the repository root) or, with no root, a placeholder
    the reader fills in (a model card)."""
    config = {k: v for k, v in config.items() if k != "output_dir"}
    data_root = config.get("data", {}).get("root")
    if data_root:
        shared = os.path.relpath(Path(data_root).resolve(), root.resolve()) if root else "<your data.root>"
        config["data"] = {**config["data"], "root": shared}
    return config


# A recorded config's data keys renamed when the protocol came (records made before it name the reported split eval_).
RENAMED = {"eval_split": "test_split", "eval_per_class": "test_per_class"}


def recorded_data(data: dict) -> dict:
    """A data config as a record holds it, for this release: one recorded before the protocol
    existed (eval_split, eval_per_class: one split both picked the best epoch and was reported)
    is the same data under protocol seed."""
    if "protocol" in data:
        return data
    return {**{RENAMED.get(key, key): value for key, value in data.items()}, "protocol": "seed"}


def read_or_damaged(path: Path) -> RunRecord:
    """The record at `path`, or one saying it is damaged (for readers that list many runs)."""
    try:
        return RunRecord.load(path)
    except DamagedRecord as err:
        return RunRecord(status="damaged", error=str(err))


def status_now(run_dir: Path, record: RunRecord) -> str:
    """The record's status as it stands now: a run still `running` whose lock no live process holds
    was killed (kill -9, out of memory, a lost machine) and is `dead`; it resumes as an interrupted one
    does. (A run writes `running` only while it holds the lock.) Every reader of a status asks here:
    compare, resume, W&B on resuming."""
    if record.status == "running" and holder_of(run_dir / LOCK) is None:
        return "dead"
    return record.status
