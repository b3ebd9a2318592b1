"""Typed schemas for the config groups, and the one place a Hydra config becomes Python objects.

Each dataclass is registered in Hydra's ConfigStore as `schema/<group>/<name>`, and the YAML
files in peft_food/conf/ list it first in their defaults. So `peft.r=abc` or a typo'd key fails when Hydra
composes, and `parse_config` (which builds the dataclasses, running `__post_init__`) rejects
out-of-range values such as `peft.r=0` before any data is read or any model is built.
The peft method schemas (one per method) live in methods/, each data source's schema beside its table (data/sources.py), the model's in model/spec.py. `CONF_DIR` is the peft_food/conf/ tree
these schemas back, for every entry point that composes it (train, bench, reproduce, tests).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from peft_food.data.sources import DataSpec
from peft_food.errors import ConfigError, first_line, require
from peft_food.evaluation.metrics import METRICS
from peft_food.methods import METHODS, MethodSpec
from peft_food.model.spec import ModelSpec

CONF_DIR = str(Path(__file__).resolve().parent / "conf")  # package data: there after any pip install
PRECISIONS = ("fp16", "bf16", "fp32")
# transformers' SchedulerType names that run on what TrainSpec gives them (warmup, steps). Written out
# because this module stays torch-free (transformers.trainer_utils imports torch); tests/test_knobs.py
# checks each is Trainer's. Left out: cosine_with_min_lr, cosine_warmup_with_min_lr and
# warmup_stable_decay need lr_scheduler_kwargs this package does not pass; greedy steps on a metric
# with its own knobs.
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
)
OPTIMIZERS = ("adamw", "sgd")  # train.optimizer; training/trainer.py OPTIM maps each to Trainer's `optim`
# Every top-level key of the composed config: the groups, the run-wide keys, a sweep's name. The root
# is not a schema, so Hydra adds any `+key=value` (`+modle=vit_tiny`) without a word: parse_config refuses it.
TOP_LEVEL = (
    "model",
    "peft",
    "data",
    "train",
    "logger",
    "hub",
    "seed",
    "progress",
    "progress_every_s",
    "sweep_name",
    "output_dir",
)


@dataclass
class TrainSpec:
    """`train.*`. The defaults and their one-line help live in peft_food/conf/train/default.yaml; these
    copies (for a TrainSpec built in code) are held equal to it by tests/test_defaults.py."""

    epochs: float = 5
    lr: float = 5e-3
    batch_size: int = 128
    eval_batch_size: int = 128
    grad_accum: int = 4
    precision: str = "fp16"
    workers: Optional[int] = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    logging_steps: int = 10
    max_steps: int = -1
    resume: Optional[bool] = None
    compile: bool = False
    metrics: list[str] = field(default_factory=lambda: ["accuracy", "top5_accuracy", "macro_f1"])
    monitor: str = "accuracy"
    lr_scheduler: str = "linear"
    label_smoothing: float = 0.0
    gradient_checkpointing: bool = False
    early_stopping_patience: Optional[int] = None
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    eval_steps: Optional[int] = None
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        require(self.epochs > 0, f"train.epochs={self.epochs} is invalid: use a positive number")
        require(self.lr > 0, f"train.lr={self.lr} is invalid: use a positive learning rate")
        for key in ("batch_size", "eval_batch_size", "grad_accum"):
            value = getattr(self, key)
            require(value > 0, f"train.{key}={value} is invalid: use a positive integer")
        require(
            self.precision in PRECISIONS,
            f"train.precision={self.precision!r} is invalid: choose one of {', '.join(PRECISIONS)}",
        )
        require(self.workers is None or self.workers >= 0, f"train.workers={self.workers} is invalid: use 0 or more")
        computed = [name for name in METRICS if name != "loss"]
        unknown = [name for name in self.metrics if name not in computed]
        require(not unknown, f"train.metrics has unknown {unknown}: choose from {', '.join(computed)}")
        require(
            self.monitor == "loss" or self.monitor in self.metrics,
            f"train.monitor={self.monitor!r} is not computed: use loss or one of train.metrics "
            f"({', '.join(self.metrics)}), or add it to train.metrics",
        )
        require(
            self.lr_scheduler in LR_SCHEDULERS,
            f"train.lr_scheduler={self.lr_scheduler!r} is invalid: choose one of {', '.join(LR_SCHEDULERS)}",
        )
        require(
            0 <= self.label_smoothing < 1,
            f"train.label_smoothing={self.label_smoothing} is invalid: use a value in [0, 1)",
        )
        require(
            self.early_stopping_patience is None or self.early_stopping_patience >= 0,
            f"train.early_stopping_patience={self.early_stopping_patience} is invalid: use a positive "
            f"number of evaluations, or 0/null for off",
        )
        for key in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, key)
            require(
                value >= 0, f"train.{key}={value} is invalid: use a positive Beta alpha (1.0 is common), or 0 for off"
            )
        require(
            self.optimizer in OPTIMIZERS,
            f"train.optimizer={self.optimizer!r} is invalid: choose one of {', '.join(OPTIMIZERS)}",
        )
        require(
            self.eval_steps is None or self.eval_steps > 0,
            f"train.eval_steps={self.eval_steps} is invalid: use a positive number of steps, or null for every epoch",
        )

    @property
    def early_stopping(self) -> bool:
        return bool(self.early_stopping_patience)

    @property
    def monitor_key(self) -> str:
        """The monitored metric as Trainer logs it (eval_accuracy, eval_loss, ...)."""
        return f"eval_{self.monitor}"


@dataclass
class LoggerSpec:
    """W&B settings. Each null key falls back to the user's environment (WANDB_PROJECT,
    WANDB_ENTITY, WANDB_RUN_GROUP, WANDB_NAME, WANDB_JOB_TYPE, WANDB_NOTES, WANDB_DIR, WANDB_MODE),
    then to this package's default (project peft-food, job type train)."""

    # false: no W&B at all (logger=none).
    enabled: bool = True
    project: Optional[str] = None
    entity: Optional[str] = None
    group: Optional[str] = None
    # Merged with WANDB_TAGS and the run's method and model.
    tags: list[str] = field(default_factory=list)
    name: Optional[str] = None
    job_type: Optional[str] = None
    notes: Optional[str] = None
    # Where the W&B files go (null: the run dir).
    dir: Optional[str] = None
    # online | offline | disabled; null: online with an API key, otherwise offline.
    mode: Optional[str] = None
    # The setting a run tries, without its seed (null: the sweep's job name less `seed=`): W&B's
    # "group by" logger.setting averages the seeds of one setting.
    setting: Optional[str] = None
    # The saved model as a W&B artifact; null: for methods that save a small file (not full).
    log_model: Optional[bool] = None
    # Eval images logged with their predictions at the end of a run (misclassified ones first).
    examples: int = 16

    def __post_init__(self) -> None:
        require(
            self.mode in (None, "online", "offline", "disabled"),
            f"logger.mode={self.mode!r} is invalid: choose online, offline, disabled or null (auto)",
        )
        require(self.examples >= 0, f"logger.examples={self.examples} is invalid: use 0 or more")


@dataclass
class HubSpec:
    """`hub.*`: share the finished run on the Hugging Face Hub (saved/sharing.py builds what is pushed,
    saved/hub.py pushes it). The defaults and their one-line help live in peft_food/conf/hub/default.yaml.
    No token here: it comes from HF_TOKEN or `hf auth login` and is never written to a config or record."""

    push: bool = False
    repo_id: Optional[str] = None
    merged: bool = False
    private: bool = False
    revision: Optional[str] = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        require(
            not self.push or bool(self.repo_id),
            "hub.push=true needs hub.repo_id: name the repo to push to, e.g. hub.repo_id=<user>/food-vit-lora",
        )
        if self.repo_id is not None:
            check_repo_id(self.repo_id, key="hub.repo_id")


def check_repo_id(repo_id: str, *, key: str) -> None:
    """The Hub's own repo-id rules (huggingface_hub's validate_repo_id), as one line."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # only when a repo is named

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(
            f"{key}={repo_id!r} is not a Hub repo id ({first_line(err)}): use <user or org>/<name>"
        ) from None


@dataclass
class BenchSpec:
    """What `peft-food-bench` times (peft_food/conf/bench.yaml explains each key)."""

    sections: list[str] = field(default_factory=lambda: ["data", "train"])
    images: int = 512
    repeats: int = 3
    batch_size: int = 32
    workers: Optional[list[int]] = None
    methods: list[str] = field(default_factory=lambda: ["lora", "full"])
    inputs: list[str] = field(default_factory=lambda: ["synthetic", "real"])
    warmup_steps: int = 2
    train_steps: int = 8
    startup_images: int = 10_000

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sections) - {"data", "train", "methods", "startup"})
        require(not unknown, f"bench.sections has unknown {unknown}: use data, train, methods and/or startup")
        unknown = sorted(set(self.methods) - set(METHODS))
        require(not unknown, f"bench.methods has unknown {unknown}: choose from {', '.join(METHODS)}")
        unknown = sorted(set(self.inputs) - {"synthetic", "real"})
        require(not unknown, f"bench.inputs has unknown {unknown}: use synthetic and/or real")
        require(bool(self.inputs) or not self.methods, "bench.inputs is empty: name synthetic and/or real")
        for key in ("images", "repeats", "batch_size", "train_steps", "startup_images"):
            value = getattr(self, key)
            require(value > 0, f"bench.{key}={value} is invalid: use a positive integer")


@dataclass
class RunSpec:
    """Everything a training run needs, typed and validated."""

    model: ModelSpec
    peft: MethodSpec
    data: DataSpec
    train: TrainSpec
    logger: LoggerSpec
    seed: int
    output_dir: str
    # Absent from records made before it existed: they reproduce with nothing pushed.
    hub: HubSpec = field(default_factory=HubSpec)
    # null: progress bars on a terminal only; true/false: always/never.
    progress: Optional[bool] = None
    # Where no bar is shown: a progress line every this many seconds of wall time (null or 0: none).
    progress_every_s: Optional[float] = 30
    # The composed config with every ${...} resolved (what records and W&B store), resolved once.
    config: dict[str, Any] = field(default_factory=dict)


SCHEMAS = {
    "model": ModelSpec,
    "peft": METHODS,
    "data": DataSpec,
    "train": TrainSpec,
    "logger": LoggerSpec,
    "hub": HubSpec,
}


def register_schemas() -> None:
    """Store each schema as `schema/<group>/<name>`; peft_food/conf/ YAML files extend it with
    `- /schema/<group>/<name>@_here_` (a separate tree, so schemas never show up as choices)."""
    store = ConfigStore.instance()
    store.store(group="schema/model", name="model", node=ModelSpec)  # schema/peft/*: methods/base.py `register`
    store.store(group="schema/data", name="data", node=DataSpec)
    store.store(group="schema/train", name="train", node=TrainSpec)
    store.store(group="schema/logger", name="logger", node=LoggerSpec)
    store.store(group="schema/hub", name="hub", node=HubSpec)
    store.store(group="schema/bench", name="bench", node=BenchSpec)


register_schemas()


def schema_keys(schema: type) -> str:
    """Every key of a config group's schema, for the error naming a key it lacks (the method's own
    keys, without `method`: peft_food.methods.method_keys)."""
    return ", ".join(f.name for f in fields(schema))


def _build(schema: type, node: dict[str, Any], *, group: str) -> Any:
    # Merging onto the schema rejects unknown keys and wrong types even for configs
    # composed without the schema default (e.g. a user's own YAML file).
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except (ConfigKeyError, ConfigAttributeError) as err:  # e.g. +peft.rank=8, which Hydra suggests for peft.rank
        raise ConfigError(
            f"{group}.{err.key} is not a key of {group} ({schema.__name__}): its keys are {schema_keys(schema)}"
        ) from None
    except Exception as err:  # omegaconf's ValidationError
        raise ConfigError(f"{schema.__name__}: {first_line(err)}") from None


def check_top_level(cfg: DictConfig, *, extra: tuple[str, ...] = ()) -> None:
    """Refuse a top-level key no schema has (a typo such as +modle=vit_tiny would run with it ignored)."""
    known = (*TOP_LEVEL, *extra)
    for key in cfg:
        if key not in known and key != "hydra":
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{key} is not a config key{hint}: the top-level keys are {', '.join(known)}")


def parse_bench(cfg: DictConfig) -> BenchSpec:
    """`bench.*` of peft-food-bench's config, typed and checked."""
    return _build(BenchSpec, OmegaConf.to_container(cfg.bench, resolve=True), group="bench")


def resolve(cfg: DictConfig) -> dict[str, Any]:
    """The composed config with every ${...} resolved, as plain dicts (what W&B and records store)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as err:  # a ??? left unset, or an interpolation to a missing key
        raise ConfigError(f"{first_line(err)}: set it on the command line, e.g. data.root=...") from None


def check_selection(train: TrainSpec, data: DataSpec) -> None:
    """The keys that evaluate val need a val split: data.protocol=retrain has none (it trains on
    train + val for the epochs chosen on val), so they are refused rather than ignored."""
    if data.protocol != "retrain":
        return
    reading = {
        "early_stopping_patience": train.early_stopping_patience if train.early_stopping else None,
        "eval_steps": train.eval_steps,
        "lr_scheduler": train.lr_scheduler if train.lr_scheduler == "reduce_lr_on_plateau" else None,
    }
    for key, value in reading.items():
        require(
            value is None,
            f"train.{key}={value} reads val, and data.protocol=retrain has none: drop it "
            f"(retrain repeats the setting chosen on val for its number of epochs)",
        )


def progress_interval(value: Any) -> float | None:
    """`progress_every_s`: seconds between progress lines, or None (null or 0: no lines)."""
    try:
        seconds = None if value is None else float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    require(
        seconds is None or seconds >= 0,
        f"progress_every_s={value} is invalid: use seconds between progress lines (e.g. 30), or 0 for none",
    )
    return seconds or None


def parse_config(cfg: DictConfig, *, extra_keys: tuple[str, ...] = ()) -> RunSpec:
    """Validate the composed config and turn it into typed specs (the only place DictConfig is read).
    `extra_keys`: top-level sections the caller reads itself (peft-food-bench's `bench`)."""
    check_top_level(cfg, extra=extra_keys)
    if OmegaConf.is_missing(cfg.get("data", {}), "root"):
        raise ConfigError(
            f"data.root is missing: data={cfg.data.source} reads images from disk, pass data.root=/path/to/images"
        )
    tree = resolve(cfg)
    method = tree["peft"].get("method")
    require(
        method in METHODS,
        f"peft method {method!r} is unknown: choose one of peft={'|'.join(METHODS)}",
    )
    data = _build(DataSpec, tree["data"], group="data")
    train = _build(TrainSpec, tree["train"], group="train")
    check_selection(train, data)
    return RunSpec(
        model=_build(ModelSpec, tree["model"], group="model"),
        peft=_build(SCHEMAS["peft"][method], tree["peft"], group="peft"),
        data=data,
        train=train,
        logger=_build(LoggerSpec, tree["logger"], group="logger"),
        hub=_build(HubSpec, tree.get("hub", {}), group="hub"),
        seed=int(tree["seed"]),
        output_dir=str(tree["output_dir"]),
        progress=tree.get("progress"),
        progress_every_s=progress_interval(tree.get("progress_every_s", 30)),
        config=tree,
    )
