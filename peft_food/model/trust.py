"""A saved model is data, never code: what in a model dir would run Python, and the one rule for it.

transformers runs a checkpoint's own code (a module its config's `auto_map` names) only with
`trust_remote_code=True`, and asks the caller to decide that per call. A run dir may come from
anywhere (a W&B artifact, a colleague's folder), so nothing in it decides: its `peft_food.json`
saying `trust_remote_code: true`, or a config naming an `auto_map`, only makes the command stop
with one line, until the person running it passes `--trust-remote-code` on that command line.
Torch-free: it reads JSON only.
"""

from __future__ import annotations

import json
from pathlib import Path

from peft_food.errors import UserError

FLAG = "--trust-remote-code"
# The files transformers reads an `auto_map` from when it loads a model or its image processor.
CONFIG_FILES = ("config.json", "preprocessor_config.json", "processor_config.json")


def code_named_in(folder: Path) -> str | None:
    """Why loading `folder` would run code of its own (a config naming an `auto_map` module), or
    None. A file that is not a JSON object names nothing here (its loader says what is wrong)."""
    for name in CONFIG_FILES:
        path = folder / name
        try:
            body = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(body, dict) and body.get("auto_map"):
            modules = sorted({str(ref).split(".", 1)[0] for ref in _refs(body["auto_map"])})
            return f"{path} names code of its own to run on loading (auto_map: {', '.join(modules) or '?'})"
    return None


def _refs(auto_map: object) -> list[object]:
    if isinstance(auto_map, dict):
        return [ref for value in auto_map.values() for ref in (value if isinstance(value, list) else [value]) if ref]
    return [auto_map]


def require_trust(reason: str | None, *, trusted: bool) -> None:
    """Stop with one line when something would run code the person did not ask for."""
    if reason is not None and not trusted:
        raise UserError(
            f"{reason}; a saved model never runs its own code unless you ask: pass {FLAG} to run it "
            f"if you trust where it came from"
        )
