"""The method axis: one typed spec per fine-tuning method, and each spec owns its method's behaviour.

    peft-food-train peft=lora peft.r=8                  # LoRA on query/value + trained head
    peft-food-train peft=lora peft.use_dora=true        # DoRA (also: peft=dora)
    peft-food-train peft=ia3                            # IA3 on key/value/mlp_out
    peft-food-train peft=bitfit                         # every bias term + the head
    peft-food-train peft=linear_probe                   # only the classifier head trains
    peft-food-train -m peft=lora,dora,loha peft.r=4,16  # methods x ranks in one sweep

Each spec holds only the keys its method understands (Hydra rejects the rest, e.g. `peft=ia3
peft.r=4`) and checks their values in `__post_init__`. It also says how the method prepares a
base (`prepare`), what it saves (`save`), how it is read back (`load`) and how it folds into a
plain model (`merge`); the rest of the package asks the spec and never branches on a method name.
Three families share that behaviour:

- `FullSpec`: every parameter trains; the whole model is saved.
- `PartialSpec` (linear_probe, bitfit): a chosen subset of the base's own parameters trains;
  those tensors alone are saved (`trained.safetensors`) and put back onto the base on reload.
- `AdapterSpec` (lora/dora, loha, lokr, ia3, vera, oft): peft's own adapter, with the classifier
  head trainable and saved beside it (modules_to_save).

`target_modules` names module *roles* (query, key, value, attn_out, mlp_in, mlp_out) that each
backbone's `model.modules` maps to its own Linear names, so one method config works on ViT,
DeiT, DINOv2 and Swin alike. A new method is one class here and one file in peft_food/conf/peft/.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

from peft_food.errors import UserError, require

# Maps role names (or raw module names) to this backbone's Linear module names.
Resolve = Callable[[list[str]], list[str]]
# Loads the frozen base a method's saved tensors go onto, given the saved head's tensors (so the
# head's size is checked against the recorded labels before anything is loaded).
BaseLoader = Callable[[dict[str, Any]], Any]
# What a partial method's tensors are saved as (parameter name -> tensor).
TRAINED_WEIGHTS = "trained.safetensors"
# A linear probe's head before TRAINED_WEIGHTS (keys relative to the head module).
OLD_HEAD_WEIGHTS = "head.safetensors"


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


class Method:
    """What every spec answers. Specs are dataclasses (Hydra schemas); this holds behaviour only."""

    method: str
    recommended_lr: float
    # What the method saves is the whole model (hundreds of MB on ViT-B), not a small file.
    saves_whole_model: ClassVar[bool] = False
    # The library that reads what it saves (the model card's library_name).
    library: ClassVar[str] = "peft-food"

    @property
    def saves_base(self) -> bool:
        """A random-init base (model.pretrained=false) exists nowhere else: keep a copy beside
        what the method saves, unless that is the whole model anyway."""
        return not self.saves_whole_model

    @property
    def label(self) -> str:
        """The name tables, tags and records use."""
        return self.method

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        """The model to train: `base` with this method's trainable parameters."""
        raise NotImplementedError

    def save(self, model: Any, *, model_dir: Path, head: str) -> None:
        """Write only what trained into `model_dir`."""
        raise NotImplementedError

    def load(self, model_dir: Path, *, base: BaseLoader, labels: list[str], head: str) -> Any:
        """Read back what `save` wrote; `base(saved_head)` loads the frozen base it goes onto."""
        raise NotImplementedError

    def merge(self, model: Any) -> Any:
        """A plain transformers model with the trained weights in place (what export saves)."""
        return model


# --- full fine-tuning ----------------------------------------------------------------------


@dataclass
class FullSpec(Method):
    """Every parameter trains: the baseline the others are measured against."""

    method: str = "full"
    recommended_lr: float = 5e-5
    saves_whole_model: ClassVar[bool] = True
    library: ClassVar[str] = "transformers"

    def __post_init__(self) -> None:
        _check_method(self, "full")

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        for param in base.parameters():
            param.requires_grad_(True)
        return base

    def save(self, model: Any, *, model_dir: Path, head: str) -> None:
        model.save_pretrained(str(model_dir))

    def load(self, model_dir: Path, *, base: BaseLoader, labels: list[str], head: str) -> Any:
        from peft_food.weights import load_model

        return load_model(model_dir, labels=labels)


# --- a subset of the base's own parameters -------------------------------------------------


class PartialSpec(Method):
    """A frozen base in which some of its own parameters (always the head) train."""

    def trains(self, name: str, *, head: str) -> bool:
        """Whether parameter `name` of the base trains (the head's always do)."""
        raise NotImplementedError

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        for name, param in base.named_parameters():
            param.requires_grad_(name.startswith(f"{head}.") or self.trains(name, head=head))
        return base

    def save(self, model: Any, *, model_dir: Path, head: str) -> None:
        from peft_food.weights import save_tensors

        save_tensors({n: p for n, p in model.named_parameters() if p.requires_grad}, model_dir / TRAINED_WEIGHTS)

    def load(self, model_dir: Path, *, base: BaseLoader, labels: list[str], head: str) -> Any:
        from peft_food.weights import check_loaded, read_tensors

        if not (model_dir / TRAINED_WEIGHTS).is_file() and (model_dir / OLD_HEAD_WEIGHTS).is_file():
            saved = {f"{head}.{k}": v for k, v in read_tensors(model_dir / OLD_HEAD_WEIGHTS).items()}
        else:
            saved = read_tensors(model_dir / TRAINED_WEIGHTS)
        model = base({k: v for k, v in saved.items() if k.startswith(f"{head}.")})
        try:
            missing = set(saved) - set(model.state_dict())
            require_fit(not missing, f"{sorted(missing)[:3]} are not parameters of the base")
            model.load_state_dict(saved, strict=False)
        except RuntimeError as err:
            require_fit(False, str(err).splitlines()[-1].strip())
        check_loaded(model, saved)
        return model


def require_fit(ok: bool, detail: str) -> None:
    """The saved weights must fit the base they are loaded onto."""
    if not ok:
        raise UserError(f"what this run saved does not fit the base model (another architecture or label "
                        f"count): {detail}")


@dataclass
class LinearProbeSpec(PartialSpec):
    """Only the classifier head trains; the backbone is frozen (no adapter)."""

    method: str = "linear_probe"
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        _check_method(self, "linear_probe")

    def trains(self, name: str, *, head: str) -> bool:
        return False


@dataclass
class BitFitSpec(PartialSpec):
    """BitFit (Ben Zaken et al., 2022): every bias term of the backbone (attention, MLP, LayerNorm,
    patch embedding) trains, with the head; the weights stay frozen."""

    method: str = "bitfit"
    # Biases start pretrained and are few (~0.1% of ViT-B): a step near LoRA's, not full FT's.
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        _check_method(self, "bitfit")

    def trains(self, name: str, *, head: str) -> bool:
        return name.endswith(".bias")


# --- peft adapters ---------------------------------------------------------------------------


class AdapterSpec(Method):
    """peft's own adapter on the targeted roles; the head is trained and saved beside it."""

    target_modules: list[str]
    library: ClassVar[str] = "peft"

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        """peft's config for this method; `common` holds target_modules and modules_to_save."""
        raise NotImplementedError

    def adapter(self, *, resolve: Resolve, head: str) -> Any:
        # modules_to_save: without it the new head stays frozen at its random init and is not
        # saved (peft #310, #577, #876, #1070).
        return self.peft_config(resolve, target_modules=resolve(self.target_modules), modules_to_save=[head])

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        from peft import get_peft_model

        return get_peft_model(base, self.adapter(resolve=resolve, head=head))

    def save(self, model: Any, *, model_dir: Path, head: str) -> None:
        model.save_pretrained(str(model_dir))

    def load(self, model_dir: Path, *, base: BaseLoader, labels: list[str], head: str) -> Any:
        import torch
        from peft import PeftModel

        from peft_food.weights import (
            ADAPTER_WEIGHTS,
            active_head,
            head_tensors,
            renamed_adapter,
        )

        saved_head = head_tensors(model_dir / ADAPTER_WEIGHTS, head=head)
        frozen = base(saved_head)
        try:
            with tempfile.TemporaryDirectory() as scratch:
                model = PeftModel.from_pretrained(frozen, str(renamed_adapter(model_dir, frozen, Path(scratch))))
        except (RuntimeError, ValueError, KeyError) as err:
            require_fit(False, next((line.strip() for line in str(err).splitlines() if "size mismatch" in line),
                                    str(err).splitlines()[0]))
        predicting = active_head(model, head=head)
        for key, tensor in saved_head.items():
            if not torch.equal(getattr(predicting, key.rsplit(".", 1)[-1]).detach().cpu(), tensor):
                raise UserError(f"the classifier head did not load from the adapter ({key}); refusing to predict "
                                f"with a randomly initialised head")
        return model

    def merge(self, model: Any) -> Any:
        return model.merge_and_unload()  # every adapter folds its update into the base weights


@dataclass
class LoraSpec(AdapterSpec):
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

    @property
    def label(self) -> str:
        """`dora` / `rslora` / `rsdora` for LoRA's flags, so tables and tags tell them apart."""
        name = "dora" if self.use_dora else "lora"
        return f"rs{name}" if self.use_rslora else name

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, bias=self.bias,
                          use_dora=self.use_dora, use_rslora=self.use_rslora, **common)


@dataclass
class LohaSpec(AdapterSpec):
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

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import LoHaConfig

        return LoHaConfig(r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout,
                          module_dropout=self.module_dropout, **common)


@dataclass
class LokrSpec(AdapterSpec):
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

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import LoKrConfig

        return LoKrConfig(r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout,
                          module_dropout=self.module_dropout, decompose_both=self.decompose_both,
                          decompose_factor=self.decompose_factor, **common)


@dataclass
class IA3Spec(AdapterSpec):
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

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import IA3Config

        return IA3Config(feedforward_modules=resolve(self.feedforward_modules), **common)


@dataclass
class VeraSpec(AdapterSpec):
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

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import VeraConfig

        # save_projection: the shared random A/B go into the adapter file, so a reload does not
        # depend on regenerating them from the PRNG key on another torch version.
        return VeraConfig(r=self.r, vera_dropout=self.dropout, d_initial=self.d_initial, save_projection=True,
                          **common)


@dataclass
class OftSpec(AdapterSpec):
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

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import OFTConfig

        # r=0: the number of blocks follows from the block size and each layer's width.
        return OFTConfig(r=0, oft_block_size=self.block_size, module_dropout=self.module_dropout,
                         coft=self.coft, eps=self.eps, **common)


PeftSpec = FullSpec | LinearProbeSpec | BitFitSpec | LoraSpec | LohaSpec | LokrSpec | IA3Spec | VeraSpec | OftSpec

# peft.method -> schema (peft_food/conf/peft/<file>.yaml extends `schema/peft/<method>`).
METHODS: dict[str, type] = {
    spec.method: spec
    for spec in (FullSpec, LinearProbeSpec, BitFitSpec, LoraSpec, LohaSpec, LokrSpec, IA3Spec, VeraSpec, OftSpec)
}


def keys_of(method: str) -> list[str]:
    """The keys `peft=<method>` understands (for error messages)."""
    return [f.name for f in fields(METHODS[method]) if f.name not in ("method", "recommended_lr")]


def spec_of(saved: dict[str, Any]) -> PeftSpec:
    """The spec a model dir was saved with: its `peft` settings (format 2), or only the method's
    label (format 1, before specs were saved: `dora`, `rslora`, ... were LoRA's flags)."""
    if "peft" in saved:
        settings = dict(saved["peft"])
        return METHODS[settings["method"]](**settings)
    label = saved["method"]
    if label in METHODS:
        return METHODS[label]()
    return LoraSpec(use_dora=label.endswith("dora"), use_rslora=label.startswith("rs"))
