"""peft's other tuners on the tiny ViT: each trains, saves, reloads to the same logits and keeps its
trained head; LoRA's initialisations; AdaLoRA's per-step rank budget; any tuner as a config or an
adapter_config.json; and their bad inputs, one line each before any data is read."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import AutoModelForImageClassification

from peft_food.config import parse_config
from peft_food.errors import ConfigError
from peft_food.methods.apply import apply_peft
from peft_food.model.backbone import load_base, load_processor
from peft_food.saved.artifacts import load_trained, save_base, save_trained
from peft_food.training.pipeline import train
from tests.helpers import (
    NO_EXAMPLES,
    NO_WANDB,
    TINY,
    TINY_QUIET,
    TINY_TRAIN,
    compose_config,
    eval_logits,
    spec_of,
)

LABELS = ["a", "b", "c", "d"]


def prepared(tmp_path, *overrides):
    """The tiny ViT prepared by a method, its random-init base saved first (as training does)."""
    spec = parse_config(compose_config(*TINY_QUIET, *overrides, output_dir=tmp_path))
    torch.manual_seed(0)
    base, _ = load_base(model=spec.model, labels=LABELS)
    save_base(base, model_dir=tmp_path / "model")
    return spec, base, apply_peft(base, peft=spec.peft, model=spec.model)


def train_save_reload(tmp_path, *overrides, steps=3):
    """A few optimizer steps, saved as a run saves, reloaded from files: (spec, trained, reloaded, pixels)."""
    spec, _, model = prepared(tmp_path, *overrides)
    head = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and "classifier" in n}
    torch.manual_seed(1)
    pixels, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        model(pixel_values=pixels, labels=labels).loss.backward()
        optimizer.step()
    assert all(not torch.equal(p, head[n]) for n, p in model.named_parameters() if n in head)  # the head trained
    save_trained(
        model, load_processor(spec.model), model_dir=tmp_path / "model", peft=spec.peft, labels=LABELS, base=spec.model
    )
    return spec, model.eval(), load_trained(tmp_path).model, pixels


TUNERS = {
    "boft": ["peft=boft"],
    "ln_tuning": ["peft=ln_tuning"],
    "fourierft": ["peft=fourierft", "peft.n_frequency=500"],
    "hra": ["peft=hra"],
    "c3a": ["peft=peft_config", "peft.config={peft_type: C3A, block_size: 16}"],
    "randlora": ["peft=peft_config", "peft.config={peft_type: RANDLORA, r: 8}"],
    "miss": ["peft=peft_config", "peft.config={peft_type: MISS}"],
    "delora": ["peft=peft_config", "peft.config={peft_type: DELORA}"],
    "road": ["peft=peft_config", "peft.config={peft_type: ROAD}"],
    "shira": ["peft=peft_config", "peft.config={peft_type: SHIRA, r: 4}"],
    "glora": ["peft=peft_config", "peft.config={peft_type: glora, target_modules: [query, value, mlp_out]}"],
}


@pytest.mark.parametrize("label", sorted(TUNERS))
def test_each_tuner_trains_saves_and_reloads_to_the_same_logits_and_merges(tmp_path, label):
    spec, trained, reloaded, pixels = train_save_reload(tmp_path, *TUNERS[label])
    assert spec.peft.label == label
    config = json.loads((tmp_path / "model" / "adapter_config.json").read_text())
    assert config["peft_type"] == label.upper() and config["modules_to_save"] == ["classifier"]
    with torch.inference_mode():
        expected = trained(pixel_values=pixels).logits
        assert torch.allclose(reloaded(pixel_values=pixels).logits, expected, atol=1e-5)
        # What export writes: the update folded into plain Linear / LayerNorm weights, and the trained head
        # saved as the plain model's own (ln_tuning's merge left it wrapped: a random head was loaded).
        merged = spec.peft.merge(reloaded)
        assert torch.allclose(merged(pixel_values=pixels).logits, expected, atol=1e-4)
        merged.save_pretrained(tmp_path / "exported")
        plain = AutoModelForImageClassification.from_pretrained(tmp_path / "exported")
        assert torch.allclose(plain(pixel_values=pixels).logits, expected, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("init", ["pissa", "pissa_niter_4", "olora"])
def test_residual_inits_move_the_base_yet_start_at_it_and_reload_onto_the_original(tmp_path, init):
    spec, base, model = prepared(tmp_path, "peft=lora", "peft.r=4", f"peft.init_lora_weights={init}")
    from transformers import AutoModelForImageClassification

    untouched = AutoModelForImageClassification.from_pretrained(str(tmp_path / "model" / "base")).eval()
    q = "base_model.model.vit.layers.0.attention.q_proj.base_layer.weight"
    assert not torch.allclose(dict(model.named_parameters())[q], untouched.vit.layers[0].attention.q_proj.weight)
    pixels = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(
            model.eval()(pixel_values=pixels).logits, untouched(pixel_values=pixels).logits, atol=1e-4
        )
    # Trained, saved and reloaded onto the saved (original, not residual) base: the same logits.
    _, trained, reloaded, pixels = train_save_reload(
        tmp_path / "run", "peft=lora", "peft.r=4", f"peft.init_lora_weights={init}"
    )
    with torch.inference_mode():
        assert torch.allclose(reloaded(pixel_values=pixels).logits, trained(pixel_values=pixels).logits, atol=1e-4)


def test_gaussian_init_draws_a_with_std_one_over_r_where_the_default_is_kaiming_uniform(tmp_path):
    lora_a = "base_model.model.vit.layers.0.attention.q_proj.lora_A.default.weight"
    _, _, gaussian = prepared(tmp_path / "g", "peft=lora", "peft.r=4", "peft.init_lora_weights=gaussian")
    _, _, default = prepared(tmp_path / "d", "peft=lora", "peft.r=4")
    a_gauss, a_default = dict(gaussian.named_parameters())[lora_a], dict(default.named_parameters())[lora_a]
    assert a_gauss.std().item() == pytest.approx(1 / 4, rel=0.1)
    # kaiming_uniform(a=sqrt(5)) on 64 inputs: uniform in +-1/8, std 1 / (8 sqrt 3) ~ 0.072.
    assert a_default.abs().max().item() <= 1 / 8 and a_default.std().item() == pytest.approx(0.072, rel=0.1)


@pytest.mark.slow
def test_adalora_prunes_ranks_over_the_runs_own_steps_and_adds_its_orthogonality_penalty(tmp_path):
    run_dir = tmp_path / "run"
    record = train(
        compose_config(
            *TINY,
            "peft=adalora",
            "peft.init_r=4",
            "peft.target_r=1",
            NO_WANDB,
            NO_EXAMPLES,
            "train.epochs=2",
            output_dir=run_dir,
        )
    )
    steps = 2 * 64 // 16  # 2 epochs of 64 training images in batches of 16
    config = json.loads((run_dir / "model" / "adapter_config.json").read_text())
    # The schedule ran over the run's own step count (not the placeholder the model was built with)...
    assert config["total_step"] == steps and config["tfinal"] == int(0.2 * steps)
    # ...and the budget was cut to target_r per target on average: 8 targets, 4 ranks each -> 8 kept.
    kept = {name: sum(mask) for name, mask in config["rank_pattern"].items()}
    assert len(kept) == 8 and sum(kept.values()) == 8 * 1
    with safe_open(run_dir / "model" / "adapter_model.safetensors", "pt") as f:  # saved at the pruned ranks
        assert sum(f.get_tensor(k).shape[0] for k in f.keys() if "lora_E" in k) == 8
    logits, labels = eval_logits(run_dir)
    assert float((logits.argmax(-1) == labels).mean()) == record.best  # reloads as it was selected

    spec, _, model = prepared(tmp_path / "p", "peft=adalora")
    pixels, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    out = model(pixel_values=pixels, labels=labels)
    assert out.loss.item() > F.cross_entropy(out.logits, labels).item() + 1e-3


def adapter_file(tmp_path):
    """A real adapter_config.json, written by peft's own save_pretrained (RandLoRA on raw module names)."""
    from peft import RandLoraConfig, get_peft_model
    from transformers import ViTConfig, ViTForImageClassification

    vit = ViTForImageClassification(
        ViTConfig(
            hidden_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=128,
            image_size=32,
            patch_size=4,
        )
    )
    get_peft_model(vit, RandLoraConfig(r=8, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "exp")
    return tmp_path / "exp" / "adapter_config.json"


@pytest.mark.slow
def test_a_tuner_from_an_adapter_config_file_trains_end_to_end_and_reloads_without_the_file(tmp_path):
    file = adapter_file(tmp_path)
    run_dir = tmp_path / "run"
    record = train(
        compose_config(
            *TINY_QUIET, NO_EXAMPLES, "peft=peft_config", f"peft.file={file}", "train.epochs=1", output_dir=run_dir
        )
    )
    assert record.method == "randlora"
    saved = json.loads((run_dir / "model" / "peft_food.json").read_text())["peft"]
    assert saved["file"] is None and saved["config"]["peft_type"] == "RANDLORA" and saved["config"]["r"] == 8
    file.unlink()  # the run holds its own copy of the config
    logits, labels = eval_logits(run_dir)
    assert float((logits.argmax(-1) == labels).mean()) == record.best


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["peft=peft_config"], "needs exactly one of peft.config"),
        (
            ["peft=peft_config", "peft.config={peft_type: PREFIX_TUNING}"],
            "peft_type=PREFIX_TUNING does not apply here: it adds past key/values",
        ),
        (["peft=peft_config", "peft.config={r: 4}"], "peft.config has no peft_type"),
        (
            ["peft=peft_config", "peft.file=/nonexistent/adapter_config.json"],
            "does not exist: pass the path of an adapter_config.json",
        ),
        (
            ["peft=lora", "peft.init_lora_weights=eva"],
            "peft.init_lora_weights=eva is invalid: choose one of true, gaussian",
        ),
        (["peft=lora", "peft.r=3", "peft.init_lora_weights=orthogonal"], "use an even rank"),
        (["peft=hra", "peft.r=3"], "HRA's r must be even"),
        (["peft=adalora", "peft.target_r=16"], "peft.target_r=16 is invalid: it must not exceed peft.init_r=12"),
        (["peft=adalora", "peft.tinit_fraction=0.5", "peft.tfinal_fraction=0.5"], "keep their sum below 1"),
    ],
)
def test_bad_tuner_settings_are_one_line_when_parsed(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        spec_of(*overrides)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not JSON"),
        ('{"r": 8, "target_modules": ["q_proj"]}', r"is not a peft adapter config \(no peft_type\)"),
    ],
)
def test_a_file_that_is_not_an_adapter_config_is_refused(tmp_path, content, message):
    (tmp_path / "adapter_config.json").write_text(content)
    with pytest.raises(ConfigError, match=message):
        parse_config(
            compose_config(
                "peft=peft_config", f"peft.file={tmp_path / 'adapter_config.json'}", output_dir="/tmp/unused"
            )
        )


@pytest.mark.parametrize(
    "config, message",
    [
        ("{peft_type: FOO}", "peft_type=FOO is not a peft tuner: choose one of "),
        (
            "{peft_type: C3A, block_sise: 16}",
            "peft.config.block_sise is not a field of C3AConfig: did you mean block_size?",
        ),
        ("{peft_type: C3A, block_size: 7}", "peft=peft_config does not fit model=vit_tiny"),
    ],
)
def test_an_unknown_tuner_or_field_fails_before_any_data_is_read(tmp_path, config, message):
    # The data folder does not exist: a DataError would mean the data was reached first.
    cfg = compose_config(
        *TINY_TRAIN,
        NO_WANDB,
        "peft=peft_config",
        f"peft.config={config}",
        "data=imagefolder",
        f"data.root={tmp_path / 'no_photos'}",
        output_dir=tmp_path / "run",
    )
    with pytest.raises(ConfigError, match=message) as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert "C3A" in str(err.value) or "FOO" not in config  # the list names the tuners that apply
