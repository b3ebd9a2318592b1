"""LoRA (and DoRA, rsLoRA, PiSSA/OLoRA initialisations): a low-rank update B A on each targeted layer.

peft-food-train peft=lora peft.r=8                  # LoRA on query/value + trained head
peft-food-train peft=lora peft.use_dora=true        # DoRA (also: peft=dora)
peft-food-train peft=lora peft.init_lora_weights=pissa  # started at each weight's top singular part
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peft_food.errors import require
from peft_food.methods.base import (
    Resolve,
    register,
    require_fraction,
    require_method,
    require_positive,
    require_targets,
)
from peft_food.methods.peft_tuners.base import TunerSpec

# peft's LoRA initialisations that need nothing but the base weights (peft's init_lora_weights).
# Left out: eva, corda and lora_ga read training data; loftq is for a quantised base; mica
# freezes B (a LoRA variant); false (random A and B) is peft's debugging setting.
LORA_INITS = ("true", "gaussian", "orthogonal", "pissa", "olora")
NOT_OFFLINE = "eva, corda, lora_ga need data, loftq a quantised base"
# The attribute a residual-init LoRA model keeps its untrained adapter under, until it is saved.
INITIAL = "_peft_food_initial_adapter"


@register
@dataclass
class LoraSpec(TunerSpec):
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
        require_method(self)
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
