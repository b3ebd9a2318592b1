"""The method axis: one typed spec per fine-tuning method, each turned into peft's own config.

    peft-food-train peft=lora peft.r=8                  # LoRA on query/value + trained head
    peft-food-train peft=lora peft.use_dora=true        # DoRA (also: peft=dora)
    peft-food-train peft=ia3                            # IA3 on key/value/mlp_out
    peft-food-train peft=linear_probe                   # only the classifier head trains
    peft-food-train -m peft=lora,dora,loha peft.r=4,16  # methods x ranks in one sweep

Each spec holds only the keys its method understands (Hydra rejects the rest, e.g. `peft=ia3
peft.r=4`) and checks their values in `__post_init__`. `target_modules` names module *roles*
(query, key, value, attn_out, mlp_in, mlp_out) that each backbone's `model.modules` maps to its own
Linear names, so one method config works on ViT, DeiT, DINOv2 and Swin alike.
Every adapter method keeps the classifier head trainable and saves it (modules_to_save).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from peft_food.errors import require

# Maps role names (or raw module names) to this backbone's Linear module names.
Resolve = Callable[[list[str]], list[str]]


def _check_method(spec: Any, name: str) -> None:
    require(spec.method == name, f"peft.method={spec.method!r} does not match peft={name}")


def _check_positive(spec: Any, key: str) -> None:
    value = getattr(spec, key)
    require(value > 0, f"peft.{key}={value} is invalid: {key} of peft={spec.method} must be positive "
                        f"(e.g. peft.{key}=16)")


def _check_fraction(value: float, key: str) -> None:
    require(0.0 <= value < 1.0, f"peft.{key}={value} is invalid: use a value in [0, 1)")


def _check_targets(targets: list[str]) -> None:
    require(len(targets) > 0, "peft.target_modules is empty: name at least one module role (e.g. [query, value])")


@dataclass
class FullSpec:
    """Every parameter trains: the baseline the others are measured against."""

    method: str = "full"
    recommended_lr: float = 5e-5

    def __post_init__(self) -> None:
        _check_method(self, "full")


@dataclass
class LinearProbeSpec:
    """Only the classifier head trains; the backbone is frozen (no adapter)."""

    method: str = "linear_probe"
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        _check_method(self, "linear_probe")


@dataclass
class LoraSpec:
    method: str = "lora"
    r: int = 16
    alpha: int = 16
    dropout: float = 0.1
    bias: str = "none"
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    # DoRA: split each update into magnitude and direction (+ one magnitude vector per target).
    use_dora: bool = False
    # rsLoRA: scale by alpha / sqrt(r) instead of alpha / r (stable at high rank).
    use_rslora: bool = False
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        _check_method(self, "lora")
        _check_positive(self, "r")
        _check_positive(self, "alpha")
        _check_fraction(self.dropout, "dropout")
        require(self.bias in ("none", "all", "lora_only"), f"peft.bias={self.bias!r} is invalid: use none, all or lora_only")
        _check_targets(self.target_modules)

    def adapter(self, *, resolve: Resolve, head: str) -> Any:
        from peft import LoraConfig

        # modules_to_save: without it the new head stays frozen at its random init and is not
        # saved (peft #310, #577, #876, #1070).
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, bias=self.bias,
                          target_modules=resolve(self.target_modules), use_dora=self.use_dora,
                          use_rslora=self.use_rslora, modules_to_save=[head])


@dataclass
class LohaSpec:
    """LoHa: the update is the Hadamard product of two rank-r products (FedPara)."""

    method: str = "loha"
    r: int = 8
    alpha: int = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        _check_method(self, "loha")
        _check_positive(self, "r")
        _check_positive(self, "alpha")
        _check_fraction(self.rank_dropout, "rank_dropout")
        _check_fraction(self.module_dropout, "module_dropout")
        _check_targets(self.target_modules)

    def adapter(self, *, resolve: Resolve, head: str) -> Any:
        from peft import LoHaConfig

        return LoHaConfig(r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout,
                          module_dropout=self.module_dropout, target_modules=resolve(self.target_modules),
                          modules_to_save=[head])


@dataclass
class LokrSpec:
    """LoKr: the update is a Kronecker product w1 (x) w2, w2 low-rank when r is small."""

    method: str = "lokr"
    r: int = 8
    alpha: int = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    # Also factor w1 into two rank-r matrices when r is small enough.
    decompose_both: bool = False
    # -1: split each dimension into the two factors nearest its square root (768 = 24 x 32).
    decompose_factor: int = -1
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        _check_method(self, "lokr")
        _check_positive(self, "r")
        _check_positive(self, "alpha")
        _check_fraction(self.rank_dropout, "rank_dropout")
        _check_fraction(self.module_dropout, "module_dropout")
        require(self.decompose_factor == -1 or self.decompose_factor > 0,
                 f"peft.decompose_factor={self.decompose_factor} is invalid: use -1 (auto) or a positive factor")
        _check_targets(self.target_modules)

    def adapter(self, *, resolve: Resolve, head: str) -> Any:
        from peft import LoKrConfig

        return LoKrConfig(r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout,
                          module_dropout=self.module_dropout, decompose_both=self.decompose_both,
                          decompose_factor=self.decompose_factor, target_modules=resolve(self.target_modules),
                          modules_to_save=[head])


@dataclass
class IA3Spec:
    """IA3: learned vectors rescale key and value outputs and the MLP's second layer input."""

    method: str = "ia3"
    target_modules: list[str] = field(default_factory=lambda: ["key", "value", "mlp_out"])
    # Targets scaled on their input rather than their output (must be among target_modules).
    feedforward_modules: list[str] = field(default_factory=lambda: ["mlp_out"])
    # IA3's few parameters start at 1 and need a larger step than LoRA's (the paper uses 3e-3).
    recommended_lr: float = 1e-2

    def __post_init__(self) -> None:
        _check_method(self, "ia3")
        _check_targets(self.target_modules)
        missing = sorted(set(self.feedforward_modules) - set(self.target_modules))
        require(not missing, f"peft.feedforward_modules has {missing} not in peft.target_modules: "
                              f"add them to target_modules or drop them")

    def adapter(self, *, resolve: Resolve, head: str) -> Any:
        from peft import IA3Config

        return IA3Config(target_modules=resolve(self.target_modules),
                         feedforward_modules=resolve(self.feedforward_modules), modules_to_save=[head])


@dataclass
class VeraSpec:
    """VeRA: frozen random A and B shared by all layers; only two scaling vectors per layer train."""

    method: str = "vera"
    r: int = 256
    dropout: float = 0.0
    # Initial value of the per-rank scaling vector d.
    d_initial: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 1e-2

    def __post_init__(self) -> None:
        _check_method(self, "vera")
        _check_positive(self, "r")
        _check_fraction(self.dropout, "dropout")
        _check_targets(self.target_modules)

    def adapter(self, *, resolve: Resolve, head: str) -> Any:
        from peft import VeraConfig

        # save_projection: the shared random A/B go into the adapter file, so a reload does not
        # depend on regenerating them from the PRNG key on another torch version.
        return VeraConfig(r=self.r, vera_dropout=self.dropout, d_initial=self.d_initial,
                          target_modules=resolve(self.target_modules), save_projection=True,
                          modules_to_save=[head])


@dataclass
class OftSpec:
    """OFT: each target's weight is rotated by a learned block-diagonal orthogonal matrix."""

    method: str = "oft"
    # Side of each orthogonal block; must divide every target's input width (768 = 24 x 32).
    block_size: int = 32
    module_dropout: float = 0.0
    # Constrained OFT: keep each rotation within eps of the identity.
    coft: bool = False
    eps: float = 6e-5
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        _check_method(self, "oft")
        _check_positive(self, "block_size")
        _check_fraction(self.module_dropout, "module_dropout")
        _check_targets(self.target_modules)

    def adapter(self, *, resolve: Resolve, head: str) -> Any:
        from peft import OFTConfig

        # r=0: the number of blocks follows from the block size and each layer's width.
        return OFTConfig(r=0, oft_block_size=self.block_size, module_dropout=self.module_dropout,
                         coft=self.coft, eps=self.eps, target_modules=resolve(self.target_modules),
                         modules_to_save=[head])


PeftSpec = FullSpec | LinearProbeSpec | LoraSpec | LohaSpec | LokrSpec | IA3Spec | VeraSpec | OftSpec

# peft.method -> schema (conf/peft/<file>.yaml extends `schema/peft/<method>`).
METHODS: dict[str, type] = {
    "full": FullSpec, "linear_probe": LinearProbeSpec, "lora": LoraSpec, "loha": LohaSpec,
    "lokr": LokrSpec, "ia3": IA3Spec, "vera": VeraSpec, "oft": OftSpec,
}


def is_adapter(spec: PeftSpec) -> bool:
    """True for methods that add peft adapter weights (saved as adapter_model.safetensors)."""
    return hasattr(spec, "adapter")


def method_label(spec: PeftSpec) -> str:
    """The name tables, tags and records use: `dora` / `rslora` / `rsdora` for LoRA's flags."""
    if isinstance(spec, LoraSpec):
        name = "dora" if spec.use_dora else "lora"
        return f"rs{name}" if spec.use_rslora else name
    return spec.method


def keys_of(method: str) -> list[str]:
    """The keys `peft=<method>` understands (for error messages)."""
    return [f.name for f in fields(METHODS[method]) if f.name not in ("method", "recommended_lr")]
