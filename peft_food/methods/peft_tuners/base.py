"""What every method that wraps a peft tuner shares: peft's own tuner on the targeted module roles,
with the classifier head trained and saved beside it (modules_to_save); saved as peft's adapter
files, reloaded onto the frozen base with the head checked, merged by peft's merge_and_unload.

`target_modules` names module *roles* (query, key, value, attn_out, mlp_in, mlp_out) that each
backbone's `model.modules` maps to its own Linear names, so one method config works on ViT,
DeiT, DINOv2 and Swin alike.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

from peft_food.errors import UserError, first_line
from peft_food.methods.base import (
    BaseLoader,
    MethodSpec,
    Resolve,
    peft_wrapping,
    require_fit,
)


class TunerSpec(MethodSpec):
    """peft's own adapter on the targeted roles; the head is trained and saved beside it."""

    target_modules: list[str]
    library: ClassVar[str] = "peft"

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        """peft's config for this method; `common` holds target_modules and modules_to_save."""
        raise NotImplementedError

    def tuner_config(self, *, resolve: Resolve, head: str) -> Any:
        # modules_to_save: without it the new head stays frozen at its random init and is not
        # saved (peft #310, #577, #876, #1070).
        return self.peft_config(resolve, target_modules=resolve(self.target_modules), modules_to_save=[head])

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        from peft import get_peft_model

        return get_peft_model(base, self.tuner_config(resolve=resolve, head=head))

    def save(self, model: Any, *, model_dir: Path, head: str) -> None:
        model.save_pretrained(str(model_dir))

    def load(
        self, model_dir: Path, *, base: BaseLoader, labels: list[str], head: str, roles: dict[str, str] | None = None
    ) -> Any:
        import torch
        from peft import PeftModel

        from peft_food.model.weights import (
            ADAPTER_WEIGHTS,
            active_head,
            head_tensors,
            renamed_adapter,
        )

        saved_head = head_tensors(model_dir / ADAPTER_WEIGHTS, head=head)
        frozen = base(saved_head)
        try:
            with tempfile.TemporaryDirectory() as scratch, peft_wrapping():
                model = PeftModel.from_pretrained(frozen, str(renamed_adapter(model_dir, frozen, Path(scratch))))
        except (RuntimeError, ValueError, KeyError) as err:
            require_fit(
                False,
                next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), first_line(err)),
            )
        predicting = active_head(model, head=head)
        for key, tensor in saved_head.items():
            if not torch.equal(getattr(predicting, key.rsplit(".", 1)[-1]).detach().cpu(), tensor):
                raise UserError(
                    f"the classifier head did not load from the adapter ({key}); refusing to predict "
                    f"with a randomly initialised head"
                )
        return model

    def merge(self, model: Any) -> Any:
        from peft.utils.other import ModulesToSaveWrapper

        merged = model.merge_and_unload()  # every adapter folds its update into the base weights
        # Some tuners' merge_and_unload leaves the trained head in peft's ModulesToSaveWrapper (LN
        # tuning, peft 0.21): the export then saved it as classifier.modules_to_save.default.* and
        # transformers loaded a fresh random head in its place. Put the trained copy back as the head.
        for name, module in list(merged.named_modules()):
            if isinstance(module, ModulesToSaveWrapper):
                parent, _, child = name.rpartition(".")
                setattr(
                    merged.get_submodule(parent),
                    child,
                    module.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None),
                )
        return merged
