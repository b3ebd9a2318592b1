"""Any other peft tuner, given as data: `peft.config` (its `peft_type` and that tuner's own fields) or
`peft.file` (an adapter_config.json, the form peft's method-comparison suite commits an experiment in).

    peft-food-train peft=peft_config '+peft.config={peft_type: C3A, block_size: 16}'
    peft-food-train peft=peft_config peft.file=experiments/c3a/adapter_config.json

Its `target_modules` are module roles, resolved per backbone as for every method (null: query and
value); the classifier head always trains and is saved beside the adapter, whatever the file says.
The spec's label is the tuner's name (`c3a`), for tables and tags. Saved, the spec holds the
config itself (read from the file once), so a run reloads without the file.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from peft_food.errors import ConfigError, require
from peft_food.methods.base import Resolve, register, require_method
from peft_food.methods.peft_tuners.base import TunerSpec

# Tuners that work on an image classifier's layers but not as a config alone, or not at all:
# the reason, which the one-line error gives.
NOT_HERE = {
    "PROMPT_TUNING": "it prepends virtual tokens to a language model's input embeddings (for prompts on ViT use peft=vpt)",
    "MULTITASK_PROMPT_TUNING": "it prepends virtual tokens to a language model's input embeddings (use peft=vpt)",
    "P_TUNING": "it prepends virtual tokens to a language model's input embeddings (use peft=vpt)",
    "PREFIX_TUNING": "it adds past key/values to a language model's attention (use peft=vpt peft.deep=true)",
    "ADAPTION_PROMPT": "it adds prompts to a Llama-style decoder's attention (use peft=vpt)",
    "CPT": "it tunes a language model's token embeddings of a text prompt",
    "CARTRIDGE": "it tunes a language model's KV cache prefix",
    "TRAINABLE_TOKENS": "it trains rows of a language model's token embedding",
    "XLORA": "it mixes LoRA experts by a language model's hidden states and needs trained adapters to start from",
    "POLY": "it routes between LoRA skills by task ids a multi-task language model is given",
    "ADALORA": "its rank budget needs a per-step training hook: use peft=adalora",
}
# Fields peft writes into adapter_config.json that describe the file, not the tuner.
FILE_FIELDS = {
    "peft_type",
    "task_type",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "auto_mapping",
    "peft_version",
}


@register
@dataclass
class PeftConfigSpec(TunerSpec):
    """A peft tuner named by its config; the head is trained and saved beside it (modules_to_save)."""

    method: str = "peft_config"
    # {peft_type: C3A, <that config's fields>}; or empty with `file` set. (Empty, not null: a
    # command-line dict does not merge into a null node in OmegaConf.)
    config: Any = None
    # An adapter_config.json (peft's save_pretrained writes one); read into `config` when parsed.
    file: Optional[str] = None
    recommended_lr: float = 5e-3

    def __post_init__(self) -> None:
        require_method(self)
        require(
            bool(self.config) != (self.file is not None),
            "peft=peft_config needs exactly one of peft.config={peft_type: ..., ...} or "
            "peft.file=path/to/adapter_config.json" + (" (both are set)" if self.config else ""),
        )
        if self.file is not None:
            self.config, self.file = read_adapter_config(Path(self.file)), None
        self.config = dict(self.config)
        require(
            bool(self.config.get("peft_type")),
            "peft.config has no peft_type: add one, e.g. peft.config={peft_type: C3A}",
        )
        self.config["peft_type"] = str(self.config["peft_type"]).upper()
        reason = NOT_HERE.get(self.config["peft_type"])
        require(reason is None, f"peft_type={self.config['peft_type']} does not apply here: {reason}")

    @property
    def label(self) -> str:
        return self.config["peft_type"].lower()

    @property
    def target_modules(self) -> Any:  # what TunerSpec.tuner_config resolves
        targets = self.config.get("target_modules")
        return ["query", "value"] if targets is None else targets

    def tuner_config(self, *, resolve: Resolve, head: str) -> Any:
        targets = self.target_modules
        # A string is peft's regex over full module names: passed as is (peft fails on no match).
        resolved = targets if isinstance(targets, str) else resolve(list(targets))
        return self.peft_config(resolve, target_modules=resolved, modules_to_save=[head])

    def peft_config(self, resolve: Resolve, **common: Any) -> Any:
        config_class = tuner_config_class(self.config["peft_type"])
        known = {f.name for f in fields(config_class)} - FILE_FIELDS
        settings = {k: v for k, v in self.config.items() if k not in FILE_FIELDS}
        for key in settings:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise ConfigError(
                    f"peft.config.{key} is not a field of {config_class.__name__}: {hint}"
                    f"its fields are {', '.join(sorted(known))}"
                )
        try:
            return config_class(**{**settings, **common})
        except (TypeError, ValueError) as err:
            from peft_food.errors import first_line

            raise ConfigError(f"peft.config for {self.config['peft_type']}: {first_line(err)}") from None


def read_adapter_config(path: Path) -> dict[str, Any]:
    """An adapter_config.json's settings, or a one-line error saying what the file is not."""
    if not path.is_file():
        raise ConfigError(
            f"peft.file={path} does not exist: pass the path of an adapter_config.json "
            f"(peft's save_pretrained writes one)"
        )
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"peft.file={path} is not JSON ({err.__class__.__name__}): pass a peft adapter_config.json"
        ) from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise ConfigError(
            f"peft.file={path} is not a peft adapter config (no peft_type): pass the "
            f"adapter_config.json that peft's save_pretrained writes"
        )
    return config


def tuner_config_class(peft_type: str) -> type:
    """peft's config class for `peft_type`, or a one-line error listing the tuners that apply."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    usable = sorted(
        str(getattr(t, "value", t)) for t in PEFT_TYPE_TO_CONFIG_MAPPING if str(getattr(t, "value", t)) not in NOT_HERE
    )
    if peft_type not in usable:
        raise ConfigError(f"peft_type={peft_type} is not a peft tuner: choose one of {', '.join(usable)}")
    return PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
