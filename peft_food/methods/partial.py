"""A frozen base in which a subset of its own parameters trains (the head always): a linear probe
and BitFit. Those tensors alone are saved (`trained.safetensors`) and put back onto the base.

    peft-food-train peft=linear_probe
    peft-food-train peft=bitfit
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft_food.methods.base import (
    BaseLoader,
    Method,
    Resolve,
    register,
    require_fit,
    require_method,
)

# What a partial method's tensors are saved as (parameter name -> tensor).
TRAINED_WEIGHTS = "trained.safetensors"
# A linear probe's head before TRAINED_WEIGHTS (keys relative to the head module).
OLD_HEAD_WEIGHTS = "head.safetensors"


def trained_tensors(model: Any, *, head: str) -> dict[str, Any]:
    """What a partial or added method saves: every trainable parameter, and the head's buffers (a
    head norm's running statistics, model.head_norm: they change in training too)."""
    buffers = {n: b for n, b in model.named_buffers() if n.startswith(f"{head}.")}
    return {**buffers, **{n: p for n, p in model.named_parameters() if p.requires_grad}}


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
        from peft_food.model.weights import save_tensors

        save_tensors(trained_tensors(model, head=head), model_dir / TRAINED_WEIGHTS)

    def load(
        self, model_dir: Path, *, base: BaseLoader, labels: list[str], head: str, roles: dict[str, str] | None = None
    ) -> Any:
        from peft_food.model.weights import check_loaded, read_tensors

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


@register
@dataclass
class LinearProbeSpec(PartialSpec):
    """Only the classifier head trains; the backbone is frozen (no adapter)."""

    method: str = "linear_probe"
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self, "linear_probe")

    def trains(self, name: str, *, head: str) -> bool:
        return False


@register
@dataclass
class BitFitSpec(PartialSpec):
    """BitFit (Ben Zaken et al., 2022): every bias term of the backbone (attention, MLP, LayerNorm,
    patch embedding) trains, with the head; the weights stay frozen."""

    method: str = "bitfit"
    # Biases start pretrained and are few (~0.1% of ViT-B): a step near LoRA's, not full FT's.
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self, "bitfit")

    def trains(self, name: str, *, head: str) -> bool:
        return name.endswith(".bias")
