"""What every method is: the `MethodSpec` base its specs extend, the registry they join with `@register`,
and the value checks they share.

A spec is a dataclass (a Hydra schema: it holds only the keys its method understands) that also
owns its method's behaviour: how it prepares a base, what it saves, how it is read back, how it
merges into a plain model. The rest of the package asks the spec and never branches on a name.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from hydra.core.config_store import ConfigStore

from peft_food.errors import UserError, require

# Maps role names (or raw module names) to this backbone's Linear module names.
Resolve = Callable[[list[str]], list[str]]
# Loads the frozen base a method's saved tensors go onto, given the saved head's tensors (so the
# head's size is checked against the recorded labels before anything is loaded); for a method that
# saves the whole model, that model itself. It alone decides what may run (safetensors, no code).
BaseLoader = Callable[[dict[str, Any]], Any]

# peft.method -> schema, in the order the families register (peft_food/conf/peft/<file>.yaml
# extends `schema/peft/<method>`): filled by @register, read through peft_food.methods.
METHODS: dict[str, type] = {}


def register(spec: type) -> type:
    """Add a method's spec class to METHODS under its `method` name, and to Hydra's ConfigStore as
    `schema/peft/<method>`, which its peft_food/conf/peft/<method>.yaml extends: all a new method
    needs besides its class and that file (a user's own method, registered before composing, too)."""
    METHODS[spec.method] = spec
    ConfigStore.instance().store(group="schema/peft", name=spec.method, node=spec)
    return spec


def require_method(spec: Any) -> None:
    """`peft.method` is the name its class is registered under (the class's `method` default)."""
    name = type(spec).method
    require(spec.method == name, f"peft.method={spec.method!r} does not match peft={name}")


def require_positive(spec: Any, key: str) -> None:
    value = getattr(spec, key)
    require(
        value > 0, f"peft.{key}={value} is invalid: {key} of peft={spec.method} must be positive (e.g. peft.{key}=16)"
    )


def require_fraction(value: float, key: str) -> None:
    require(0.0 <= value < 1.0, f"peft.{key}={value} is invalid: use a value in [0, 1)")


def require_targets(targets: list[str]) -> None:
    require(len(targets) > 0, "peft.target_modules is empty: name at least one module role (e.g. [query, value])")


def require_fit(ok: bool, detail: str) -> None:
    """The saved weights must fit the base they are loaded onto."""
    if not ok:
        raise UserError(
            f"what this run saved does not fit the base model (another architecture or label count): {detail}"
        )


class MethodSpec:
    """What every method's spec answers (the type of `peft` everywhere). Specs are dataclasses (Hydra schemas); this holds behaviour only."""

    method: str
    recommended_lr: float
    # What the method saves is the whole model (hundreds of MB on ViT-B), not a small file.
    saves_whole_model: ClassVar[bool] = False
    # The library that reads what it saves (the model card's library_name).
    library: ClassVar[str] = "peft-food"
    # Why the method cannot fold into the base weights (None: it can, see `merge`): what
    # peft-food-export and the model card say of it.
    unfoldable: ClassVar[str | None] = None

    @property
    def saves_base(self) -> bool:
        """A random-init base (model.pretrained=false) exists nowhere else: keep a copy beside
        what the method saves, unless that is the whole model anyway."""
        return not self.saves_whole_model

    @property
    def label(self) -> str:
        """The name tables, tags and records use."""
        return self.method

    def prepare(self, base: Any, *, resolve: Resolve, head: str) -> Any:
        """The model to train: `base` with this method's trainable parameters."""
        raise NotImplementedError

    def save(self, model: Any, *, model_dir: Path, head: str) -> None:
        """Write only what trained into `model_dir`."""
        raise NotImplementedError

    def load(
        self, model_dir: Path, *, base: BaseLoader, labels: list[str], head: str, roles: dict[str, str] | None = None
    ) -> Any:
        """Read back what `save` wrote; `base(saved_head)` loads the frozen base it goes onto, and
        `roles` are its module roles (model.modules) for methods that find layers by role."""
        raise NotImplementedError

    def merge(self, model: Any) -> Any:
        """A plain transformers model with the trained weights in place (what export saves)."""
        return model

    def callbacks(self) -> list[Any]:
        """Trainer callbacks the method owns (AdaLoRA's per-step rank budget); most need none."""
        return []


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around every call that wraps a model in peft (get_peft_model, PeftModel.from_pretrained): peft
    0.21 reads transformers 5.x's deprecated is_gradient_checkpointing there, a FutureWarning on every
    run, prediction and export that no user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
