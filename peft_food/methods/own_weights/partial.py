"""A frozen base in which a subset of its own parameters trains (the head always): a linear probe
and BitFit. Those tensors alone are saved (`trained.safetensors`) and put back onto the base.

    peft-food-train peft=linear_probe
    peft-food-train peft=bitfit
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft_food.methods.base import Resolve, register, require_fit, require_method
from peft_food.methods.trained import TRAINED_WEIGHTS, SavesTrainedSpec

# A linear probe's head before TRAINED_WEIGHTS (keys relative to the head module).
OLD_HEAD_WEIGHTS = "head.safetensors"


class PartialSpec(SavesTrainedSpec):
    """A frozen base in which some of its own parameters (always the head) train."""

    def trains(self, name: str, *, head: str) -> bool:
        """Whether parameter `name` of the base trains (the head's always do)."""
        raise NotImplementedError

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        from peft_food.model.modules import in_head

        for name, param in base.named_parameters():
            param.requires_grad_(in_head(name, head=head) or self.trains(name, head=head))
        return base

    def read_trained(self, model_dir: Path, *, head: str) -> dict[str, Any]:
        from peft_food.model.weights import read_tensors

        if not (model_dir / TRAINED_WEIGHTS).is_file() and (model_dir / OLD_HEAD_WEIGHTS).is_file():
            return {f"{head}.{k}": v for k, v in read_tensors(model_dir / OLD_HEAD_WEIGHTS).items()}
        return super().read_trained(model_dir, head=head)

    def rebuild(self, model: Any, *, saved: dict[str, Any], head: str, roles: dict[str, str] | None) -> Any:
        missing = set(saved) - set(model.state_dict())
        require_fit(not missing, f"{sorted(missing)[:3]} are not parameters of the base")
        return model


@register
@dataclass
class LinearProbeSpec(PartialSpec):
    """Only the classifier head trains; the backbone is frozen (no adapter)."""

    method: str = "linear_probe"
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self)

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
        require_method(self)

    def trains(self, name: str, *, head: str) -> bool:
        return name.endswith(".bias")
