"""`peft-food-train --help`: what the command does, every config group with its options (read
from the packaged conf/ tree, so it never goes stale), and example commands. Answered without
Hydra, torch or transformers, so it prints at once.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from peft_food.config import CONF_DIR

# Groups a user picks from, in the order they matter; `schema/` (typed defaults) and Hydra's own
# groups are internals.
GROUPS = ["model", "peft", "data", "train", "logger", "experiment", "sweep", "hydra/launcher"]

EXAMPLES = [
    ("peft-food-train experiment=quickstart", "offline, CPU, ~1 minute: a tiny ViT learns 10 classes"),
    ("peft-food-train", "the seed recipe: ViT-B/16 + LoRA r=16 on Food-101 (Hub, GPU)"),
    ("peft-food-train peft=bitfit train.epochs=3", "another method; train.lr follows the method"),
    ("peft-food-train data=imagefolder data.root=/path/to/photos", "your own <class>/*.jpg folders"),
    ("peft-food-train -m peft.r=4,16 seed=1,2,3 experiment=quickstart", "a sweep: one run per combination"),
]


def options(group: str, *, conf_dir: Path) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def defaults(conf_dir: Path) -> dict[str, str]:
    """Each group's default option, from train.yaml's defaults list."""
    entries = yaml.safe_load((conf_dir / "train.yaml").read_text())["defaults"]
    return {key: str(value) for entry in entries if isinstance(entry, dict) for key, value in entry.items()}


def help_text(prog: str, *, conf_dir: Path = Path(CONF_DIR)) -> str:
    chosen = defaults(conf_dir)
    lines = [
        f"{prog}: fine-tune a Vision Transformer on Food-101 or your own image folders, by full",
        "fine-tuning or a parameter-efficient method (LoRA and others); every run writes its model,",
        "metrics.json and per-class results to its run dir (outputs/<date>/<time>/) and logs to W&B.",
        "",
        f"usage: {prog} [-m] [GROUP=OPTION ...] [KEY=VALUE ...]",
        "",
        "Config groups (pick one option each; * marks the default):",
    ]
    for group in GROUPS:
        names = options(group, conf_dir=conf_dir)
        if not names:
            continue
        label = "+sweep=" if group == "sweep" else f"{group}="
        marked = [f"{name}*" if chosen.get(group) == name else name for name in names]
        lines.append(f"  {label:<17}{', '.join(marked)}")
    lines += [
        "",
        "Keys: any key of the composed config, e.g. peft.r=8 train.epochs=3 logger=none.",
        f"  {prog} --cfg job [GROUP=OPTION ...]   prints the composed config (every key, as YAML)",
        "  Your own groups: --config-dir DIR (DIR/model/my_vit.yaml, DIR/experiment/..., ...)",
        "",
        "Examples:",
        *(f"  {command:<66}# {why}" for command, why in EXAMPLES),
        "",
        "Hydra's own options: --hydra-help; tab completion: eval \"$(" + prog + " -sc install=bash)\"",
    ]
    return "\n".join(lines)


def print_help(prog: str) -> None:
    print(help_text(prog))
