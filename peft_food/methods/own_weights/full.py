"""Full fine-tuning: every parameter trains, and the whole model is saved.

peft-food-train peft=full
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from peft_food.methods.base import BaseLoader, MethodSpec, Resolve, register, require_method


@register
@dataclass
class FullSpec(MethodSpec):
    """Every parameter trains: the baseline the others are measured against."""

    method: str = "full"
    recommended_lr: float = 5e-5
    saves_whole_model: ClassVar[bool] = True
    library: ClassVar[str] = "transformers"

    def __post_init__(self) -> None:
        require_method(self)

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        for param in base.parameters():
            param.requires_grad_(True)
        return base

    def save(self, model: Any, *, model_dir: Path, head: str) -> None:
        model.save_pretrained(str(model_dir))

    def load(
        self, model_dir: Path, *, base: BaseLoader, labels: list[str], head: str, roles: dict[str, str] | None = None
    ) -> Any:
        return base({})  # the base of a method that saves the whole model is that model (saved/artifacts.py)
