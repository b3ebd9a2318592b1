"""Every method end to end on a tiny model: train, save only what trained, reload exactly, predict,
export a merged model that needs no peft; and sweeps across methods, keys checked per method."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from safetensors import safe_open
from transformers import AutoModelForImageClassification

from peft_food.cli.predict import main as predict
from peft_food.config import CONF_DIR, parse_config
from peft_food.methods.apply import apply_peft, check_targets
from peft_food.model.backbone import load_base
from peft_food.saved.export import export
from peft_food.tracking.compare import collect, method_by_model
from tests.helpers import (
    NO_EXAMPLES,
    TINY_QUIET,
    check_fp16_autocast_training,
    compose_hydra,
    copy_run,
    eval_logits,
    spec_of,
)

# peft's name for each adapter method, as written in adapter_config.json.
ADAPTERS = {"lora": "LORA", "dora": "LORA", "loha": "LOHA", "lokr": "LOKR", "ia3": "IA3", "vera": "VERA", "oft": "OFT"}
# Methods that train a subset of the base's own parameters, saved as trained.safetensors.
PARTIAL = ("linear_probe", "bitfit")  # ordered: every xdist worker must collect the same ids
METHODS = ["full", *PARTIAL, *ADAPTERS]


def method_run(tiny_run, method: str):
    """The method's tiny run (run dir, record). Full fine-tuning and LoRA (the default method) are the
    two-epoch runs other files share (conftest.py full_run, test_train's tiny_run()); the others,
    read only here, train one epoch (4 steps) and draw no examples figure."""
    if method in ("lora", "full"):
        return tiny_run(*([] if method == "lora" else ["peft=full"]))
    return tiny_run(f"peft={method}", "train.epochs=1", NO_EXAMPLES)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_saves_what_trained_reloads_exactly_and_exports(method, tiny_run, tmp_path, capsys):
    run_dir, record = method_run(tiny_run, method)  # shared with the tests below
    assert record.status == "completed" and record.method == method
    model_dir = run_dir / "model"
    saved = {p.name for p in model_dir.iterdir()}

    if method in ADAPTERS:
        config = json.loads((model_dir / "adapter_config.json").read_text())
        assert config["peft_type"] == ADAPTERS[method]
        assert config["modules_to_save"] == ["classifier"]
        assert config.get("use_dora", False) == (method == "dora")
        assert "model.safetensors" not in saved  # the frozen base lives in model/base only
    elif method in PARTIAL:
        assert "trained.safetensors" in saved and "model.safetensors" not in saved
        with safe_open(model_dir / "trained.safetensors", "pt") as f:  # exactly what trained, by name
            assert sum(f.get_tensor(k).numel() for k in f.keys()) == record.counts.trainable_params
    # What a user ships is much smaller than the model, except for full fine-tuning.
    full_mb = 4 * record.counts.total_params / 2**20
    assert (record.efficiency.model_size_mb > 0.9 * full_mb) == (method == "full")

    # Reloaded (in this process, from files only) the model scores what training recorded.
    logits, labels = eval_logits(run_dir)
    assert float((logits.argmax(-1) == labels).mean()) == record.best

    # The run's model card says which library reads what this method saved.
    assert ModelCard.load(str(model_dir / "README.md")).data.library_name == (
        "peft" if method in ADAPTERS else "transformers" if method == "full" else "peft-food"
    )

    # Exported: a plain transformers model, no peft wrapper, same predictions, its own card.
    out = export(run_dir, tmp_path / "exported")
    card = ModelCard.load(str(out / "README.md"))
    assert card.data.library_name == "transformers"
    assert card.data.eval_results[0].metric_value == round(record.reported("accuracy"), 6)
    plain = AutoModelForImageClassification.from_pretrained(str(out)).eval()
    assert not any("lora_" in n or "hada_" in n or "oft_" in n or "vera_" in n for n, _ in plain.named_parameters())
    merged, _ = eval_logits(out)
    assert np.allclose(merged, logits, atol=1e-4)

    # The predict CLI reads the same run dir.
    image = tmp_path / "dish.png"
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 120, dtype=np.uint8)).save(image)
    assert predict([str(run_dir), str(image), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["predictions"][0]["label"] in record.labels


def test_linear_probe_leaves_the_backbone_bit_for_bit_unchanged(tiny_run):
    run_dir, _ = method_run(tiny_run, "linear_probe")
    base = AutoModelForImageClassification.from_pretrained(str(run_dir / "model" / "base"))
    from peft_food.saved.artifacts import load_trained

    trained = load_trained(run_dir).model
    changed = [n for n, p in trained.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed == ["classifier.weight", "classifier.bias"]


def test_bitfit_moves_every_bias_and_the_head_and_no_weight(tiny_run):
    run_dir, _ = method_run(tiny_run, "bitfit")
    base = AutoModelForImageClassification.from_pretrained(str(run_dir / "model" / "base")).state_dict()
    from peft_food.saved.artifacts import load_trained

    trained = load_trained(run_dir).model.state_dict()
    changed = {n for n, p in trained.items() if not torch.equal(p, base[n])}
    biases = {n for n in base if n.endswith(".bias")}
    # Attention, MLP, LayerNorm and patch-embedding biases alike, and the whole head; no weight.
    assert any("layernorm" in n for n in biases) and any("q_proj" in n for n in biases)
    assert changed == biases | {"classifier.weight"}


def test_a_linear_probe_saved_as_head_safetensors_still_loads(tiny_run, tmp_path):
    # Runs saved before trained.safetensors kept the head alone, keyed without its module name.
    run_dir = copy_run(method_run(tiny_run, "linear_probe")[0], tmp_path / "run")
    expected, labels = eval_logits(run_dir)
    from safetensors.torch import load_file, save_file

    trained = load_file(run_dir / "model" / "trained.safetensors")
    save_file({k.removeprefix("classifier."): v for k, v in trained.items()}, run_dir / "model" / "head.safetensors")
    (run_dir / "model" / "trained.safetensors").unlink()
    assert np.array_equal(eval_logits(run_dir)[0], expected)


# What the sweep tests read of each job (its method, keys, trainable count, test accuracy) needs no
# more than one step per job: 4 classes x 4 images (val and test 4 x 2), no examples figure.
FEW = ["data.per_class=4", "data.val_per_class=2", "data.test_per_class=2", NO_EXAMPLES]


def cli_sweep(tmp_path, *overrides):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "peft_food",
            "-m",
            *TINY_QUIET,
            *FEW,
            "train.epochs=1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
    )


def test_a_sweep_over_methods_and_ranks_runs_each_method_with_its_own_keys(tmp_path):
    done = cli_sweep(tmp_path, "peft=lora,dora,loha", "peft.r=2,4")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = collect(tmp_path / "sweep")
    got = {(r["method"], r["r"]): r["trainable_params"] for r in rows}
    # vit_tiny (4 layers, width 64), q/v, 4-way head (260): LoRA 1,024 r; DoRA + 8 x 64; LoHa 2,048 r.
    assert got == {
        ("lora", 2): 2_048 + 260,
        ("lora", 4): 4_096 + 260,
        ("dora", 2): 2_048 + 512 + 260,
        ("dora", 4): 4_096 + 512 + 260,
        ("loha", 2): 4_096 + 260,
        ("loha", 4): 8_192 + 260,
    }


def test_a_key_one_swept_method_lacks_stops_the_sweep_before_any_job(tmp_path):
    done = cli_sweep(tmp_path, "peft=lora,ia3", "peft.r=2,4")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "peft-food-train: error: sweep job `peft=ia3 peft.r=2` is not a valid config: Could not override "
        "'peft.r'. (peft=ia3 takes target_modules, feedforward_modules); no job was run"
    ]
    assert not (tmp_path / "sweep").exists()


def test_compare_tabulates_methods_against_backbones(tmp_path):
    done = cli_sweep(tmp_path, "peft=linear_probe,ia3", "model=vit_tiny,swin_tiny")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = collect(tmp_path / "sweep")
    assert {(r["method"], r["model"]) for r in rows} == {
        (m, b) for m in ("linear_probe", "ia3") for b in ("vit_tiny", "swin_tiny")
    }
    table = method_by_model(rows).splitlines()
    assert table[0].split() == ["test", "accuracy", "swin_tiny", "vit_tiny"]
    test = {(r["method"], r["model"]): r["test"] for r in rows}  # one setting per cell: its test value
    ia3 = next(line for line in table if line.startswith("ia3")).split()
    assert ia3[1:] == [f"{test[('ia3', 'swin_tiny')]:.4f}", f"{test[('ia3', 'vit_tiny')]:.4f}"]


def specs_of_jobs(jobs: list[tuple[list[str], str]]) -> list:
    """Each job's typed specs (spec_of), all composed under one Hydra initialisation."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return [
            parse_config(compose(config_name="train", overrides=[*job, "output_dir=/tmp/unused"])) for job, _ in jobs
        ]


@pytest.mark.parametrize(
    "grid",
    [
        "+sweep=method_rank",
        "+sweep=mini_methods",
        "+sweep=methods_backbones",
        "+sweep=mini_vpt",
        "+sweep=methods_backbones_vpt",
        "+sweep=lora_rank_alpha",
        "+sweep=mini_rank_alpha",
        "+sweep=full_vs_lora",
    ],
)
def test_every_job_of_each_committed_grid_composes_and_validates(grid):
    from peft_food.tracking.sweep import grid_jobs

    specs = specs_of_jobs(grid_jobs(compose_hydra(grid, "data.root=/data")))
    sizes = {
        "+sweep=method_rank": 12,
        "+sweep=mini_methods": 68,
        "+sweep=methods_backbones": 90,
        "+sweep=mini_vpt": 6,
        "+sweep=methods_backbones_vpt": 8,
        "+sweep=lora_rank_alpha": 12,
        "+sweep=mini_rank_alpha": 4,
        "+sweep=full_vs_lora": 2,
    }
    assert len(specs) == sizes[grid]
    # Every job is a distinct configuration.
    assert len({repr((s.model.name, s.peft)) for s in specs}) == len(specs)
    # And its method fits its backbone (on a meta skeleton; the toys build offline, the Hub ones need
    # their config): e.g. FourierFT's 3,000 coefficients do not fit swin_tiny's 32 x 32 layers.
    for spec in specs:
        if not spec.model.pretrained:
            check_targets(spec.model, peft=spec.peft)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_under_fp16_autocast_with_loss_scaling(method):
    # The GPU recipe's fp16 (autocast over fp32 master weights, GradScaler), run on the CPU's own
    # fp16 autocast: every adapter's layers must take half-precision activations, and the loss
    # scaling must let every trainable tensor move (VeRA's lambda_d gets ~1e-9 gradients at init,
    # which underflow fp16 without it) while the frozen base stays bit-identical.
    spec = spec_of(*TINY_QUIET, f"peft={method}")
    base, _ = load_base(model=spec.model, labels=["a", "b", "c", "d"])
    model = apply_peft(base, peft=spec.peft, model=spec.model)
    torch.manual_seed(0)
    check_fp16_autocast_training(model, steps=4, pixels=torch.randn(8, 3, 32, 32), labels=torch.arange(8) % 4)
