"""FourierFT (peft=fourierft): a few learned Fourier coefficients per target.

peft-food-train peft=fourierft peft.n_frequency=3000
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peft_food.methods.base import (
    Resolve,
    register,
    require_method,
    require_positive,
    require_targets,
)
from peft_food.methods.peft_tuners.base import TunerSpec


@register
@dataclass
class FourierFTSpec(TunerSpec):
    """FourierFT: each target's update is the inverse 2-D DFT of n learned coefficients at fixed
    random frequencies (the same n for every target)."""

    method: str = "fourierft"
    # The FourierFT paper's ViT-B setting (72K parameters on q, v); peft's default is 1,000.
    n_frequency: int = 3000
    # peft's documented value for ViT-B and ViT-L on every image classification task.
    scaling: float = 300.0
    # Picks the frequencies: the same seed gives the same spectrum locations on reload.
    random_loc_seed: int = 777
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self)
        require_positive(self, "n_frequency")
        require_positive(self, "scaling")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import FourierFTConfig

        return FourierFTConfig(
            n_frequency=self.n_frequency, scaling=self.scaling, random_loc_seed=self.random_loc_seed, **common
        )
