"""The house: stages import only downward (no cycle either), and the extension points are what the
docs/architecture.md says: a data source is one reader + one YAML, a method one class +
one YAML, each added here through them and trained for real."""

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard

from peft_food.config import CONF_DIR, parse_config
from peft_food.data.sources import (
    SOURCES,
    CardData,
    Part,
    Parts,
    Source,
    synthetic_dataset,
)
from peft_food.methods import METHODS
from peft_food.methods.base import register
from peft_food.methods.own_weights.partial import PartialSpec
from peft_food.model.backbone import load_base
from peft_food.training.pipeline import train
from tests.helpers import NO_WANDB, REPO, TINY, TINY_QUIET, TINY_TRAIN, compose_config, eval_logits

# The stages in import order: a module imports from its own stage or from earlier ones only.
STAGES = [
    "errors",
    "files",
    "progress",
    "data",
    "model",
    "methods",
    "evaluation",
    "config",
    "tracking",
    "saved",
    "training",
    "bench",
    "cli",
    "__main__",
]
BASE = {"errors", "files", "progress"}  # one level: what every stage may use


def stage_of(module: str) -> int:
    top = module.split(".")[1]
    return 0 if top in BASE else STAGES.index(top) - len(BASE) + 1


def imports_of(path: Path) -> set[str]:
    """Every peft_food module `path` imports, at the top or inside a function (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("peft_food."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("peft_food."))
    return found


def test_no_module_imports_a_later_stage():
    package = REPO / "peft_food"
    upward = []
    for path in package.rglob("*.py"):
        module = "peft_food." + ".".join(path.relative_to(package).with_suffix("").parts)
        if module.endswith(".__init__"):
            module = module.removesuffix(".__init__")
        if module == "peft_food":
            continue
        for imported in imports_of(path):
            if stage_of(imported) > stage_of(module):
                upward.append(f"{module} -> {imported}")
    assert not upward, upward
    assert stage_of("peft_food.data.store") < stage_of("peft_food.model.backbone") < stage_of("peft_food.cli.train")


# Hydra's private modules change without notice between releases. The only ones used are those with
# no public counterpart (cli/preflight.py says why at each): the parser of Hydra's own flags, and
# composing a multirun config (public `hydra.compose` composes a single run only).
HYDRA_INTERNALS_ALLOWED = {"peft_food.cli.preflight": {"hydra._internal.hydra", "hydra._internal.utils"}}


def test_hydra_internals_only_where_no_public_api_exists():
    package = REPO / "peft_food"
    found = {}
    for path in package.rglob("*.py"):
        module = "peft_food." + ".".join(path.relative_to(package).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else ([a.name for a in node.names] if isinstance(node, ast.Import) else [])
            )
            private = {n for n in names if n.startswith("hydra._internal")}
            if private:
                found.setdefault(module, set()).update(private)
    assert found == HYDRA_INTERNALS_ALLOWED


@pytest.fixture
def conf_dir(tmp_path):
    """A copy of the packaged conf/ to add a file to, as a user's --config-dir would."""
    target = tmp_path / "conf"
    shutil.copytree(CONF_DIR, target)
    return target


def test_a_new_data_source_is_one_reader_and_one_yaml(conf_dir, tmp_path, monkeypatch):
    def read_tiles(spec, seed, plan):  # the reader: a whole pool; val and test are carved out of it
        return Parts(Part(synthetic_dataset(num_classes=3, per_class=8, image_size=32, seed=seed)))

    def card(data):
        return CardData(None, "throwaway tiles", "a seeded held-out fraction")

    monkeypatch.setitem(SOURCES, "tiles", Source(read_tiles, card))
    (conf_dir / "data" / "tiles.yaml").write_text(
        "defaults:\n  - /schema/data/data@_here_\n  - _self_\n\nsource: tiles\ntest_size: 0.25\n"
    )
    record = train(
        compose_config(*TINY_TRAIN, "data=tiles", NO_WANDB, output_dir=tmp_path / "run", conf_dir=str(conf_dir))
    )
    assert record.status == "completed" and record.labels == ["class_0", "class_1", "class_2"]
    counts = record.counts  # per class: 2 of 8 test (0.25), then 1 of the 6 left val (0.1, at least one)
    assert (counts.num_train_samples, counts.num_eval_samples, counts.num_test_samples) == (15, 3, 6)
    card_text = ModelCard.load(tmp_path / "run" / "model" / "README.md").text
    assert "throwaway tiles" in card_text and "synthetic images" not in card_text


def test_a_new_method_is_one_class_and_one_yaml(conf_dir, tmp_path, monkeypatch):
    def trains_norm(name: str) -> bool:
        return "norm" in name.rsplit(".", 2)[-2]

    @dataclass
    class NormsSpec(PartialSpec):
        """Every LayerNorm's scale and shift, and the head."""

        method: str = "norms"
        recommended_lr: float = 5e-3

        def trains(self, name: str, *, head: str) -> bool:
            return trains_norm(name)

    monkeypatch.setitem(METHODS, "norms", None)  # removed again after the test
    register(NormsSpec)
    (conf_dir / "peft" / "norms.yaml").write_text(
        "defaults:\n  - /schema/peft/norms@_here_\n  - _self_\n\nmethod: norms\n"
    )
    run_dir = tmp_path / "run"
    record = train(compose_config(*TINY_QUIET, "peft=norms", output_dir=run_dir, conf_dir=str(conf_dir)))
    assert record.method == "norms"

    base, _ = load_base(model=parse_config(compose_config(*TINY, output_dir=run_dir)).model, labels=record.labels)
    norms = sum(p.numel() for n, p in base.named_parameters() if trains_norm(n))
    head = sum(p.numel() for n, p in base.named_parameters() if n.startswith("classifier."))
    assert norms > 0 and record.counts.trainable_params == norms + head
    # Saved as what trained, read back onto its base: the reloaded model scores as the best epoch did.
    logits, labels = eval_logits(run_dir)
    assert float(np.mean(logits.argmax(-1) == labels)) == record.best
