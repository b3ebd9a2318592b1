"""Trainable-parameter counts of the real configs, checked against the arithmetic.

ViT-B/16 (hidden 768, 12 layers) with a 101-way head: LoRA on q and v adds A (r x 768) and
B (768 x r) per projection, 2 projections x 12 layers -> 36,864 * r; the head (768 * 101 + 101 =
77,669) trains too. Built from the shipped config, so no Hub is needed.
"""

import pytest

from peft_food.config import parse_config
from peft_food.model import (
    apply_peft,
    count_parameters,
    load_base,
    resolve_target_modules,
)
from tests.conftest import compose_config

LABELS = [f"food_{i}" for i in range(101)]
VIT_B_BACKBONE_AND_HEAD = 85_876_325  # ViT-B/16 without pooler + 101-way classifier
HEAD = 768 * 101 + 101


def counts(*overrides):
    spec = parse_config(compose_config("model=vit_base", "model.pretrained=false", *overrides, output_dir="/tmp/x"))
    base, _ = load_base(model=spec.model, labels=LABELS)
    return count_parameters(apply_peft(base, peft=spec.peft, head=spec.model.head))


def test_seed_recipe_lora_count_matches_the_tutorial():
    got = counts("peft=lora", "peft.r=16")
    assert got == {"trainable_params": 667_493, "total_params": 86_543_818, "trainable_percent": 0.7713}


@pytest.mark.parametrize("r", [4, 8, 32])
def test_lora_count_is_linear_in_rank_and_ignores_alpha(r):
    for alpha in (8, 64):
        got = counts("peft=lora", f"peft.r={r}", f"peft.alpha={alpha}")
        assert got["trainable_params"] == 36_864 * r + HEAD
        # The total also holds the adapter and the saved copy of the head.
        assert got["total_params"] == VIT_B_BACKBONE_AND_HEAD + 36_864 * r + HEAD


def test_full_fine_tuning_trains_every_parameter():
    got = counts("peft=full")
    assert got == {"trainable_params": VIT_B_BACKBONE_AND_HEAD, "total_params": VIT_B_BACKBONE_AND_HEAD,
                   "trainable_percent": 100.0}


def test_query_value_resolve_on_the_installed_transformers_and_old_names_work_too():
    spec = parse_config(compose_config("model=vit_tiny", output_dir="/tmp/x"))
    base, _ = load_base(model=spec.model, labels=LABELS[:3])
    linear = {name.rsplit(".", 1)[-1] for name, m in base.named_modules() if type(m).__name__ == "Linear"}
    new_names = {"q_proj", "v_proj"} <= linear
    expected = ["q_proj", "v_proj"] if new_names else ["query", "value"]
    assert resolve_target_modules(base, requested=["query", "value"], head="classifier") == expected
    assert resolve_target_modules(base, requested=["q_proj", "v_proj"], head="classifier") == expected
