"""Trainable-parameter counts of the real configs, checked against each method's arithmetic.

ViT-B/16 (hidden 768, MLP 3,072, 12 layers) with a 101-way head. q and v are 768 x 768 Linear
layers, so "q/v" means 24 adapted layers. The head (768 * 101 + 101 = 77,669) trains with every
method. Built from the shipped config on the meta device (shapes, no weights), so no Hub is needed.
"""

import copy

import pytest
import torch

from peft_food.methods.apply import apply_peft
from peft_food.model.backbone import count_parameters, load_base, resolve_target_modules
from tests import pages
from tests.helpers import spec_of

LABELS = [f"food_{i}" for i in range(101)]
VIT_B_BACKBONE_AND_HEAD = 85_876_325  # ViT-B/16 without pooler + 101-way classifier
HEAD = 768 * 101 + 101
D, MLP, QV_LAYERS = 768, 3072, 24


@pytest.fixture(scope="module")
def vit_b():
    # On the meta device: shapes without storage, so each test's copy (counts) costs no 86M-float copy.
    spec = spec_of("model=vit_base", "model.pretrained=false")
    with torch.device("meta"):
        base, _ = load_base(model=spec.model, labels=LABELS)
    return base


def counts(vit_b, *overrides):
    spec = spec_of("model=vit_base", "model.pretrained=false", *overrides)
    model = apply_peft(copy.deepcopy(vit_b), peft=spec.peft, model=spec.model)
    return count_parameters(model), model


def test_seed_recipe_lora_count_matches_the_tutorial(vit_b):
    got, _ = counts(vit_b, "peft=lora", "peft.r=16")
    assert got == {"trainable_params": 667_493, "total_params": 86_543_818, "trainable_percent": 0.7713}


@pytest.mark.parametrize("r", [4, 8, 32])
def test_lora_count_is_linear_in_rank_and_ignores_alpha(vit_b, r):
    for alpha in (8, 64):
        got, _ = counts(vit_b, "peft=lora", f"peft.r={r}", f"peft.alpha={alpha}")
        assert got["trainable_params"] == 36_864 * r + HEAD
        # The total also holds the adapter and the saved copy of the head.
        assert got["total_params"] == VIT_B_BACKBONE_AND_HEAD + 36_864 * r + HEAD


def test_full_fine_tuning_trains_every_parameter(vit_b):
    got, _ = counts(vit_b, "peft=full")
    assert got == {
        "trainable_params": VIT_B_BACKBONE_AND_HEAD,
        "total_params": VIT_B_BACKBONE_AND_HEAD,
        "trainable_percent": 100.0,
    }


def test_linear_probe_trains_the_head_alone(vit_b):
    got, model = counts(vit_b, "peft=linear_probe")
    assert got["trainable_params"] == HEAD
    assert got["total_params"] == VIT_B_BACKBONE_AND_HEAD
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}


def test_bitfit_trains_every_bias_of_the_backbone_and_the_head(vit_b):
    got, model = counts(vit_b, "peft=bitfit")
    # Per layer: q, k, v, o (768 each), fc1 (3,072), fc2 (768) and two LayerNorms (768 each);
    # then the final LayerNorm and the patch embedding's convolution (768 each).
    per_layer = 4 * D + MLP + D + 2 * D
    assert got["trainable_params"] == 12 * per_layer + D + D + HEAD == 102_912 + HEAD
    assert got["total_params"] == VIT_B_BACKBONE_AND_HEAD
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.endswith(".bias")} | {"classifier.weight"}


@pytest.mark.parametrize("option", [["peft=dora"], ["peft=lora", "peft.use_dora=true"]])
def test_dora_adds_one_magnitude_per_output_of_each_target(vit_b, option):
    got, _ = counts(vit_b, *option, "peft.r=8")
    assert got["trainable_params"] == 36_864 * 8 + QV_LAYERS * D + HEAD


def test_rslora_keeps_lora_count_and_scales_by_alpha_over_sqrt_r(vit_b):
    got, model = counts(vit_b, "peft=lora", "peft.use_rslora=true", "peft.r=16", "peft.alpha=32")
    assert got["trainable_params"] == 36_864 * 16 + HEAD
    q = model.get_submodule("base_model.model.vit.layers.0.attention.q_proj")
    assert q.scaling["default"] == pytest.approx(32 / 16**0.5)  # plain LoRA would give 32 / 16 = 2


@pytest.mark.parametrize("r", [4, 16])
def test_loha_trains_two_rank_r_pairs_per_target(vit_b, r):
    got, _ = counts(vit_b, "peft=loha", f"peft.r={r}")
    # W = (A1 B1) * (A2 B2): two (768 x r)(r x 768) pairs per target.
    assert got["trainable_params"] == QV_LAYERS * 2 * r * (D + D) + HEAD


@pytest.mark.parametrize("r,w2", [(4, 2 * 32 * 4), (8, 2 * 32 * 8), (16, 32 * 32), (32, 32 * 32)])
def test_lokr_is_a_kronecker_of_24x24_and_a_32x32_that_is_low_rank_below_r_16(vit_b, r, w2):
    # 768 = 24 * 32; w1 is 24 x 24. w2 is 32 x 32, or (32 x r)(r x 32) while r < 32 / 2.
    got, _ = counts(vit_b, "peft=lokr", f"peft.r={r}")
    assert got["trainable_params"] == QV_LAYERS * (24 * 24 + w2) + HEAD


def test_ia3_trains_one_vector_per_target_sized_by_output_or_ff_input(vit_b):
    got, _ = counts(vit_b, "peft=ia3")
    # key and value scale their 768 outputs; fc2 (feed-forward) scales its 3,072 inputs.
    assert got["trainable_params"] == 12 * (D + D + MLP) + HEAD == 55_296 + HEAD


@pytest.mark.parametrize("r", [64, 256])
def test_vera_trains_two_vectors_per_target_and_shares_frozen_projections(vit_b, r):
    got, model = counts(vit_b, "peft=vera", f"peft.r={r}")
    assert got["trainable_params"] == QV_LAYERS * (r + D) + HEAD
    # The shared A (r x 768) and B (768 x r) are buffers: they do not train.
    assert tuple(model.base_model.vera_A["default"].shape) == (r, D)


@pytest.mark.parametrize("block", [16, 32])
def test_oft_trains_the_skew_symmetric_half_of_each_orthogonal_block(vit_b, block):
    got, _ = counts(vit_b, "peft=oft", f"peft.block_size={block}")
    # 768 / b blocks of b x b, each with b(b-1)/2 free entries -> 768 (b-1) / 2 per target.
    assert got["trainable_params"] == QV_LAYERS * (D // block) * block * (block - 1) // 2 + HEAD


# Each toy backbone's q/v LoRA count from its own arithmetic, with a 10-way head.
# vit/deit/dinov2 toys: 4 layers x 2 targets x r x (64 + 64). DINOv2's head reads [CLS] + mean
# patch token (2 x 64 wide). Swin toy: 2 blocks at width 32 and 2 at width 64.
BACKBONES = {
    "vit_tiny": (4 * 2 * 128, 64 * 10 + 10),
    "deit_tiny": (4 * 2 * 128, 64 * 10 + 10),
    "dinov2_tiny": (4 * 2 * 128, 128 * 10 + 10),
    "swin_tiny": (2 * 2 * 64 + 2 * 2 * 128, 64 * 10 + 10),
}


@pytest.mark.parametrize("model", sorted(BACKBONES))
def test_every_backbone_resolves_its_modules_and_head(model):
    per_rank, head = BACKBONES[model]
    spec = spec_of(f"model={model}", "peft=lora", "peft.r=8")
    base, _ = load_base(model=spec.model, labels=LABELS[:10])
    lora = count_parameters(apply_peft(copy.deepcopy(base), peft=spec.peft, model=spec.model))
    assert lora["trainable_params"] == 8 * per_rank + head
    probe = apply_peft(
        base,
        peft=spec_of(f"model={model}", "peft=linear_probe").peft,
        model=spec.model,
    )
    assert count_parameters(probe)["trainable_params"] == head


def test_roles_map_to_the_installed_names_and_old_names_work_too():
    spec = spec_of("model=vit_tiny")
    base, _ = load_base(model=spec.model, labels=LABELS[:3])
    linear = {name.rsplit(".", 1)[-1] for name, m in base.named_modules() if type(m).__name__ == "Linear"}
    new_names = {"q_proj", "v_proj"} <= linear
    expected = ["q_proj", "v_proj"] if new_names else ["query", "value"]
    roles = spec.model.modules
    assert resolve_target_modules(base, requested=["query", "value"], head="classifier", roles=roles) == expected
    assert resolve_target_modules(base, requested=["q_proj", "v_proj"], head="classifier", roles=roles) == expected
    assert resolve_target_modules(base, requested=["mlp_out"], head="classifier", roles=roles) == ["fc2"]


# Published backbone sizes (without a classification head): the shipped `arch` of each real
# config must build the architecture its checkpoint has. Built on the meta device: no memory.
PUBLISHED_M = {"vit_base": 85.8, "vit_base_in1k": 85.8, "deit_small": 21.7, "dinov2_small": 21.8, "swin_t": 27.5}


@pytest.mark.parametrize("model", sorted(PUBLISHED_M))
def test_real_backbones_build_offline_at_their_published_size(model):
    import torch
    from transformers import AutoModelForImageClassification

    from peft_food.methods.apply import check_targets
    from peft_food.model.backbone import base_config

    spec = spec_of(f"model={model}", "model.pretrained=false")
    check_targets(spec.model, peft=spec.peft)  # roles and head resolve (LoRA on query/value)
    with torch.device("meta"):
        built = AutoModelForImageClassification.from_config(base_config(spec.model, labels=LABELS))
    head = sum(p.numel() for p in built.get_submodule(spec.model.head).parameters())
    backbone = sum(p.numel() for p in built.parameters()) - head
    assert backbone / 1e6 == pytest.approx(PUBLISHED_M[model], rel=0.02)


# peft's other tuners (methods/peft_tuners/), each from its own definition on ViT-B q/v (24 targets, 768 x 768).
def test_boft_trains_every_block_whole_and_a_scale_per_output(vit_b):
    got, _ = counts(vit_b, "peft=boft", "peft.block_size=8")
    # One butterfly factor: 768 / b blocks of b x b (stored whole), + a 768-long output scale.
    assert got["trainable_params"] == QV_LAYERS * ((D // 8) * 8 * 8 + D) + HEAD


def test_ln_tuning_trains_every_layernorm_and_nothing_else(vit_b):
    got, model = counts(vit_b, "peft=ln_tuning")
    # Two LayerNorms per block and the final one, each a 768 scale and a 768 shift.
    assert got["trainable_params"] == (2 * 12 + 1) * 2 * D + HEAD == 38_400 + HEAD
    trained = {
        n.split(".ln_tuning_layers")[0].rsplit(".", 1)[-1]
        for n, p in model.named_parameters()
        if p.requires_grad and "classifier" not in n
    }
    assert trained == {"layernorm_before", "layernorm_after", "layernorm"}


@pytest.mark.parametrize("n", [1000, 3000])
def test_fourierft_trains_n_spectral_coefficients_per_target(vit_b, n):
    got, _ = counts(vit_b, "peft=fourierft", f"peft.n_frequency={n}")
    assert got["trainable_params"] == QV_LAYERS * n + HEAD


@pytest.mark.parametrize("r", [2, 8])
def test_hra_trains_r_householder_vectors_of_the_input_width(vit_b, r):
    got, _ = counts(vit_b, "peft=hra", f"peft.r={r}")
    assert got["trainable_params"] == QV_LAYERS * D * r + HEAD


def test_adalora_trains_p_e_q_at_the_initial_rank(vit_b):
    got, _ = counts(vit_b, "peft=adalora", "peft.init_r=12", "peft.target_r=4")
    # P (12 x 768), E (12), Q (768 x 12) per target; pruning masks ranks, it does not remove them.
    assert got["trainable_params"] == QV_LAYERS * 12 * (D + D + 1) + HEAD == 442_656 + HEAD


def test_a_tuner_given_as_config_counts_as_its_own_definition(vit_b):
    # C3A: one circular-convolution kernel per (768 / b)^2 block pair -> 768 * 768 / b per target.
    got, model = counts(vit_b, "peft=peft_config", "peft.config={peft_type: C3A, block_size: 64}")
    assert got["trainable_params"] == QV_LAYERS * D * D // 64 + HEAD


def test_readme_methods_table_gives_each_methods_count_at_its_shipped_defaults():
    """The methods table's (docs/methods.md) "with the 101-class head" column: what `peft=<name>` trains on ViT-B/16
    at its YAML's defaults (the first figure where a row gives two variants, e.g. VPT shallow; deep),
    counted on a meta-device skeleton. Rows that need settings of their own (`peft_config`,
    `lora peft....`) are checked above."""
    from pathlib import Path

    import torch
    from transformers import AutoModelForImageClassification

    from peft_food.config import CONF_DIR
    from peft_food.model.backbone import base_config

    docs = pages.text()  # the methods table, wherever README.md and docs/ hold it
    table = docs[docs.index("| `peft=` | what trains |") :].split("\n\n", 1)[0].splitlines()[2:]
    stated, got = {}, {}
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = cells[0].split("`")[1]
        if " " in name or name == "peft_config":
            continue
        stated[name] = int(cells[4].split(";")[0].replace(",", ""))
        spec = spec_of("model=vit_base", "model.pretrained=false", f"peft={name}")
        with torch.device("meta"):
            skeleton = AutoModelForImageClassification.from_config(base_config(spec.model, labels=LABELS))
            got[name] = count_parameters(apply_peft(skeleton, peft=spec.peft, model=spec.model))["trainable_params"]
    assert stated == got
    # Every method with a YAML of its own has its row (peft_config's count is its tuner's).
    assert set(stated) == {p.stem for p in (Path(CONF_DIR) / "peft").glob("*.yaml")} - {"peft_config"}
