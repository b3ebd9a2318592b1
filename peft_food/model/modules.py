"""Module names, known in one place: the roles a method targets, each backbone's default Linear
names for them, and transformers' 5.9 rename of ViT's modules (old checkpoints and adapters).

transformers >= 5.9 names the attention and MLP Linear layers alike in ViT, DeiT, DINOv2 and Swin
(`q_proj`, `k_proj`, `v_proj`, `o_proj`, `mlp.fc1`, `mlp.fc2`) and renames old checkpoints on load
(conversion_mapping.py, "ViTModel"). Configs may name either; adapters saved with the old names
are mapped the same way when they are read back.
"""

from __future__ import annotations

# Role (what peft.target_modules names) -> Linear module name on transformers >= 5.9.
DEFAULT_ROLES = {
    "query": "q_proj",
    "key": "k_proj",
    "value": "v_proj",
    "attn_out": "o_proj",
    "mlp_in": "fc1",
    "mlp_out": "fc2",
}

# Short module names before 5.9 -> after ("dense" was the attention output projection).
OLD_TO_NEW = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "dense": "o_proj"}

# Substrings of full parameter names before 5.9 -> after, applied in this order.
OLD_VIT_PATHS = [
    ("encoder.layer.", "layers."),
    ("attention.attention.query", "attention.q_proj"),
    ("attention.attention.key", "attention.k_proj"),
    ("attention.attention.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
]


def in_head(name: str, *, head: str) -> bool:
    """Whether module or parameter `name` is the head or inside it (`classifier`, `classifier.weight`,
    or under a wrapper: `base_model.model.classifier.modules_to_save...`): the one test of "outside
    the head" that methods and target resolution share."""
    return f".{head}." in f".{name}."


def other_name(name: str) -> str | None:
    """The same module under the other transformers naming (q_proj <-> query), if it was renamed."""
    if name in OLD_TO_NEW:
        return OLD_TO_NEW[name]
    return next((old for old, new in OLD_TO_NEW.items() if new == name), None)


def new_path(key: str) -> str:
    """A pre-5.9 ViT parameter path under the 5.9 names (unchanged if it is already new)."""
    for old, new in OLD_VIT_PATHS:
        key = key.replace(old, new)
    return key
