"""The model group's schema (`model.*`): which backbone, from where, and its module roles.

Torch-free: the command line validates it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from peft_food.errors import require
from peft_food.model.modules import DEFAULT_ROLES

# model.head_init -> how the new head's Linear starts (model/head.py init_head).
HEAD_INITS = {
    "transformers": "as the model class builds it (ViT: truncated normal, std 0.02; bias 0)",
    "vpt": "kaiming-normal fan-out weight, bias -log(99) (KMnP/vpt src/models/mlp.py)",
    "trunc_normal": "truncated normal, std 0.01; bias 0 (MAE linear probing, AdaptFormer main_image.py)",
}


@dataclass
class ModelSpec:
    # Short name for tags and tables (the peft_food/conf/model/ file name).
    name: str = "model"
    # Hub id or local directory; null for models that only exist as an architecture (vit_tiny).
    name_or_path: Optional[str] = None
    # false: build `arch` with random weights (offline, tests, benchmarks).
    pretrained: bool = True
    # Name of the classification head module: kept trainable and saved next to the adapter.
    head: str = "classifier"
    # transformers config kwargs (model_type first) for building without the Hub.
    arch: dict[str, Any] = field(default_factory=dict)
    # Config keys set on the checkpoint's config as on `arch` (a nested dict for a sub-config), for what
    # the classifier never reads: SigLIP's attention-pooling head (vision_config.vision_use_head=false).
    config_overrides: dict[str, Any] = field(default_factory=dict)
    # Image processor kwargs used when no checkpoint is loaded (mean, std, size).
    processor: dict[str, Any] = field(default_factory=dict)
    # Run Python code shipped with a Hub checkpoint: never, unless you ask for it here.
    trust_remote_code: bool = False
    # sdpa: fused scaled-dot-product attention (flash / memory-efficient kernels on GPU); eager: the seed's.
    attn_implementation: str = "sdpa"
    # Module roles that peft.target_modules may name -> this backbone's Linear module names
    # (default: the names transformers >= 5.9 gives ViT, DeiT, DINOv2 and Swin alike).
    modules: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ROLES))
    # How the new head's Linear starts: transformers | vpt | trunc_normal (HEAD_INITS).
    head_init: str = "transformers"
    # true: a BatchNorm1d without affine parameters in front of the head (MAE linear probing, AdaptFormer).
    head_norm: bool = False

    def __post_init__(self) -> None:
        require(
            not self.pretrained or bool(self.name_or_path),
            "model.pretrained=true needs model.name_or_path (a Hub id or a local directory); "
            "set model.pretrained=false to build the architecture with random weights",
        )
        require(
            not (self.pretrained and looks_local(self.name_or_path)) or Path(self.name_or_path).exists(),
            f"model.name_or_path={self.name_or_path} does not exist: pass the directory of a saved checkpoint "
            f"(config.json + model.safetensors), or a Hub id (namespace/name)",
        )
        require(
            self.head_init in HEAD_INITS,
            f"model.head_init={self.head_init!r} is invalid: use {' | '.join(HEAD_INITS)}",
        )
        require(
            self.pretrained or "model_type" in self.arch,
            "model.pretrained=false needs model.arch.model_type (e.g. vit) to build the architecture",
        )


def looks_local(name_or_path: str | None) -> bool:
    """A path, not a Hub id (`namespace/name`): transformers would take a missing one for a malformed
    repo id and answer "Repo id must be in the form ..."."""
    if not name_or_path:
        return False
    return name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1 or Path(name_or_path).exists()
