"""Methods that add modules of their own to a frozen transformers model (VPT, SSF, AdaptFormer,
bottleneck adapters), attached as child modules and run through forward hooks, so the model's own
code and parameter names stay as transformers wrote them.

    peft-food-train peft=ssf
    peft-food-predict outputs/<date>/<time> photo.jpg      # reloads base + added modules exactly

What trains (the added modules and the head) is saved as `trained.safetensors`, by parameter name;
a reload attaches the same modules to the frozen base and loads those tensors back.
"""

from __future__ import annotations

from typing import Any

from peft_food.errors import UserError
from peft_food.methods.base import Resolve, require_fit
from peft_food.methods.trained import SavesTrainedSpec, trained_tensors


class AddedSpec(SavesTrainedSpec):
    """A frozen base with new trainable modules of the method's (and the head)."""

    def attach(self, base: Any, *, resolve: Resolve, head: str) -> None:
        """Add this method's modules (trainable, freshly initialised) and their hooks to `base`."""
        raise NotImplementedError

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        for param in base.parameters():
            param.requires_grad_(False)
        self.attach(base, resolve=resolve, head=head)  # new parameters train by default
        for param in base.get_submodule(head).parameters():
            param.requires_grad_(True)
        return base

    def rebuild(self, model: Any, *, saved: dict[str, Any], head: str, roles: dict[str, str] | None) -> Any:
        from peft_food.model.backbone import resolve_target_modules

        model = self.prepare(
            model,
            head=head,
            resolve=lambda requested: resolve_target_modules(model, requested=requested, head=head, roles=roles),
        )
        expected = set(trained_tensors(model, head=head))
        require_fit(
            set(saved) == expected,
            f"saved {sorted(set(saved) - expected)[:3]}, the base has {sorted(expected - set(saved))[:3]} instead",
        )
        return model

    def merge(self, model: Any) -> Any:
        raise UserError(
            f"peft={self.method} cannot be exported as a plain transformers model: {self.unfoldable}; "
            f"predict with `peft-food-predict <run dir> photo.jpg`, which reloads it exactly"
        )
