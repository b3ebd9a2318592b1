"""Mixup and CutMix on training batches, and the loss on the soft labels they make.

    peft-food-train train.mixup_alpha=0.8 train.cutmix_alpha=1.0 train.label_smoothing=0.1   # timm's DeiT recipe

torchvision's v2.MixUp / v2.CutMix draw one weight lam ~ Beta(alpha, alpha) per batch and pair each
image with its neighbour in the (already shuffled) batch: image i becomes lam * x_i + (1 - lam) * x_{i-1}
(CutMix: a box of x_{i-1} pasted in, lam the area kept) and its label lam * onehot(y_i) + (1 - lam) *
onehot(y_{i-1}). With both on, each batch gets one of the two, with equal odds (timm's switch_prob 0.5).
They run on the device after the batch is normalised (ImageTrainer): mixing the uint8 batch would
round every mixed pixel to a grey level. The draws come from torch's global generator, which the
run's seed sets and each checkpoint saves, so a seeded run mixes the same way every time.
"""

from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def batch_mixer(*, mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> Mixer | None:
    """(pixels, int labels) -> (mixed pixels, soft labels (N, num_classes)); None when both are off."""
    chosen = [
        *([v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []),
        *([v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else []),
    ]
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, smoothing: float = 0.0) -> torch.Tensor:
    """Per-image cross-entropy against soft targets (N, C), smoothed as (1 - s) * targets + s / C
    (timm's Mixup + SoftTargetCrossEntropy; with one-hot targets it is F.cross_entropy(label_smoothing=s),
    which is what Trainer's LabelSmoother computes). In fp32 whatever autocast made the logits."""
    if smoothing:
        targets = targets * (1 - smoothing) + smoothing / targets.shape[-1]
    return -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
