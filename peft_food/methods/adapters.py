"""peft's own adapters (LoRA and DoRA, LoHa, LoKr, IA3, VeRA, OFT) on the targeted module roles,
with the classifier head trained and saved beside them (modules_to_save).

    peft-food-train peft=lora peft.r=8                  # LoRA on query/value + trained head
    peft-food-train peft=lora peft.use_dora=true        # DoRA (also: peft=dora)
    peft-food-train peft=ia3                            # IA3 on key/value/mlp_out

`target_modules` names module *roles* (query, key, value, attn_out, mlp_in, mlp_out) that each
backbone's `model.modules` maps to its own Linear names, so one method config works on ViT,
DeiT, DINOv2 and Swin alike.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from peft_food.errors import UserError, first_line, require
from peft_food.methods.base import (
    BaseLoader,
    Method,
    Resolve,
    peft_wrapping,
    register,
    require_fit,
    require_fraction,
    require_method,
    require_positive,
    require_targets,
)

# peft's LoRA initialisations that need nothing but the base weights (peft's init_lora_weights).
# Left out: eva, corda and lora_ga read training data; loftq is for a quantised base; mica
# freezes B (a LoRA variant); false (random A and B) is peft's debugging setting.
LORA_INITS = ("true", "gaussian", "orthogonal", "pissa", "olora")
NOT_OFFLINE = "eva, corda, lora_ga need data, loftq a quantised base"
# The attribute a residual-init LoRA model keeps its untrained adapter under, until it is saved.
INITIAL = "_peft_food_initial_adapter"


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

    def load(
        self, model_dir: Path, *, base: BaseLoader, labels: list[str], head: str, roles: dict[str, str] | None = None
    ) -> Any:
        import torch
        from peft import PeftModel

        from peft_food.model.weights import (
            ADAPTER_WEIGHTS,
            active_head,
            head_tensors,
            renamed_adapter,
        )

        saved_head = head_tensors(model_dir / ADAPTER_WEIGHTS, head=head)
        frozen = base(saved_head)
        try:
            with tempfile.TemporaryDirectory() as scratch, peft_wrapping():
                model = PeftModel.from_pretrained(frozen, str(renamed_adapter(model_dir, frozen, Path(scratch))))
        except (RuntimeError, ValueError, KeyError) as err:
            require_fit(
                False,
                next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), first_line(err)),
            )
        predicting = active_head(model, head=head)
        for key, tensor in saved_head.items():
            if not torch.equal(getattr(predicting, key.rsplit(".", 1)[-1]).detach().cpu(), tensor):
                raise UserError(
                    f"the classifier head did not load from the adapter ({key}); refusing to predict "
                    f"with a randomly initialised head"
                )
        return model

    def merge(self, model: Any) -> Any:
        from peft.utils.other import ModulesToSaveWrapper

        merged = model.merge_and_unload()  # every adapter folds its update into the base weights
        # Some tuners' merge_and_unload leaves the trained head in peft's ModulesToSaveWrapper (LN
        # tuning, peft 0.21): the export then saved it as classifier.modules_to_save.default.* and
        # transformers loaded a fresh random head in its place. Put the trained copy back as the head.
        for name, module in list(merged.named_modules()):
            if isinstance(module, ModulesToSaveWrapper):
                parent, _, child = name.rpartition(".")
                setattr(
                    merged.get_submodule(parent),
                    child,
                    module.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None),
                )
        return merged


@register
@dataclass
class LoraSpec(AdapterSpec):
    """`peft=lora`. The defaults and their one-line help live in peft_food/conf/peft/lora.yaml; these
    copies (for a LoraSpec built in code) are held equal to it by tests/test_defaults.py."""

    method: str = "lora"
    r: int = 16
    alpha: int = 16
    dropout: float = 0.1
    bias: str = "none"
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    use_dora: bool = False
    use_rslora: bool = False
    init_lora_weights: str = "true"
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self, "lora")
        require_positive(self, "r")
        require_positive(self, "alpha")
        require_fraction(self.dropout, "dropout")
        require(
            self.bias in ("none", "all", "lora_only"), f"peft.bias={self.bias!r} is invalid: use none, all or lora_only"
        )
        require_targets(self.target_modules)
        self.init_lora_weights = self.init_lora_weights.lower()  # Hydra turns `true` into "True"
        init = self.init_lora_weights
        require(
            init in LORA_INITS or re.fullmatch(r"pissa_niter_\d+", init) is not None,
            f"peft.init_lora_weights={init} is invalid: choose one of {', '.join(LORA_INITS)} or "
            f"pissa_niter_<N> ({NOT_OFFLINE})",
        )
        require(
            not (self.residual and self.use_dora),
            f"peft.init_lora_weights={init} with peft.use_dora=true "
            f"is not supported: a saved DoRA magnitude cannot be moved off the residual base; drop one",
        )
        require(
            init != "orthogonal" or self.r % 2 == 0,
            f"peft.r={self.r} is invalid with init_lora_weights=orthogonal: use an even rank",
        )

    @property
    def residual(self) -> bool:
        """PiSSA and OLoRA move the top of each target's weight into A and B, leaving the residual in the base."""
        return self.init_lora_weights.startswith("pissa") or self.init_lora_weights == "olora"

    @property
    def label(self) -> str:
        """`dora` / `rslora` / `rsdora` for LoRA's flags, so tables and tags tell them apart."""
        name = "dora" if self.use_dora else "lora"
        return f"rs{name}" if self.use_rslora else name

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import LoraConfig

        init = True if self.init_lora_weights == "true" else self.init_lora_weights
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            bias=self.bias,
            use_dora=self.use_dora,
            use_rslora=self.use_rslora,
            init_lora_weights=init,
            **common,
        )

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        if self.residual and next(base.parameters()).is_meta:
            # A skeleton (check_targets) has no weights to decompose; its adapter is shaped as plain LoRA's.
            return replace(self, init_lora_weights="true").prepare(base, resolve=resolve, head=head)
        model = super().prepare(base, resolve=resolve, head=head)
        if self.residual:  # what `save` needs to express the trained adapter against the original base
            from peft import get_peft_model_state_dict

            setattr(model, INITIAL, {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()})
        return model

    def save(self, model: Any, *, model_dir: Path, head: str) -> None:
        initial = getattr(model, INITIAL, None)
        if initial is None:
            return super().save(model, model_dir=model_dir, head=head)
        from peft import get_peft_model_state_dict

        from peft_food.model.weights import ADAPTER_WEIGHTS, read_tensors, save_tensors

        # The base is saved (or on the Hub) as it was, not as the residual PiSSA/OLoRA trained on:
        # peft rewrites the adapter as a plain LoRA of rank 2r against the original weights...
        with tempfile.TemporaryDirectory() as scratch:
            start = Path(scratch) / "initial"
            start.mkdir()
            save_tensors(initial, start / ADAPTER_WEIGHTS)
            model.save_pretrained(str(model_dir), path_initial_model_for_weight_conversion=str(start))
        # ...and keeps only A and B (lora/model.py subtract_mutated_init): put the trained head back.
        others = {
            k: v for k, v in get_peft_model_state_dict(model).items() if ".lora_A." not in k and ".lora_B." not in k
        }
        save_tensors({**read_tensors(model_dir / ADAPTER_WEIGHTS), **others}, model_dir / ADAPTER_WEIGHTS)


@register
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
        require_method(self, "loha")
        require_positive(self, "r")
        require_positive(self, "alpha")
        require_fraction(self.rank_dropout, "rank_dropout")
        require_fraction(self.module_dropout, "module_dropout")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import LoHaConfig

        return LoHaConfig(
            r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout, module_dropout=self.module_dropout, **common
        )


@register
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
        require_method(self, "lokr")
        require_positive(self, "r")
        require_positive(self, "alpha")
        require_fraction(self.rank_dropout, "rank_dropout")
        require_fraction(self.module_dropout, "module_dropout")
        require(
            self.decompose_factor == -1 or self.decompose_factor > 0,
            f"peft.decompose_factor={self.decompose_factor} is invalid: use -1 (auto) or a positive factor",
        )
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import LoKrConfig

        return LoKrConfig(
            r=self.r,
            alpha=self.alpha,
            rank_dropout=self.rank_dropout,
            module_dropout=self.module_dropout,
            decompose_both=self.decompose_both,
            decompose_factor=self.decompose_factor,
            **common,
        )


@register
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
        require_method(self, "ia3")
        require_targets(self.target_modules)
        missing = sorted(set(self.feedforward_modules) - set(self.target_modules))
        require(
            not missing,
            f"peft.feedforward_modules has {missing} not in peft.target_modules: "
            f"add them to target_modules or drop them",
        )

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import IA3Config

        return IA3Config(feedforward_modules=resolve(self.feedforward_modules), **common)


@register
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
        require_method(self, "vera")
        require_positive(self, "r")
        require_fraction(self.dropout, "dropout")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import VeraConfig

        # save_projection: the shared random A/B go into the adapter file, so a reload does not
        # depend on regenerating them from the PRNG key on another torch version.
        return VeraConfig(r=self.r, vera_dropout=self.dropout, d_initial=self.d_initial, save_projection=True, **common)


@register
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
        require_method(self, "oft")
        require_positive(self, "block_size")
        require_fraction(self.module_dropout, "module_dropout")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import OFTConfig

        # r=0: the number of blocks follows from the block size and each layer's width.
        return OFTConfig(
            r=0,
            oft_block_size=self.block_size,
            module_dropout=self.module_dropout,
            coft=self.coft,
            eps=self.eps,
            **common,
        )
