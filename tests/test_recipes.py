"""Each method as its paper ran it (docs/methods.md, "As each paper ran it"): VPT's per-image prompt
dropout, SSF's paper init, the bottleneck's init / scale / dropout keys, each checked against its
definition on the tiny ViT."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageClassification

from peft_food.config import parse_config
from peft_food.methods.added.hooks import Bottleneck, Prompts, ScaleShift
from peft_food.methods.apply import apply_peft
from peft_food.model.backbone import load_base
from peft_food.model.head import HeadNorm, init_head
from peft_food.saved.artifacts import load_trained
from peft_food.saved.export import export
from peft_food.training.pipeline import train
from tests.helpers import NO_EXAMPLES, NO_WANDB, TINY, compose_config, eval_logits


def tiny(*overrides: str, labels: int = 4) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A random-init tiny ViT and a deep copy of it with the method applied."""
    spec = parse_config(compose_config(*TINY, *overrides, output_dir="/tmp/x"))
    torch.manual_seed(0)
    base, _ = load_base(model=spec.model, labels=[f"l{i}" for i in range(labels)])
    return base, apply_peft(copy.deepcopy(base), peft=spec.peft, model=spec.model)


def pixels(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# VPT: KMnP/vpt src/models/vit_prompt/vit.py drops out after expanding the prompts over the batch.
def test_vpt_prompt_dropout_draws_one_mask_per_image_in_training_and_none_in_eval():
    prompts = Prompts(tokens=10, dim=64, patch_area=16, dropout=0.5)
    like = torch.zeros(8, 5, 64)
    batch = prompts.batch(like)
    assert batch.shape == (8, 10, 64)
    masks = batch == 0
    assert all(not torch.equal(masks[0], masks[i]) for i in range(1, 8))  # each image its own mask
    kept = batch[~masks]
    assert torch.allclose(kept, (prompts.prompts.expand(8, -1, -1) * 2)[~masks])  # inverted dropout
    prompts.eval()
    assert torch.equal(prompts.batch(like), prompts.prompts.expand(8, -1, -1))


@pytest.mark.parametrize("deep", ["false", "true"])
def test_vpt_in_eval_mode_is_deterministic_and_in_training_differs_per_image(deep):
    _, model = tiny("peft=vpt", "peft.prompts=4", "peft.dropout=0.5", f"peft.deep={deep}")
    same = pixels(1).expand(6, -1, -1, -1)  # one image six times: only dropout can tell them apart
    model.eval()
    with torch.no_grad():
        out = model(pixel_values=same).logits
    assert torch.allclose(out, out[:1].expand_as(out))
    model.train()
    with torch.no_grad():
        out = model(pixel_values=same).logits
    assert not torch.allclose(out[0], out[1])


# SSF: dongzelian/SSF models/vision_transformer.py init_ssf_scale_shift.
def test_ssf_paper_init_draws_scale_n_1_002_and_shift_n_0_002():
    torch.manual_seed(0)
    module = ScaleShift(200_000, conv=False, std=0.02)
    for tensor, mean in ((module.scale, 1.0), (module.shift, 0.0)):
        assert tensor.mean().item() == pytest.approx(mean, abs=3 * 0.02 / math.sqrt(200_000) * 2)
        assert tensor.std().item() == pytest.approx(0.02, rel=0.01)
    identity = ScaleShift(10, conv=False)
    assert torch.equal(identity.scale, torch.ones(10)) and torch.equal(identity.shift, torch.zeros(10))


def test_ssf_init_key_reaches_every_scale_shift_and_identity_stays_the_default():
    base, identity = tiny("peft=ssf")
    _, paper = tiny("peft=ssf", "peft.init=paper")
    for model, exact in ((identity, True), (paper, False)):
        scales = [m.scale for m in model.modules() if isinstance(m, ScaleShift)]
        assert scales and all(torch.equal(s, torch.ones_like(s)) == exact for s in scales)
    with torch.no_grad():
        assert torch.equal(identity.eval()(pixel_values=pixels()).logits, base.eval()(pixel_values=pixels()).logits)


# Bottlenecks: ShoufaChen/AdaptFormer models/adapter.py, OSU-MLB/PETL_Vision model/utils.py
# init_weight, google-research/adapter-bert modeling.py feedforward_adapter.
def bottleneck(init: str, *, dim: int = 512, width: int = 256) -> Bottleneck:
    torch.manual_seed(0)
    return Bottleneck(dim=dim, width=width, activation="ReLU", dropout=0.0, scale=1.0, init=init)


@pytest.mark.parametrize("init", ["lora_kaiming", "lora_xavier"])
def test_lora_inits_zero_the_up_projection_and_biases(init):
    module = bottleneck(init)
    assert not module.up.weight.any() and not module.up.bias.any() and not module.down.bias.any()
    # down: kaiming-uniform(a=sqrt 5) is U(+-1/sqrt(fan_in)); xavier-uniform U(+-sqrt(6/(fan_in+fan_out))).
    bound = 1 / math.sqrt(512) if init == "lora_kaiming" else math.sqrt(6 / (512 + 256))
    assert module.down.weight.abs().max().item() <= bound
    assert module.down.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_houlsby_init_is_truncated_normal_1e_3_at_two_std_with_zero_biases():
    module = bottleneck("houlsby")
    for linear in (module.down, module.up):
        weight = linear.weight
        assert weight.abs().max().item() <= 2e-3 and not linear.bias.any()
        # A normal cut at +-2 std keeps std * 0.8796.
        assert weight.std().item() == pytest.approx(1e-3 * 0.8796, rel=0.02)


def test_xavier_init_is_petl_visions_random_adapter():
    module = bottleneck("xavier")
    bound = math.sqrt(6 / (512 + 256))
    for linear in (module.down, module.up):
        assert linear.weight.abs().max().item() <= bound
        assert linear.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
        assert 0 < linear.bias.std().item() < 1e-5
    assert module.up.weight.any()  # not the identity at the start


@pytest.mark.parametrize("method", ["adapter", "adaptformer"])
@pytest.mark.parametrize("init", ["lora_kaiming", "lora_xavier"])
def test_identity_inits_give_the_base_logits_exactly(method, init):
    base, adapted = tiny(f"peft={method}", f"peft.init={init}")
    with torch.no_grad():
        assert torch.equal(adapted.eval()(pixel_values=pixels()).logits, base.eval()(pixel_values=pixels()).logits)


def test_adapter_scale_multiplies_the_branch_and_dropout_acts_in_training_only():
    _, plain = tiny("peft=adapter", "peft.init=xavier")
    _, scaled = tiny("peft=adapter", "peft.init=xavier", "peft.scale=0.1", "peft.dropout=0.5")
    [one] = [m for m in plain.modules() if isinstance(m, Bottleneck)][:1]
    [tenth] = [m for m in scaled.modules() if isinstance(m, Bottleneck)][:1]
    x = torch.randn(3, 7, 64)
    with torch.no_grad():
        assert torch.allclose(tenth.eval()(x), 0.1 * one.eval()(x), atol=1e-7)
        assert not torch.allclose(tenth.train()(x), tenth.train()(x))  # two dropout masks


@pytest.mark.parametrize(
    "override, message",
    [
        ("peft=adapter peft.init=bert", "peft.init='bert' is invalid"),
        ("peft=adapter peft.scale=0", "peft.scale=0.0 is invalid"),
        ("peft=adaptformer peft.init=zero", "peft.init='zero' is invalid"),
        ("peft=ssf peft.init=normal", "peft.init='normal' is invalid"),
    ],
)
def test_bad_recipe_keys_fail_in_one_line(override, message):
    from peft_food.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config(compose_config(*TINY, *override.split(), output_dir="/tmp/x"))


# Heads: KMnP/vpt src/models/mlp.py (VPT); MAE main_linprobe.py and ShoufaChen/AdaptFormer
# main_image.py (truncated normal 0.01 behind a BatchNorm1d without affine parameters).
def test_vpt_head_init_is_kaiming_normal_fan_out_with_the_prior_bias():
    torch.manual_seed(0)
    linear = torch.nn.Linear(768, 2000)
    init_head(linear, how="vpt")
    assert linear.weight.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / 2000), rel=0.01)  # fan_out = 2000 classes
    assert torch.all(linear.bias == -math.log(99))


def test_trunc_normal_head_init_has_std_001_and_zero_bias():
    torch.manual_seed(0)
    linear = torch.nn.Linear(768, 2000)
    init_head(linear, how="trunc_normal")
    assert linear.weight.std().item() == pytest.approx(0.01, rel=0.01)
    assert linear.weight.abs().max().item() < 0.06 and not linear.bias.any()


@pytest.mark.parametrize("how", ["vpt", "trunc_normal"])
def test_head_init_key_reaches_the_built_heads_and_transformers_is_the_default(how):
    base, _ = tiny("peft=linear_probe")
    shaped, _ = tiny("peft=linear_probe", f"model.head_init={how}")
    assert torch.equal(
        base.vit.embeddings.patch_embeddings.projection.weight, shaped.vit.embeddings.patch_embeddings.projection.weight
    )
    bias = shaped.classifier.bias
    assert torch.all(bias == (-math.log(99) if how == "vpt" else 0.0))
    assert not torch.equal(base.classifier.weight, shaped.classifier.weight)


def test_batchnorm_head_normalises_with_batch_stats_in_training_and_running_ones_in_eval():
    _, model = tiny("peft=linear_probe", "model.head_norm=true")
    norm = model.classifier.norm
    assert isinstance(norm, HeadNorm) and not norm.affine and norm.eps == 1e-6
    model.eval()
    with torch.no_grad():
        model(pixel_values=pixels(8))
    assert norm.num_batches_tracked.item() == 0 and not norm.running_mean.any()  # eval: no update
    model.train()
    with torch.no_grad():
        features = model.vit(pixel_values=pixels(8)).last_hidden_state[:, 0]
        model(pixel_values=pixels(8))
    assert norm.num_batches_tracked.item() == 1
    # torch's momentum 0.1 from mean 0 / variance 1: one step toward the batch's (unbiased) statistics.
    assert torch.allclose(norm.running_mean, 0.1 * features.mean(0), atol=1e-6)
    assert torch.allclose(norm.running_var, 0.9 + 0.1 * features.var(0), atol=1e-5)
    with torch.no_grad():
        model(pixel_values=pixels(1))  # a last batch of one in training: no error, no update
    assert norm.num_batches_tracked.item() == 1
    model.eval()
    with torch.no_grad():
        out = model(pixel_values=pixels(8)).logits
    normed = (features - norm.running_mean) / torch.sqrt(norm.running_var + 1e-6)
    assert torch.allclose(out, normed @ model.classifier.weight.T + model.classifier.bias, atol=1e-5)


@pytest.mark.parametrize("method", ["linear_probe", "lora", "ssf", "full"])
def test_batchnorm_head_adds_nothing_trainable(method):
    _, plain = tiny(f"peft={method}")
    _, normed = tiny(f"peft={method}", "model.head_norm=true")
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert count(normed) == count(plain)
    assert any(n.endswith("norm.running_mean") for n, _ in normed.named_buffers())  # statistics: buffers


def test_bad_head_init_fails_in_one_line():
    from peft_food.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"model.head_init='xavier' is invalid: use transformers \| vpt \| trunc_normal"
    ):
        parse_config(compose_config(*TINY, "model.head_init=xavier", output_dir="/tmp/x"))


@pytest.mark.parametrize("method", ["linear_probe", "lora", "ssf", "full"])
def test_batchnorm_head_run_saves_its_statistics_reloads_predicts_the_same_and_exports_folded(method, tmp_path):
    run_dir = tmp_path / "run"
    overrides = (f"peft={method}", "model.head_norm=true", "model.head_init=trunc_normal", NO_WANDB, NO_EXAMPLES)
    record = train(compose_config(*TINY, *overrides, "train.epochs=1", output_dir=run_dir))
    assert record.status == "completed"
    assert record.config["model"]["head_norm"] is True and record.config["model"]["head_init"] == "trunc_normal"
    assert json.loads((run_dir / "model" / "peft_food.json").read_text())["base"]["head_norm"] is True

    norms = [m for m in load_trained(run_dir).model.modules() if isinstance(m, HeadNorm)]
    assert norms and any(n.num_batches_tracked.item() > 0 for n in norms)  # the trained statistics came back
    got, labels = eval_logits(run_dir)  # reloaded from files: the logits training evaluated
    assert float((got.argmax(-1) == labels).mean()) == record.best
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(got), torch.from_numpy(labels)).item()
    assert loss == pytest.approx(record.best_epoch["eval_loss"], abs=1e-5)

    out_dir = tmp_path / "exported"
    export(run_dir, out_dir)  # a plain transformers model: the norm folded into the head's Linear
    plain = AutoModelForImageClassification.from_pretrained(str(out_dir))
    assert not any(".norm." in n for n in plain.state_dict())
    folded, _ = eval_logits(out_dir)
    assert np.allclose(folded, got, atol=1e-4)


# The committed recipes (peft_food/conf/recipe/): experiment=vtab1k + recipe=<method> is the published
# run. Each value below is read off the file cited beside it, at the commit named in the YAML.
RECIPES = {
    # KMnP/vpt demo.ipynb (vtab-eurosat final runs) on configs/base-prompt.yaml; src/models/mlp.py.
    "vpt": {
        "peft.method": "vpt",
        "peft.prompts": 100,  # MODEL.PROMPT.NUM_TOKENS "100"
        "peft.deep": True,  # MODEL.PROMPT.DEEP "True"
        "peft.dropout": 0.1,  # MODEL.PROMPT.DROPOUT "0.1"
        "model.head_init": "vpt",  # MLP(special_bias=True)
        "model.head_norm": False,
        "train.optimizer": "sgd",  # base-prompt.yaml OPTIMIZER sgd, MOMENTUM 0.9
        "train.lr": 0.25,  # SOLVER.BASE_LR "0.25"
        "train.weight_decay": 0.001,  # SOLVER.WEIGHT_DECAY "0.001"
        "train.epochs": 100,  # SOLVER.TOTAL_EPOCH "100"
        "train.warmup_ratio": 0.1,  # WARMUP_EPOCH 10 / TOTAL_EPOCH 100
        "train.lr_scheduler": "cosine",  # SCHEDULER "cosine"
        "effective_batch": 64,  # DATA.BATCH_SIZE "64"
    },
    # dongzelian/SSF train_scripts/vit/vtab/cifar_100/train_ssf.sh; models/vision_transformer.py.
    "ssf": {
        "peft.method": "ssf",
        "peft.init": "paper",  # init_ssf_scale_shift: N(1, .02), N(0, .02)
        "model.head_init": "transformers",  # init_weights_vit_timm: trunc_normal .02, bias 0
        "model.head_norm": False,
        "train.optimizer": "adamw",  # --opt adamw
        "train.lr": 5e-3,  # --lr 5e-3
        "train.weight_decay": 5e-5,  # --weight-decay 5e-5
        "train.epochs": 100,  # --epochs 100
        "train.warmup_ratio": 0.1,  # --warmup-epochs 10
        "train.lr_scheduler": "cosine",  # --sched cosine (train.py's default)
        "train.mixup_alpha": 0.0,  # --mixup 0
        "train.cutmix_alpha": 0.0,  # --cutmix 0
        "train.label_smoothing": 0.0,  # --smoothing 0
        "effective_batch": 64,  # --batch-size 32 x --nproc_per_node=2
    },
    # ShoufaChen/AdaptFormer main_image.py, models/custom_modules.py, models/adapter.py.
    "adaptformer": {
        "peft.method": "adaptformer",
        "peft.width": 64,  # --ffn_num default 64
        "peft.scale": 0.1,  # ffn_adapter_scalar="0.1"
        "peft.dropout": 0.1,  # Adapter(..., dropout=0.1)
        "peft.init": "lora_kaiming",  # ffn_adapter_init_option="lora"
        "model.head_init": "trunc_normal",  # trunc_normal_(model.head.weight, std=0.01)
        "model.head_norm": True,  # BatchNorm1d(affine=False, eps=1e-6) before the head
        "train.optimizer": "sgd",  # torch.optim.SGD(momentum=0.9)
        "train.lr": 0.1 * 64 / 256,  # --blr 0.1; lr = blr * eff_batch_size / 256
        "train.weight_decay": 0.0,  # --weight_decay 0.
        "train.epochs": 100,  # --epochs 100
        "train.warmup_ratio": 0.2,  # --warmup_epochs 20
        "train.lr_scheduler": "cosine",  # util/lr_sched.py half-cycle cosine
        "effective_batch": 64,  # VTAB-1k's batch (the lr follows it by the code's rule)
    },
    # OSU-MLB/PETL_Vision experiment/config/default_vtab_processed.yml, method/rand_h_adapter.yml,
    # lr_wd_vtab_processed.yml, model/adapter.py.
    "adapter": {
        "peft.method": "adapter",
        "peft.placement": "houlsby",  # ft_attn_module + ft_mlp_module, sequential_after
        "peft.width": 4,  # adapter_bottleneck: [4, 8, 16, 32]
        "peft.scale": 0.01,  # adapter_scaler: [0.01, 0.1, 1, 10]
        "peft.init": "xavier",  # adapter_init: xavier
        "peft.activation": "relu",  # nn.ReLU
        "peft.dropout": 0.1,  # self.dropout = 0.1
        "model.head_init": "transformers",
        "model.head_norm": False,
        "train.optimizer": "adamw",  # optimizer: adamw
        "train.lr": 1e-3,  # lr: [0.001, 0.01]
        "train.weight_decay": 1e-4,  # wd: [0.0001, 0.001]
        "train.epochs": 100,  # epoch: 100
        "train.warmup_ratio": 0.1,  # warmup_epoch: 10
        "train.lr_scheduler": "cosine",  # timm CosineLRScheduler
        "effective_batch": 64,  # batch_size: 64
    },
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_recipe_composes_on_vtab1k_passes_preflight_and_holds_the_cited_values(recipe):
    from peft_food.cli.preflight import preflight

    argv = ["experiment=vtab1k", f"recipe={recipe}", "data=synthetic", NO_WANDB]
    assert preflight(argv, config_name="train", prog="peft-food-train")
    spec = parse_config(compose_config(*argv, output_dir="/tmp/x"))
    for key, expected in RECIPES[recipe].items():
        if key == "effective_batch":
            got = spec.train.batch_size * spec.train.grad_accum
        else:
            group, name = key.split(".")
            got = getattr(getattr(spec, group), name)
        assert got == pytest.approx(expected) if isinstance(expected, float) else got == expected, key
    assert (spec.data.train_size, spec.data.val_size) == (1000, 200)  # still VTAB-1k's shape


def test_a_recipe_runs_end_to_end_on_the_tiny_vit(tmp_path):
    """The VPT recipe (SGD, the VPT head, deep prompts) trains, saves and reloads on the tiny ViT."""
    run_dir = tmp_path / "run"
    argv = ("recipe=vpt", "peft.prompts=2", "train.epochs=1", "train.batch_size=16", NO_WANDB, NO_EXAMPLES)
    record = train(compose_config(*TINY, *argv, output_dir=run_dir))
    assert record.status == "completed" and record.method == "vpt_deep"
    assert record.config["train"]["optimizer"] == "sgd" and record.config["model"]["head_init"] == "vpt"
    got, labels = eval_logits(run_dir)
    assert float((got.argmax(-1) == labels).mean()) == record.best


def test_sgd_is_torch_sgd_with_momentum_09_and_adamw_stays_as_it_was(tmp_path):
    from transformers import Trainer

    from peft_food.config import TrainSpec
    from peft_food.training.trainer import training_arguments

    for name, cls, extra in (("sgd", torch.optim.SGD, {"momentum": 0.9}), ("adamw", torch.optim.AdamW, {})):
        args = training_arguments(
            train=TrainSpec(optimizer=name), precision="fp32", workers=0, run_dir=tmp_path, seed=0, report_to=[]
        )
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
        assert optimizer_cls is cls and extra.items() <= kwargs.items()
        assert args.optim == ("sgd" if name == "sgd" else "adamw_torch_fused")
    assert args.optim_args is None  # adamw: Trainer's arguments as before the key existed


def test_reloading_a_whole_model_with_a_head_norm_reports_no_unexpected_keys_but_reports_others():
    import logging

    from peft_food.model.head import OnlyTheseUnexpected

    table = "ViTForImageClassification LOAD REPORT from: run/model\nKey | Status |  | \n------+-------+--+-\n"

    def record(*keys: str) -> logging.LogRecord:
        rows = "".join(f"{key} | UNEXPECTED |  | \n" for key in keys)
        return logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0, table + rows, None, None)

    quiet = OnlyTheseUnexpected("classifier.norm.")
    assert not quiet.filter(record("classifier.norm.running_mean", "classifier.norm.running_var"))
    assert quiet.filter(record("classifier.norm.running_mean", "vit.pooler.dense.weight"))
    assert quiet.filter(logging.LogRecord("x", logging.WARNING, "", 0, "something else", None, None))
