"""More of peft's own tuners, each with its keys checked here: BOFT, LN tuning, FourierFT, HRA and
AdaLoRA. They share AdapterSpec's save, reload and merge (peft's adapter file with the head beside it).

    peft-food-train peft=boft peft.block_size=8         # butterfly orthogonal rotation of q, v
    peft-food-train peft=ln_tuning                      # every LayerNorm of the backbone + the head
    peft-food-train peft=fourierft peft.n_frequency=3000  # a few learned Fourier coefficients per target
    peft-food-train peft=hra peft.r=8                   # r Householder reflections per target
    peft-food-train peft=adalora peft.init_r=12 peft.target_r=8   # LoRA whose ranks are pruned as it trains
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peft_food.errors import ConfigError, require
from peft_food.methods.base import (
    Resolve,
    register,
    require_fraction,
    require_method,
    require_positive,
    require_targets,
)
from peft_food.methods.peft_tuners.lora import AdapterSpec


@register
@dataclass
class BoftSpec(AdapterSpec):
    """BOFT: OFT whose orthogonal matrix is a product of butterfly-permuted block-diagonal ones."""

    method: str = "boft"
    # Side of each orthogonal block; must divide every target's input width (768 = 192 x 4).
    block_size: int = 4
    # Drops whole blocks (multiplicative dropout), as peft's boft_dropout.
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self, "boft")
        require_positive(self, "block_size")
        require_fraction(self.dropout, "dropout")
        require_targets(self.target_modules)

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        import torch

        # peft builds BOFT's butterfly permutation with Tensor.item(), which the meta device (the
        # skeleton check_targets prepares) refuses: build it on the CPU; peft then moves the
        # adapter to wherever its base layer is.
        with torch.device("cpu"):
            return super().prepare(base, resolve=resolve, head=head)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import BOFTConfig

        # One butterfly factor: peft uses more only with its CUDA extension and silently falls back
        # to one without it (boft/layer.py get_fbd_cuda), so a larger value would not mean the same
        # model on every machine.
        return BOFTConfig(
            boft_block_size=self.block_size,
            boft_block_num=0,
            boft_n_butterfly_factor=1,
            boft_dropout=self.dropout,
            **common,
        )


@register
@dataclass
class LnTuningSpec(AdapterSpec):
    """LN tuning: every LayerNorm of the backbone trains (scale and shift), with the head."""

    method: str = "ln_tuning"
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self, "ln_tuning")

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        from peft import LNTuningConfig, get_peft_model

        from peft_food.model.backbone import norm_module_names

        # LayerNorms are found by type, not by role: roles name Linear layers (model.modules).
        norms = norm_module_names(base, exclude=head)
        if not norms:
            raise ConfigError(
                "peft=ln_tuning: this backbone has no torch LayerNorm outside its head; choose another method"
            )
        return get_peft_model(base, LNTuningConfig(target_modules=norms, modules_to_save=[head]))


@register
@dataclass
class FourierFTSpec(AdapterSpec):
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
        require_method(self, "fourierft")
        require_positive(self, "n_frequency")
        require_positive(self, "scaling")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import FourierFTConfig

        return FourierFTConfig(
            n_frequency=self.n_frequency, scaling=self.scaling, random_loc_seed=self.random_loc_seed, **common
        )


@register
@dataclass
class HraSpec(AdapterSpec):
    """HRA: each target's weight is multiplied by a chain of r Householder reflections."""

    method: str = "hra"
    # Number of reflections (peft's and the paper's default); even, so the chain starts as the identity.
    r: int = 8
    # Gram-Schmidt orthogonalise the reflection vectors (the paper's regularised variant).
    apply_GS: bool = False
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self, "hra")
        require_positive(self, "r")
        # peft pairs identical reflections (H H = I) only for an even r; an odd r starts away from
        # the pretrained model, with a warning nobody reads.
        require(self.r % 2 == 0, f"peft.r={self.r} is invalid: HRA's r must be even (e.g. peft.r=8)")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import HRAConfig

        return HRAConfig(r=self.r, apply_GS=self.apply_GS, **common)


@register
@dataclass
class AdaLoraSpec(AdapterSpec):
    """AdaLoRA: LoRA in SVD form (P diag(E) Q) whose total rank is pruned from init_r to target_r per
    target on average during training, by importance; the rank budget is updated after every
    optimizer step by the method's own Trainer callback."""

    method: str = "adalora"
    # Ranks per target at the start and, on average, at the end (peft's defaults; the paper starts at 1.5x).
    init_r: int = 12
    target_r: int = 8
    alpha: int = 8
    dropout: float = 0.0
    # Fractions of the run's optimizer steps: first at full rank (peft: tinit), last at the final ranks (tfinal).
    tinit_fraction: float = 0.1
    tfinal_fraction: float = 0.2
    # Reallocate every delta_t steps (peft: deltaT; its default).
    delta_t: int = 1
    # Smoothing of the sensitivity and uncertainty estimates (the paper's and peft's 0.85).
    beta1: float = 0.85
    beta2: float = 0.85
    # Weight of the penalty that keeps P and Q orthogonal, added to the training loss (peft's default).
    orth_reg_weight: float = 0.5
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self, "adalora")
        for key in ("init_r", "target_r", "alpha", "delta_t"):
            require_positive(self, key)
        require(
            self.target_r <= self.init_r,
            f"peft.target_r={self.target_r} is invalid: it must not exceed "
            f"peft.init_r={self.init_r} (AdaLoRA only prunes ranks)",
        )
        require_fraction(self.dropout, "dropout")
        for key in ("tinit_fraction", "tfinal_fraction"):
            require_fraction(getattr(self, key), key)
        require(
            self.tinit_fraction + self.tfinal_fraction < 1,
            f"peft.tinit_fraction + peft.tfinal_fraction = {self.tinit_fraction + self.tfinal_fraction:g} "
            f"leaves no steps to reallocate ranks in: keep their sum below 1",
        )
        for key in ("beta1", "beta2"):
            value = getattr(self, key)
            require(0 < value < 1, f"peft.{key}={value} is invalid: use a value in (0, 1)")
        require(self.orth_reg_weight >= 0, f"peft.orth_reg_weight={self.orth_reg_weight} is invalid: use 0 or more")
        require_targets(self.target_modules)

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        from peft import AdaLoraConfig

        # total_step is the run's: set when training begins (AdaLoraSchedule). Until then, a
        # one-step schedule satisfies peft's check (it needs total_step > tinit + tfinal).
        return AdaLoraConfig(
            init_r=self.init_r,
            target_r=self.target_r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            tinit=0,
            tfinal=0,
            total_step=1,
            deltaT=self.delta_t,
            beta1=self.beta1,
            beta2=self.beta2,
            orth_reg_weight=self.orth_reg_weight,
            **common,
        )

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        model = super().prepare(base, resolve=resolve, head=head)
        # PeftModel.forward calls the transformers model directly (peft_model.py), skipping
        # AdaLoraModel.forward, which is what adds the orthogonality penalty to the loss.
        model.forward = model.base_model.forward
        # peft leaves each target's `ranknum` (the fixed rank its update is divided by) trainable,
        # yet never saves it: trained, the reloaded adapter would not be the one that trained.
        for name, param in model.named_parameters():
            if ".ranknum." in name:
                param.requires_grad_(False)
        return model

    def callbacks(self) -> list[Any]:
        from peft_food.methods.peft_tuners.adalora_schedule import (
            AdaLoraSchedule,
        )  # transformers: not on the command line's path

        return [AdaLoraSchedule(tinit_fraction=self.tinit_fraction, tfinal_fraction=self.tfinal_fraction)]
