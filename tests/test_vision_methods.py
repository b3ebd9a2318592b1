"""The vision-PETL methods peft lacks (VPT, SSF, AdaptFormer, Houlsby / Pfeiffer adapters): their
parameter arithmetic on ViT-B/16 from each method's definition, the untrained model being the base
model, what VPT does to the sequence, and each trained, saved, reloaded, predicted and exported
(SSF folds into a plain transformers model; the others stop with one line)."""

import copy
import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

from peft_food.cli.export import main as export_cli
from peft_food.cli.predict import main as predict
from peft_food.config import parse_config
from peft_food.errors import ConfigError
from peft_food.methods.apply import apply_peft
from peft_food.model.backbone import base_config, load_base
from peft_food.saved.artifacts import load_trained
from peft_food.saved.export import export
from peft_food.training.pipeline import train
from tests.helpers import (
    NO_EXAMPLES,
    TINY,
    TINY_QUIET,
    check_fp16_autocast_training,
    compose_config,
    eval_logits,
    spec_of,
)

# ViT-B/16: width, MLP width, layers; the 101-way head trains with every method.
D, MLP, LAYERS = 768, 3072, 12
HEAD = D * 101 + 101
LABELS = [f"food_{i}" for i in range(101)]


def bottleneck(width: int, dim: int = D) -> int:
    """down (dim x w + w) + up (w x dim + dim): one AdaptFormer branch or one adapter."""
    return dim * width + width + width * dim + dim


def vit_b(*overrides: str) -> torch.nn.Module:
    """ViT-B/16 with a 101-way head and the method applied, on the meta device (no memory, no Hub)."""
    spec = spec_of("model=vit_base", "model.pretrained=false", *overrides)
    with torch.device("meta"):
        base = AutoModelForImageClassification.from_config(base_config(spec.model, labels=LABELS))
        return apply_peft(base, peft=spec.peft, model=spec.model)


def trainable(model: torch.nn.Module) -> tuple[int, int]:
    """Trainable parameters without the head, and with it."""
    named = [(n, p.numel()) for n, p in model.named_parameters() if p.requires_grad]
    return sum(k for n, k in named if not n.startswith("classifier.")), sum(k for _, k in named)


def test_ssf_on_vit_b_is_the_papers_205_824_plus_the_head():
    # After the patch embedding (768 scale + 768 shift), each block's norm1, q, k, v, attention out,
    # norm2 (768 each), fc1 (3,072) and fc2 (768), and the final norm: two vectors each.
    per_block = 2 * (D + 3 * D + D + D + MLP + D)
    expected = 2 * D + LAYERS * per_block + 2 * D
    assert (per_block, expected) == (16_896, 205_824)
    assert trainable(vit_b("peft=ssf")) == (expected, expected + HEAD)


@pytest.mark.parametrize("prompts", [1, 10, 50])
@pytest.mark.parametrize("deep", [False, True])
def test_vpt_on_vit_b_is_p_x_768_shallow_and_12_times_that_deep(prompts, deep):
    expected = prompts * D * (LAYERS if deep else 1)
    got = trainable(vit_b("peft=vpt", f"peft.prompts={prompts}", f"peft.deep={str(deep).lower()}"))
    assert got == (expected, expected + HEAD)


@pytest.mark.parametrize("width", [1, 8, 64])
def test_adaptformer_on_vit_b_is_one_bottleneck_per_block(width):
    expected = LAYERS * bottleneck(width)
    if width == 8:
        assert expected == 156_768  # the paper's count at bottleneck 8
    assert trainable(vit_b("peft=adaptformer", f"peft.width={width}")) == (expected, expected + HEAD)


@pytest.mark.parametrize("placement, per_block", [("houlsby", 2), ("pfeiffer", 1)])
@pytest.mark.parametrize("width", [8, 48])
def test_adapters_on_vit_b_are_one_bottleneck_per_sublayer_they_follow(placement, per_block, width):
    expected = LAYERS * per_block * bottleneck(width)
    got = trainable(vit_b("peft=adapter", f"peft.placement={placement}", f"peft.width={width}"))
    assert got == (expected, expected + HEAD)


# Tiny models with real (random) weights, for what the forward pass does.
@functools.cache
def tiny_spec(model: str, *overrides: str):
    """spec_of the tiny config, composed once per model and overrides (several tests build the same)."""
    return spec_of(*TINY, f"model={model}", *overrides)


def tiny(*overrides: str, model: str = "vit_tiny") -> tuple[torch.nn.Module, torch.nn.Module]:
    """A random-init tiny base and a deep copy of it with the method applied, both in eval mode."""
    spec = tiny_spec(model, *overrides)
    torch.manual_seed(0)
    base, _ = load_base(model=spec.model, labels=["a", "b", "c", "d"])
    return base.eval(), apply_peft(copy.deepcopy(base), peft=spec.peft, model=spec.model).eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))).logits


SSF, ADAPTFORMER, HOULSBY, PFEIFFER = (
    ("peft=ssf",),
    ("peft=adaptformer",),
    ("peft=adapter",),
    ("peft=adapter", "peft.placement=pfeiffer"),
)
# Each zero-initialised method on ViT, and on DINOv2 (layer scale, norm2) and Swin (its blocks return
# (hidden states, attention weights): the hooks must take tuples too) where its hooks differ.
IDENTITY_CASES = [
    (SSF, "vit_tiny"),
    (ADAPTFORMER, "vit_tiny"),
    (HOULSBY, "vit_tiny"),
    (PFEIFFER, "vit_tiny"),
    (SSF, "dinov2_tiny"),
    (ADAPTFORMER, "dinov2_tiny"),
    (HOULSBY, "dinov2_tiny"),
    (ADAPTFORMER, "swin_tiny"),
    (HOULSBY, "swin_tiny"),
]


@pytest.mark.parametrize("overrides, model", IDENTITY_CASES, ids=lambda o: " ".join(o) if isinstance(o, tuple) else o)
def test_untrained_method_gives_the_base_models_logits_exactly_and_its_modules_are_live(overrides, model):
    base, adapted = tiny(*overrides, model=model)
    assert torch.equal(logits(adapted), logits(base))  # scale 1 / shift 0; zero up-projections
    with torch.no_grad():  # the modules really are in the forward pass: moved, they change the logits
        for name, param in adapted.named_parameters():
            if param.requires_grad and not name.startswith("classifier."):
                param.add_(0.1 * torch.randn_like(param))
    assert not torch.allclose(logits(adapted), logits(base), atol=1e-3)


def expected_names(method: str, base: torch.nn.Module, *, deep: bool = False, placement: str = "houlsby") -> set[str]:
    """What each method's definition says trains on the tiny ViT (4 layers), besides the head."""
    layers = range(len(base.vit.layers))
    if method == "ssf":
        hosts = [
            n
            for n, m in base.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Conv2d)) and n != "classifier"
        ]
        assert len(hosts) == 1 + 4 * 8 + 1  # patch embedding, 8 per block, final norm
        return {f"{n}.ssf.{p}" for n in hosts for p in ("scale", "shift")}
    if method == "vpt":
        return {"vit.embeddings.vpt.prompts"} | (
            {f"vit.layers.{i}.vpt.prompts" for i in layers if i} if deep else set()
        )
    linear = {f"{m}.{p}" for m in ("down", "up") for p in ("weight", "bias")}
    if method == "adaptformer":
        return {f"vit.layers.{i}.adaptformer.{p}" for i in layers for p in linear}
    hosts = ["mlp.fc2"] + (["attention.o_proj"] if placement == "houlsby" else [])
    return {f"vit.layers.{i}.{h}.adapter.{p}" for i in layers for h in hosts for p in linear}


@pytest.mark.parametrize(
    "method, kwargs",
    [
        ("ssf", {}),
        ("vpt", {}),
        ("vpt", {"deep": True}),
        ("adaptformer", {}),
        ("adapter", {}),
        ("adapter", {"placement": "pfeiffer"}),
    ],
)
def test_exactly_the_parameters_the_method_names_train_and_the_base_is_untouched(method, kwargs):
    overrides = [f"peft={method}", *(f"peft.{k}={str(v).lower()}" for k, v in kwargs.items())]
    base, adapted = tiny(*overrides)
    trained = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trained == expected_names(method, base, **kwargs) | {"classifier.weight", "classifier.bias"}
    # Every parameter of the base is still there under its own name, unchanged and (but the head) frozen.
    params = dict(adapted.named_parameters())
    for name, param in base.named_parameters():
        assert torch.equal(params[name], param) and params[name].requires_grad == name.startswith("classifier.")


def sequence_lengths(model: torch.nn.Module) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each layer's input hidden states and the final norm's output, from one forward pass."""
    seen, final = [], []
    hooks = [layer.register_forward_pre_hook(lambda m, args: seen.append(args[0])) for layer in model.base_model.layers]
    hooks.append(model.base_model.layernorm.register_forward_hook(lambda m, args, out: final.append(out)))
    logits(model)
    for hook in hooks:
        hook.remove()
    return seen, final[0]


@pytest.mark.parametrize("model, tokens", [("vit_tiny", 1), ("deit_tiny", 2)])  # DeiT: [CLS] + distillation
@pytest.mark.parametrize("deep", [False, True])
def test_vpt_grows_the_sequence_by_the_prompts_at_every_layer_and_deep_replaces_them(deep, model, tokens):
    p, patches = 3, (32 // 4) ** 2
    base, adapted = tiny("peft=vpt", f"peft.prompts={p}", f"peft.deep={str(deep).lower()}", model=model)
    inputs, out = sequence_lengths(adapted)
    assert [h.shape[1] for h in inputs] == [tokens + p + patches] * 4
    assert out.shape[1] == tokens + patches  # the head sees the base's tokens, in the base's places
    prompts = adapted.base_model.embeddings.vpt.prompts
    assert torch.equal(inputs[0][:, 1 : 1 + p], prompts.expand(4, -1, -1))  # right after [CLS], at the input
    for i in range(1, 4):
        at_layer = inputs[i][:, 1 : 1 + p]
        if deep:  # this layer's own set replaced what layer i-1 made of the previous one
            assert torch.equal(at_layer, adapted.base_model.layers[i].vpt.prompts.expand(4, -1, -1))
        else:  # shallow: the input prompts, as the previous layers transformed them
            assert not torch.allclose(at_layer, prompts.expand(4, -1, -1))
    base_inputs, _ = sequence_lengths(base)
    assert torch.equal(inputs[0][:, 1 + p :], base_inputs[0][:, 1:])  # [CLS] and patches as the base embeds them
    assert not torch.allclose(logits(adapted), logits(base))  # the prompts reach [CLS]


def test_vpt_prompts_never_enter_dinov2s_patch_mean():
    p = 3
    _, adapted = tiny("peft=vpt", f"peft.prompts={p}", model="dinov2_tiny")
    norm, seen = adapted.dinov2.layernorm, {}
    hooks = [
        norm.register_forward_pre_hook(lambda m, args: seen.update(sequence=args[0])),
        adapted.classifier.register_forward_pre_hook(lambda m, args: seen.update(head=args[0])),
    ]
    logits(adapted)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        normed = torch.nn.functional.layer_norm(
            seen["sequence"], norm.normalized_shape, norm.weight, norm.bias, norm.eps
        )
    assert seen["sequence"].shape[1] == 1 + p + 64  # the prompts went through the encoder
    patch_mean = normed[:, 1 + p :].mean(1)
    assert torch.allclose(seen["head"], torch.cat([normed[:, 0], patch_mean], dim=1), atol=1e-6)
    with_prompts = normed[:, 1:].mean(1)
    assert not torch.allclose(seen["head"][:, 64:], with_prompts, atol=1e-3)


RUNS = [
    ("peft=ssf",),
    ("peft=vpt", "peft.prompts=4"),
    ("peft=vpt", "peft.prompts=4", "peft.deep=true"),
    ("peft=adaptformer",),
    ("peft=adapter", "peft.width=8"),
]  # pfeiffer saves and loads as houlsby does


@pytest.mark.parametrize("overrides", RUNS, ids=lambda o: " ".join(o))
def test_each_method_trains_saves_what_trained_reloads_exactly_predicts_and_exports(overrides, tmp_path, capsys):
    run_dir = tmp_path / "run"
    record = train(compose_config(*TINY_QUIET, NO_EXAMPLES, *overrides, "train.epochs=1", output_dir=run_dir))
    method = overrides[0].removeprefix("peft=")
    # The record names VPT-deep's variant (its label), so tables tell it from shallow VPT.
    assert record.status == "completed" and record.method == ("vpt_deep" if "peft.deep=true" in overrides else method)
    saved = {p.name for p in (run_dir / "model").iterdir()}
    assert "trained.safetensors" in saved and "model.safetensors" not in saved  # the frozen base is in base/

    # Only what trained is saved, all of it: the reloaded model's trainable tensors, by name.
    trained = load_trained(run_dir)
    from safetensors import safe_open

    with safe_open(run_dir / "model" / "trained.safetensors", "pt") as f:
        names = set(f.keys())
        assert sum(f.get_tensor(k).numel() for k in names) == record.counts.trainable_params
    assert names == {n for n, p in trained.model.named_parameters() if p.requires_grad}

    # Reloaded from files, the model gives the logits training evaluated: same accuracy, same loss.
    got, labels = eval_logits(run_dir)
    assert float((got.argmax(-1) == labels).mean()) == record.best
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(got), torch.from_numpy(labels)).item()
    assert loss == pytest.approx(record.best_epoch["eval_loss"], abs=1e-5)

    image = tmp_path / "dish.png"
    Image.fromarray(np.full((40, 40, 3), 120, dtype=np.uint8)).save(image)
    assert predict([str(run_dir), str(image), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["predictions"][0]["label"] in record.labels

    if method == "ssf":
        check_ssf_export(run_dir, tmp_path / "exported", expected=got, labels=record.labels, image=image)
    else:  # nothing to fold: one line saying why and what to use instead, and no export written
        assert export_cli([str(run_dir), str(tmp_path / "exported")]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert (
            line.startswith(
                f"peft-food-export: error: peft={method} cannot be exported as a plain transformers model: "
            )
            and "peft-food-predict <run dir>" in line
        )
        assert not (tmp_path / "exported" / "model.safetensors").exists()
        # The run's model card says so too, instead of offering the export.
        card = (run_dir / "model" / "README.md").read_text()
        assert "does not export as a plain model" in card and "peft-food-export" not in card.split("## Training")[0]


def check_ssf_export(run_dir, out_dir, *, expected, labels, image):
    """The folded export is the plain architecture (no SSF tensors), loads in transformers, and gives
    the SSF model's logits."""
    export(run_dir, out_dir)
    plain = AutoModelForImageClassification.from_pretrained(str(out_dir)).eval()
    assert not any(".ssf." in n for n, _ in plain.state_dict().items())
    base = AutoModelForImageClassification.from_pretrained(str(run_dir / "model" / "base"))
    assert set(plain.state_dict()) == set(base.state_dict())
    moved = [p for n, p in load_trained(run_dir).model.named_parameters() if n.endswith(".ssf.scale")]
    assert any(not torch.all(p == 1) for p in moved)  # trained: the fold is not the identity
    folded, _ = eval_logits(out_dir)
    assert np.allclose(folded, expected, atol=1e-5)
    top = pipeline("image-classification", model=str(out_dir))(Image.open(image))
    assert top[0]["label"] in labels


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["peft=vpt", "peft.prompts=0"], "peft.prompts=0 is invalid: prompts of peft=vpt must be positive"),
        (["peft=adapter", "peft.width=0"], "peft.width=0 is invalid: width of peft=adapter must be positive"),
        (["peft=adaptformer", "peft.width=0"], "peft.width=0 is invalid: width of peft=adaptformer must be positive"),
        (["peft=adapter", "peft.placement=middle"], "peft.placement='middle' is invalid: use houlsby or pfeiffer"),
        (
            ["peft=adaptformer", "peft.scale=0"],
            "peft.scale=0.0 is invalid: the branch's output scale s must be positive",
        ),
        (["peft=vpt", "model=swin_tiny"], "peft=vpt supports ViT, DeiT, DINOv2 backbones"),
    ],
)
def test_bad_input_fails_with_one_line_before_any_data_is_read(overrides, message, tmp_path):
    # data=imagefolder on a folder that does not exist: reading any data would raise a DataError.
    cfg = compose_config(
        *TINY_QUIET,
        "data=imagefolder",
        f"data.root={tmp_path / 'no_data'}",
        *overrides,
        output_dir=tmp_path / "run",
    )
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("override", ["peft.r=4", "peft.prompt=4", "peft.widht=8"])
def test_a_key_the_method_lacks_fails_when_composed(override):
    from hydra.errors import HydraException

    method = {"peft.r=4": "ssf", "peft.prompt=4": "vpt", "peft.widht=8": "adaptformer"}[override]
    with pytest.raises(HydraException, match="Could not override"):
        compose_config(f"peft={method}", override)


@pytest.mark.parametrize(
    "overrides",
    [("peft=ssf",), ("peft=vpt", "peft.deep=true"), ("peft=adaptformer",), ("peft=adapter",)],
    ids=lambda o: " ".join(o),
)
def test_each_method_trains_under_fp16_autocast_and_only_its_own_tensors_move(overrides):
    # The GPU recipe's fp16 (autocast over fp32 weights, loss scaling), on the CPU's fp16 autocast:
    # the added modules take half-precision activations and hand them on in the model's dtype.
    _, model = tiny(*overrides)  # eval mode: no dropout, so the loss curve is the optimiser's alone
    pixels, labels = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.arange(8) % 4
    check_fp16_autocast_training(model, steps=4, pixels=pixels, labels=labels)


def sweep_jobs(*overrides: str) -> list:
    """The jobs `peft-food-train -m <overrides>` runs, each parsed into its typed specs (as the
    sweep's own check composes them before the first job), without training any."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from peft_food.config import CONF_DIR
    from peft_food.tracking.sweep import check_grid, grid_jobs

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        hydra_cfg = compose(config_name="train", overrides=list(TINY), return_hydra_config=True).hydra
        with open_dict(hydra_cfg):  # the command line's overrides, as Hydra's multirun records them
            hydra_cfg.overrides.task = [*TINY, *overrides]
        check_grid(hydra_cfg)
        return [
            parse_config(compose(config_name="train", overrides=[*job, "output_dir=/x"]))
            for job, _ in grid_jobs(hydra_cfg)
        ]


def test_methods_that_share_a_key_sweep_together_and_one_that_lacks_it_stops_the_sweep(capsys):
    specs = sweep_jobs("peft=adaptformer,adapter", "peft.width=2,4")
    assert sorted((s.peft.method, s.peft.width) for s in specs) == [
        ("adapter", 2),
        ("adapter", 4),
        ("adaptformer", 2),
        ("adaptformer", 4),
    ]
    with pytest.raises(SystemExit) as stopped:
        sweep_jobs("peft=adaptformer,ssf", "peft.width=2,4")
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "sweep job `peft=ssf peft.width=2` is not a valid config" in line and "no job was run" in line
