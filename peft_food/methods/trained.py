"""What the partial and added families share: only what trains is saved (`trained.safetensors`, by
parameter name) and put back onto the frozen base on reload, once the method has rebuilt that base
as it trained (a linear probe or BitFit: as it is; VPT, SSF, the bottlenecks: with their modules).

    peft-food-train peft=bitfit            # own_weights/partial.py
    peft-food-train peft=ssf               # added/ssf.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft_food.methods.base import BaseLoader, MethodSpec, require_fit

# What such a method's tensors are saved as (parameter name -> tensor).
TRAINED_WEIGHTS = "trained.safetensors"


def trained_tensors(model: Any, *, head: str) -> dict[str, Any]:
    """What a partial or added method saves: every trainable parameter, and the head's buffers (a
    head norm's running statistics, model.head_norm: they change in training too)."""
    buffers = {n: b for n, b in model.named_buffers() if n.startswith(f"{head}.")}
    return {**buffers, **{n: p for n, p in model.named_parameters() if p.requires_grad}}


class SavesTrainedSpec(MethodSpec):
    """A frozen base of which only the trainable tensors are saved, and loaded back by name."""

    def read_trained(self, model_dir: Path, *, head: str) -> dict[str, Any]:
        """The saved tensors by parameter name."""
        from peft_food.model.weights import read_tensors

        return read_tensors(model_dir / TRAINED_WEIGHTS)

    def rebuild(self, model: Any, *, saved: dict[str, Any], head: str, roles: dict[str, str] | None) -> Any:
        """The loaded base made ready to take `saved` as it trained, failing if `saved` cannot fit it."""
        raise NotImplementedError

    def save(self, model: Any, *, model_dir: Path, head: str) -> None:
        from peft_food.model.weights import save_tensors

        save_tensors(trained_tensors(model, head=head), model_dir / TRAINED_WEIGHTS)

    def load(
        self, model_dir: Path, *, base: BaseLoader, labels: list[str], head: str, roles: dict[str, str] | None = None
    ) -> Any:
        from peft_food.model.modules import in_head
        from peft_food.model.weights import check_loaded

        saved = self.read_trained(model_dir, head=head)
        model = base({k: v for k, v in saved.items() if in_head(k, head=head)})
        model = self.rebuild(model, saved=saved, head=head, roles=roles)
        try:
            model.load_state_dict(saved, strict=False)
        except RuntimeError as err:
            require_fit(False, str(err).splitlines()[-1].strip())
        check_loaded(model, saved)
        return model
