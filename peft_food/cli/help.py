"""`--help` of the Hydra commands (peft-food-train, -prepare, -bench): what the command does, the
config groups a user picks from with their options (read from the packaged conf/ tree, so it never
goes stale), the command's own keys, and example commands. Answered without Hydra, torch or
transformers, so it prints at once; Hydra's raw help (with the internal `schema/*` groups) stays
one option away (`--hydra-help`).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from peft_food.config import CONF_DIR

# Groups a user picks from, in the order they matter; `schema/` (typed defaults) and Hydra's own
# groups are internals.
GROUPS = ["model", "peft", "data", "train", "logger", "hub", "experiment", "recipe", "sweep", "hydra/launcher"]


@dataclass(frozen=True)
class Command:
    prog: str
    about: list[str]  # what it does, a few lines
    config: str = "train"  # its entry config in conf/
    groups: list[str] = field(default_factory=lambda: list(GROUPS))
    keys: str | None = None  # its own key section in the entry config (bench.*), listed with comments
    examples: list[tuple[str, str]] = field(default_factory=list)
    multirun: bool = False


def quickstart_time(conf_dir: Path = Path(CONF_DIR)) -> str:
    """How long `experiment=quickstart` takes, as measured: written once, in the `# Takes: ...` line of
    conf/experiment/quickstart.yaml; --help quotes it and tests/test_command_line.py holds README to it."""
    text = (conf_dir / "experiment" / "quickstart.yaml").read_text()
    return re.search(r"^# Takes: (.+?)(?: \(|\.?$)", text, flags=re.M).group(1)


TRAIN = Command(
    prog="peft-food-train",
    about=[
        "fine-tune a Vision Transformer on Food-101 or your own image folders, by full",
        "fine-tuning or a parameter-efficient method (LoRA and others); every run writes its model,",
        "metrics.json and per-class results to its run dir (outputs/<date>/<time>/) and logs to W&B.",
    ],
    multirun=True,
    examples=[
        ("peft-food-train experiment=quickstart", f"offline, {quickstart_time()}: a tiny ViT learns 10 classes"),
        ("peft-food-train", "the seed recipe: ViT-B/16 + LoRA r=16 on Food-101 (Hub, GPU)"),
        ("peft-food-train peft=bitfit train.epochs=3", "another method; train.lr follows the method"),
        ("peft-food-train data=imagefolder data.root=/path/to/photos", "your own <class>/*.jpg folders"),
        ("peft-food-train -m peft.r=4,16 seed=1,2,3 experiment=quickstart", "a sweep: one run per combination"),
    ],
)
PREPARE = Command(
    prog="peft-food-prepare",
    about=[
        "build the data stores a training run with the same data, model and data.store_* keys",
        "will read (data.store=true), ahead of time, e.g. before a SLURM array; prints one line per",
        "store and builds nothing that is already there.",
    ],
    config="prepare",
    groups=["model", "data", "experiment"],
    examples=[
        (
            "peft-food-prepare data=food101_local data.root=../shared/data/food101-mini model=vit_tiny",
            "the mini photos at the toy ViT's sizes",
        ),
        ("peft-food-prepare data.store_dir=/scratch/$USER/stores", "Food-101 from the Hub, for ViT-B/16"),
    ],
)
BENCH = Command(
    prog="peft-food-bench",
    about=[
        "time this package's data and training path against the seed recipe, side by side, on",
        "the training config groups; writes bench.json to outputs/bench/<date>/<time>/.",
    ],
    config="bench",
    groups=["model", "peft", "data", "train", "experiment"],
    keys="bench",
    examples=[
        (
            "peft-food-bench data=food101_local data.root=../shared/data/food101-mini model=vit_tiny",
            "both recipes, tiny ViT, CPU",
        ),
        (
            "peft-food-bench data=food101_local data.root=... model=vit_base model.pretrained=false",
            "ViT-B/16 with random weights",
        ),
    ],
)


def options(group: str, *, conf_dir: Path) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def defaults(conf_dir: Path) -> dict[str, str]:
    """Each group's default option, from train.yaml's defaults list."""
    entries = yaml.safe_load((conf_dir / "train.yaml").read_text())["defaults"]
    return {key: str(value) for entry in entries if isinstance(entry, dict) for key, value in entry.items()}


def own_keys(section: str, *, config: Path) -> list[str]:
    """`section.key=default  # comment` for each key of the entry config's own section."""
    values = yaml.safe_load(config.read_text())[section]
    comments = dict(re.findall(r"^  (\w+):[^#\n]*#\s*(.*)$", config.read_text(), flags=re.M))
    return [
        f"  {f'{section}.{key}={flow(value)}':<38}# {comments.get(key, '')}".rstrip(" #")
        for key, value in values.items()
    ]


def flow(value: object) -> str:
    """A value as the command line writes it: [data, train], null, 512."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def help_text(command: Command = TRAIN, *, conf_dir: Path = Path(CONF_DIR)) -> str:
    prog, chosen = command.prog, defaults(conf_dir)
    lines = [
        f"{prog}: {command.about[0]}",
        *command.about[1:],
        "",
        f"usage: {prog} {'[-m] ' if command.multirun else ''}[GROUP=OPTION ...] [KEY=VALUE ...]",
        "",
        "Config groups (pick one option each; * marks the default):",
    ]
    for group in command.groups:
        names = options(group, conf_dir=conf_dir)
        if not names:
            continue
        label = "+sweep=" if group == "sweep" else f"{group}="
        marked = [f"{name}*" if chosen.get(group) == name else name for name in names]
        lines.append(f"  {label:<17}{', '.join(marked)}")
    lines += [
        "",
        "Keys: any key of the composed config, e.g. "
        + ("peft.r=8 train.epochs=3 logger=none." if command.config == "train" else "data.root=... data.store_dir=..."),
    ]
    if command.keys:
        lines += [
            f"  its own {command.keys}.* keys (defaults):",
            *own_keys(command.keys, config=conf_dir / f"{command.config}.yaml"),
        ]
    lines += [
        f"  {prog} --cfg job [GROUP=OPTION ...]   prints the composed config (every key, as YAML)",
        "  Your own groups: --config-dir DIR (DIR/model/my_vit.yaml, DIR/experiment/..., ...)",
        "",
        "Examples:",
        *(f"  {example:<66} # {why}" for example, why in command.examples),
        "",
        "Hydra's own options: --hydra-help; tab completion: eval \"$(" + prog + ' -sc install=bash)"',
    ]
    return "\n".join(lines)


def answered_help(command: Command) -> bool:
    """Print the command's help if asked (--help / -h) and say so: the console script then stops."""
    if any(arg in ("--help", "-h", "-help") for arg in sys.argv[1:]):  # -help: argparse reads -h elp
        print(help_text(command))
        return True
    return False
