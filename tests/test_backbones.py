"""The backbones of issue 31 (CLIP, SigLIP, DINOv2-B, BEiT, timm's ViT-B/16 in21k and MAE, EVA-02):
each real config built offline on the meta device and every method's trainable count checked against
the architecture's arithmetic; each as a toy (the shipped config shrunk in-process, random weights,
CPU) trained by LoRA, full fine-tuning, a linear probe, BitFit, SSF, AdaptFormer and VPT, saved,
reloaded, predicted and exported, or refused in one line; what each head reads; gradient checkpointing.
"""

import copy
import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification

from peft_food.cli.export import main as export_cli
from peft_food.cli.predict import main as predict
from peft_food.config import ModelSpec, RunSpec, parse_config
from peft_food.data.splits import load_splits
from peft_food.data.transforms import attach_transforms, collate, normalize
from peft_food.errors import ConfigError
from peft_food.methods.apply import apply_peft
from peft_food.model.backbone import base_config, load_base, load_processor
from peft_food.model.timm_models import timm_processor
from peft_food.saved.artifacts import load_trained
from peft_food.saved.export import export
from peft_food.training.pipeline import train
from tests.helpers import NO_EXAMPLES, NO_WANDB, TINY, compose_config

# ---------------------------------------------------------------- the real (B-size) configs, on meta
D, MLP, LAYERS, CLASSES = 768, 3072, 12, 101
LABELS = [f"food_{i}" for i in range(CLASSES)]
SWIGLU = 2048  # EVA-02-B's SwiGLU width: int(768 * 4 * 2 / 3)


def bottleneck(width: int) -> int:
    return D * width + width + width * D + D


# Per backbone, from its architecture (each Linear's weight and bias, each LayerNorm's two vectors):
# full (backbone, no head), BitFit (its biases), SSF (a scale and shift per output channel of every
# Linear, LayerNorm and the patch convolution), and the head's input width.
VIT_BLOCK = 4 * D * D + 4 * D + 2 * D * MLP + MLP + D + 4 * D  # q,k,v,o + fc1, fc2 + 2 LayerNorms
VIT_BLOCK_BIASES = 4 * D + MLP + D + 2 * D
VIT_BLOCK_SSF = 2 * (4 * D + 2 * D + MLP + D)  # 16,896: the SSF paper's per block
EVA_BLOCK = 4 * D * D + 3 * D + 2 * D * SWIGLU + 2 * SWIGLU + 2 * SWIGLU + SWIGLU * D + D + 4 * D
EVA_BLOCK_BIASES = 3 * D + 2 * SWIGLU + SWIGLU + D + 2 * D  # q, v, proj; fc1_g, fc1_x; mlp.norm; fc2; 2 norms
EVA_BLOCK_SSF = 2 * (4 * D + 2 * D + 2 * SWIGLU + SWIGLU + D)
PATCH16, PATCH14 = 3 * 16 * 16 * D, 3 * 14 * 14 * D
REL_BIAS = ((2 * 14 - 1) ** 2 + 3) * 12  # BEiT: one (27^2 + 3) x heads table per layer
ARITHMETIC = {
    # patch conv (no bias) + [CLS] + 197 positions + pre-LN + blocks + post-LN (normalises the unread [CLS])
    "clip_b16": dict(
        full=PATCH16 + D + 197 * D + 2 * D + LAYERS * VIT_BLOCK + 2 * D,
        bitfit=D + LAYERS * VIT_BLOCK_BIASES + D,
        ssf=2 * D + 2 * D + LAYERS * VIT_BLOCK_SSF + 2 * D,
        head_in=D,
    ),
    # patch conv + 196 positions (no [CLS]) + blocks + post-LN; no attention-pooling head (not read)
    "siglip_b16": dict(
        full=PATCH16 + D + 196 * D + LAYERS * VIT_BLOCK + 2 * D,
        bitfit=D + LAYERS * VIT_BLOCK_BIASES + D,
        ssf=2 * D + LAYERS * VIT_BLOCK_SSF + 2 * D,
        head_in=D,
    ),
    # patch conv + [CLS] + mask token + 1 + 37^2 positions (518 / 14) + blocks with layer scale + LN
    "dinov2_base": dict(
        full=PATCH14 + D + D + D + 1370 * D + LAYERS * (VIT_BLOCK + 2 * D) + 2 * D,
        bitfit=D + LAYERS * VIT_BLOCK_BIASES + D,
        ssf=2 * D + LAYERS * VIT_BLOCK_SSF + 2 * D,
        head_in=2 * D,
    ),
    # patch conv + [CLS] + blocks (k without bias; layer scale; relative position bias) + pooler LN
    "beit_base": dict(
        full=PATCH16 + D + D + LAYERS * (VIT_BLOCK - D + 2 * D + REL_BIAS) + 2 * D,
        bitfit=D + LAYERS * (VIT_BLOCK_BIASES - D) + D,
        ssf=2 * D + LAYERS * VIT_BLOCK_SSF + 2 * D,
        head_in=D,
    ),
    # timm's ViT-B/16: fused qkv (3d outputs) holds the same numbers as q, k, v
    "timm_vit_b16_in21k": dict(
        full=PATCH16 + D + D + 197 * D + LAYERS * VIT_BLOCK + 2 * D,
        bitfit=D + LAYERS * VIT_BLOCK_BIASES + D,
        ssf=2 * D + LAYERS * VIT_BLOCK_SSF + 2 * D,
        head_in=D,
    ),
    "mae_b16": None,  # the same architecture: filled below
    # patch conv (14) + [CLS] + 257 positions + blocks (SwiGLU, k without bias) + fc_norm
    "eva02_b14": dict(
        full=PATCH14 + D + D + 257 * D + LAYERS * EVA_BLOCK + 2 * D,
        bitfit=D + LAYERS * EVA_BLOCK_BIASES + D,
        ssf=2 * D + LAYERS * EVA_BLOCK_SSF + 2 * D,
        head_in=D,
    ),
}
ARITHMETIC["mae_b16"] = ARITHMETIC["timm_vit_b16_in21k"]
# The numbers papers quote for ViT-B/16 come out of that arithmetic.
assert ARITHMETIC["timm_vit_b16_in21k"]["full"] == 85_798_656
assert ARITHMETIC["timm_vit_b16_in21k"]["bitfit"] == 102_912 and ARITHMETIC["timm_vit_b16_in21k"]["ssf"] == 205_824
# VPT takes prompts on these (the others refuse it).
PROMPTED = {"clip_b16", "dinov2_base", "timm_vit_b16_in21k", "mae_b16"}


@functools.cache
def real_model(model: str) -> ModelSpec:
    """The real config's model spec (composed once per model)."""
    return parse_config(compose_config(f"model={model}", "model.pretrained=false", output_dir="/tmp/x")).model


@functools.cache
def method_spec(*overrides: str):
    """A method's spec (composed once per method): the same on every backbone, as no peft/*.yaml
    reads a model key (the model is applied to it in apply_peft)."""
    return parse_config(compose_config(*overrides, output_dir="/tmp/x")).peft


@functools.cache
def meta_base(model: str) -> torch.nn.Module:
    """The real config's architecture with a 101-way head, on the meta device (built once per model)."""
    with torch.device("meta"):
        return AutoModelForImageClassification.from_config(base_config(real_model(model), labels=LABELS))


def on_meta(model: str, *overrides: str) -> tuple[torch.nn.Module, str]:
    """That architecture with the method applied (to a copy), and the name of its head."""
    spec = real_model(model)
    return apply_peft(copy.deepcopy(meta_base(model)), peft=method_spec(*overrides), model=spec), spec.head


def trainable(model: str, *overrides: str) -> tuple[int, int]:
    """(trainable parameters without the head, the head's)."""
    built, head = on_meta(model, *overrides)
    named = [(n, p.numel()) for n, p in built.named_parameters() if p.requires_grad]
    in_head = [k for n, k in named if f"{head}." in f".{n}" and "lora_" not in n]
    return sum(k for _, k in named) - sum(in_head), sum(in_head)


def expected(model: str, method: str) -> int:
    arithmetic = ARITHMETIC[model]
    return {
        "full": arithmetic["full"],
        "linear_probe": 0,
        "bitfit": arithmetic["bitfit"],
        "ssf": arithmetic["ssf"],
        "lora": LAYERS * 2 * 8 * (D + D),  # r=8 on q and v; timm's fused qkv: r x (768 + 2304), the same
        "adaptformer": LAYERS * bottleneck(8),
        "vpt": 10 * D,
        "vpt_deep": 10 * D * LAYERS,
    }[method]


METHOD_OVERRIDES = {
    "full": ["peft=full"],
    "linear_probe": ["peft=linear_probe"],
    "bitfit": ["peft=bitfit"],
    "ssf": ["peft=ssf"],
    "lora": ["peft=lora", "peft.r=8"],
    "adaptformer": ["peft=adaptformer", "peft.width=8"],
    "vpt": ["peft=vpt", "peft.prompts=10"],
    "vpt_deep": ["peft=vpt", "peft.prompts=10", "peft.deep=true"],
}
META_CASES = [
    (model, method)
    for model in ARITHMETIC
    for method in METHOD_OVERRIDES
    if not method.startswith("vpt") or model in PROMPTED
]


@pytest.mark.parametrize("model, method", META_CASES)
def test_each_real_backbone_trains_what_the_methods_arithmetic_says(model, method):
    body, head = trainable(model, *METHOD_OVERRIDES[method])
    assert head == ARITHMETIC[model]["head_in"] * CLASSES + CLASSES  # the new 101-way head trains with every method
    assert body == expected(model, method)


def test_lora_on_timms_fused_qkv_adapts_the_whole_projection():
    # query and value both name the fused qkv: one LoRA pair per block, A (r x 768) and B (2304 x r).
    built, _ = on_meta("timm_vit_b16_in21k", "peft=lora", "peft.r=8")
    pairs = {n.rsplit(".lora_", 1)[0]: p.shape for n, p in built.named_parameters() if "lora_B" in n}
    assert len(pairs) == LAYERS and all(name.endswith("attn.qkv") for name in pairs)
    assert {tuple(shape) for shape in pairs.values()} == {(3 * D, 8)}


# ------------------------------------------------------------------- toys: the configs shrunk, on CPU
HF_VISION = [
    f"model.arch.vision_config.{k}={v}"
    for k, v in dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=4
    ).items()
]
CROP_32 = ["model.processor.size={shortest_edge:36}", "model.processor.crop_size={height:32,width:32}"]
TIMM_TINY = "embed_dim:64,depth:2,num_heads:4,img_size:32,patch_size:4"
TOYS = {
    "clip_b16": [*HF_VISION, *CROP_32],
    "siglip_b16": [*HF_VISION, "model.processor.size={height:32,width:32}"],
    "beit_base": [
        *(f"model.arch.{k}={v}" for k, v in dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2).items()),
        "model.arch.num_attention_heads=4",
        "model.arch.image_size=32",
        "model.arch.patch_size=4",
        "model.processor.size={height:32,width:32}",
    ],
    "timm_vit_b16_in21k": [f"model.arch.model_args={{{TIMM_TINY}}}", *CROP_32],
    "eva02_b14": [f"model.arch.model_args={{{TIMM_TINY},ref_feat_shape:[8,8]}}", *CROP_32],
}
METHODS = ["lora", "full", "linear_probe", "bitfit", "ssf", "adaptformer", "vpt"]
# Pairs refused in one line before any data is read, and why.
REFUSED = {
    ("siglip_b16", "vpt"): "SigLIP has no [CLS] token for prompts to follow",
    ("beit_base", "vpt"): "BEiT's relative position bias is sized for [CLS] + the patch grid",
    ("eva02_b14", "vpt"): "its rotary position embedding (RoPE)",
}
# SSF folds into the layer before it only where that layer has a bias (the CLIP patch convolution,
# BEiT's and EVA-02's key projections have none); AdaptFormer and VPT never fold.
NO_SSF_EXPORT = {"clip_b16": "patch_embedding", "beit_base": "k_proj", "eva02_b14": "k_proj"}
# A few images: 4 classes x 4 (val and test 4 x 2); no examples figure (nothing here reads it).
FEW = ["data.per_class=4", "data.val_per_class=2", "data.test_per_class=2", "train.epochs=1", NO_WANDB, NO_EXAMPLES]


def toy(model: str, *overrides: str, output_dir="/tmp/x"):
    return compose_config(*TINY, f"model={model}", "model.pretrained=false", *TOYS[model], *FEW, *overrides,
                          output_dir=output_dir)  # fmt: skip


@pytest.fixture(scope="session", params=sorted(TOYS))
def toy_runs(request, tmp_path_factory):
    """One backbone's toy trained once by every method it takes (1 epoch, 16 images)."""
    model, runs = request.param, {}
    for method in METHODS:
        if (model, method) not in REFUSED:
            run_dir = tmp_path_factory.mktemp(f"{model}_{method}")
            runs[method] = run_dir, train(toy(model, *METHOD_OVERRIDES[method], output_dir=run_dir))
    return model, runs


@functools.cache
def toy_spec(model: str, *overrides: str) -> RunSpec:
    """The toy's typed specs, composed once per toy and overrides (read, never changed)."""
    return parse_config(toy(model, *overrides))


# Each toy's val split as the model's input, by the processor settings (saved JSON) it was prepared
# with: the same tensor for every run and export of that toy with those settings, prepared once.
VAL_BATCHES: dict[tuple[str, str], tuple[torch.Tensor, np.ndarray]] = {}


def logits_of(source, model: str) -> tuple[np.ndarray, np.ndarray]:
    """A saved model's (run dir or export) logits on the toy's val split, and the labels."""
    trained = load_trained(source)
    key = (model, trained.processor.to_json_string())
    if key not in VAL_BATCHES:
        splits = attach_transforms(load_splits(toy_spec(model).data, seed=42), trained.processor)
        batch = collate([splits.val[i] for i in range(len(splits.val))])
        pixels = normalize(batch["pixel_values"], mean=trained.processor.image_mean, std=trained.processor.image_std)
        VAL_BATCHES[key] = pixels, batch["labels"].numpy()
    pixels, labels = VAL_BATCHES[key]
    with torch.inference_mode():
        return trained.model(pixel_values=pixels).logits.numpy(), labels


@functools.cache
def run_logits(run_dir, model: str) -> tuple[np.ndarray, np.ndarray]:
    """logits_of a toy's run dir, computed once (the two tests below read the same saved files)."""
    return logits_of(run_dir, model)


@pytest.mark.parametrize("method", METHODS)
def test_each_toy_trains_saves_what_trained_and_reloads_exactly(toy_runs, method):
    model, runs = toy_runs
    if (model, method) in REFUSED:
        pytest.skip(f"{model} refuses {method} (test_refused_pairs_fail_in_one_line_before_any_data)")
    run_dir, record = runs[method]
    assert record.status == "completed"
    got, labels = run_logits(run_dir, model)  # reloaded from files alone
    assert float((got.argmax(-1) == labels).mean()) == record.best
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(got), torch.from_numpy(labels)).item()
    assert loss == pytest.approx(record.best_epoch["eval_loss"], abs=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_each_toy_predicts_and_exports_or_says_why_not(toy_runs, method, tmp_path, capsys):
    model, runs = toy_runs
    if (model, method) in REFUSED:
        pytest.skip(f"{model} refuses {method}")
    run_dir, record = runs[method]
    image = tmp_path / "dish.png"
    Image.fromarray(np.full((40, 40, 3), 120, dtype=np.uint8)).save(image)
    assert predict([str(run_dir), str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"][0]["label"] in record.labels

    out = tmp_path / "exported"
    folds = method not in ("adaptformer", "vpt") and not (method == "ssf" and model in NO_SSF_EXPORT)
    if folds:  # a plain transformers model giving the run's logits
        export(run_dir, out)
        plain = AutoModelForImageClassification.from_pretrained(str(out))
        assert not any("lora_" in n or ".ssf." in n for n, _ in plain.named_parameters())
        assert np.allclose(logits_of(out, model)[0], run_logits(run_dir, model)[0], atol=1e-4)
    else:
        assert export_cli([str(run_dir), str(out)]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert f"peft={method} cannot be exported" in line and "peft-food-predict" in line
        assert NO_SSF_EXPORT.get(model, "") in line if method == "ssf" else True
        assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("model, method", sorted(REFUSED))
def test_refused_pairs_fail_in_one_line_before_any_data(model, method, tmp_path):
    cfg = toy(
        model, *METHOD_OVERRIDES[method], "data=imagefolder", f"data.root={tmp_path / 'none'}", output_dir=tmp_path
    )
    with pytest.raises(ConfigError) as err:
        train(cfg)  # reading data would raise a DataError: the refusal comes first
    assert REFUSED[model, method] in str(err.value) and len(str(err.value).splitlines()) == 1


# What each head reads of the final sequence (docs/backbones.md's table), by its definition.
def head_input(model: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the classifier got, what the documented pooling gives) on a random batch of the toy."""
    spec = toy_spec(model)
    torch.manual_seed(0)
    base, _ = load_base(model=spec.model, labels=["a", "b", "c"])
    base.eval()
    seen = {}
    head = base.get_submodule(spec.model.head)
    head.register_forward_pre_hook(lambda m, args: seen.update(head=args[0]))
    sequence = {
        "clip_b16": lambda: base.vision_model.encoder.layers[-1],
        "siglip_b16": lambda: base.vision_model.post_layernorm,
        "beit_base": lambda: base.beit.layers[-1],
        "timm_vit_b16_in21k": lambda: base.timm_model.norm,
        "eva02_b14": lambda: base.timm_model.norm,
    }[model]()
    sequence.register_forward_hook(lambda m, a, out: seen.update(seq=out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        base(pixel_values=torch.randn(2, 3, 32, 32))
        seq = seen["seq"]
        pooled = {
            "clip_b16": lambda: seq[:, 1:].mean(1),  # patch mean, before post_layernorm
            "siglip_b16": lambda: seq.mean(1),  # every token: there is no [CLS]
            "beit_base": lambda: base.beit.pooler.layernorm(seq[:, 1:].mean(1)),
            "timm_vit_b16_in21k": lambda: seq[:, 0],  # [CLS] after the final norm
            "eva02_b14": lambda: base.timm_model.fc_norm(seq[:, 1:].mean(1)),
        }[model]()
    return seen["head"], pooled


@pytest.mark.parametrize("model", sorted(TOYS))
def test_each_head_reads_the_token_or_pooling_the_docs_say(model):
    got, documented = head_input(model)
    assert torch.allclose(got, documented, atol=1e-5)


# Gradient checkpointing, as Trainer switches it on, on each toy with LoRA (a frozen base).
class Runs(list):
    def hook(self, module, args, out):
        self.append(1)


def lora_grads(model: str, *, checkpointing: bool) -> tuple[dict, int]:
    spec = toy_spec(model, "peft=lora")
    torch.manual_seed(0)
    base, _ = load_base(model=spec.model, labels=["a", "b", "c"])
    peft_model = apply_peft(base, peft=spec.peft, model=spec.model).train()
    if checkpointing:
        peft_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    runs = Runs()
    first_block = next(m for n, m in peft_model.named_modules() if n.endswith(("layers.0", "blocks.0")))
    next(first_block.children()).register_forward_hook(runs.hook)
    torch.manual_seed(1)
    out = peft_model(pixel_values=torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}
    return grads, len(runs)


def check_checkpointing(model: str) -> None:
    (plain, once), (checkpointed, twice) = (lora_grads(model, checkpointing=c) for c in (False, True))
    assert (once, twice) == (1, 2)  # the backward pass ran the first block again
    assert plain.keys() == checkpointed.keys()
    inner = [n for n in plain if "lora_B" in n and ".0." in n]
    assert inner and all(checkpointed[n] is not None and checkpointed[n].abs().sum() > 0 for n in inner)
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("model", sorted(TOYS))
def test_gradient_checkpointing_recomputes_the_blocks_and_keeps_the_gradients(model):
    check_checkpointing(model)


def test_timm_checkpointing_passes_gradients_to_adapters_under_reentrant_checkpoints_too():
    # timm's reentrant checkpoint (TIMM_REENTRANT_CKPT=1) gives gradients only to blocks whose input
    # requires grad; behind the frozen patch embedding LoRA's would be None without the input hook.
    from timm.layers import set_reentrant_ckpt, use_reentrant_ckpt

    before = use_reentrant_ckpt()
    set_reentrant_ckpt(True)
    try:
        check_checkpointing("timm_vit_b16_in21k")
    finally:
        set_reentrant_ckpt(before)


# timm: offline builds of any id, and the processors the named files carry.
@pytest.mark.parametrize("model", ["timm_vit_b16_in21k", "mae_b16", "eva02_b14"])
def test_named_timm_files_carry_timms_own_preprocessing_for_their_checkpoint(model):
    spec = parse_config(compose_config(f"model={model}", "model.pretrained=false", output_dir="/tmp/x"))
    shipped, timms = load_processor(spec.model), timm_processor(spec.model.name_or_path)
    for key in ("size", "crop_size", "image_mean", "image_std"):
        assert getattr(shipped, key) == getattr(timms, key), key


def test_model_timm_builds_any_timm_id_offline_with_its_architecture_and_preprocessing():
    spec = parse_config(
        compose_config(
            "model=timm", "model.name_or_path=timm/vit_small_patch16_224.augreg_in21k", "model.pretrained=false",
            output_dir="/tmp/x",
        )
    )  # fmt: skip
    config = base_config(spec.model, labels=LABELS)
    assert config.architecture == "vit_small_patch16_224"
    with torch.device("meta"):
        built = AutoModelForImageClassification.from_config(config)
    backbone = sum(p.numel() for n, p in built.named_parameters() if not n.startswith("timm_model.head."))
    assert backbone / 1e6 == pytest.approx(21.7, rel=0.01)  # ViT-S/16
    processor = load_processor(spec.model)
    assert (processor.size["shortest_edge"], list(processor.image_mean)) == (248, [0.5, 0.5, 0.5])  # crop_pct 0.9


def test_model_timm_without_an_id_says_what_to_pass():
    with pytest.raises(ConfigError, match="model.pretrained=true needs model.name_or_path"):
        parse_config(compose_config("model=timm", output_dir="/tmp/x"))
