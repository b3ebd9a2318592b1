"""The training knobs (train.lr_scheduler, label_smoothing, gradient_checkpointing,
early_stopping_patience, mixup_alpha / cutmix_alpha, eval_steps): each reaches Trainer and changes
what it should, on the tiny ViT with synthetic images; off, each leaves Trainer's arguments as they were."""

import json
import logging
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback, TrainingArguments, set_seed
from transformers.optimization import get_scheduler
from transformers.trainer_utils import SchedulerType

from peft_food.config import LR_SCHEDULERS, TrainSpec, parse_config
from peft_food.tracking.record import RunRecord
from peft_food.training.mixing import soft_cross_entropy
from peft_food.training.pipeline import build_trainer, train
from peft_food.training.trainer import training_arguments
from tests.helpers import TINY_QUIET, compose_config, eval_logits

LORA = ["peft.dropout=0"]  # no dropout: two forward passes of one batch give the same logits


def tiny_trainer(run_dir, *overrides):
    """The run's Trainer, as `train` builds it, without training (logger off, fp32, no workers)."""
    spec = parse_config(compose_config(*TINY_QUIET, *overrides, output_dir=run_dir))
    set_seed(spec.seed)
    trainer, _, _ = build_trainer(spec, run_dir=run_dir, precision="fp32", record=RunRecord(), callbacks=[])
    return trainer


def first_batch(trainer):
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))  # on the device, normalised


def test_the_new_keys_off_leave_trainers_arguments_as_they_were(tmp_path):
    args = training_arguments(train=TrainSpec(), precision="fp32", workers=0, run_dir=tmp_path, seed=0, report_to=[])
    stock = TrainingArguments(output_dir=str(tmp_path))
    for name in (
        "lr_scheduler_type",
        "lr_scheduler_kwargs",
        "label_smoothing_factor",
        "activation_checkpointing",
        "activation_checkpointing_kwargs",
        "restore_callback_states_from_checkpoint",
        "eval_steps",
        "save_steps",
    ):
        assert getattr(args, name) == getattr(stock, name), name
    assert (args.eval_strategy, args.save_strategy) == ("epoch", "epoch")
    on = training_arguments(
        train=TrainSpec(early_stopping_patience=2, eval_steps=5),
        precision="fp32",
        workers=0,
        run_dir=tmp_path,
        seed=0,
        report_to=[],
    )
    assert on.restore_callback_states_from_checkpoint  # the patience count is restored on resume
    assert (on.eval_strategy, on.eval_steps, on.save_strategy, on.save_steps) == ("steps", 5, "steps", 5)


@pytest.mark.parametrize("name", LR_SCHEDULERS)
def test_every_lr_scheduler_is_one_of_trainers_and_builds_from_the_runs_arguments(tmp_path, name):
    args = training_arguments(
        train=TrainSpec(lr_scheduler=name), precision="fp32", workers=0, run_dir=tmp_path, seed=0, report_to=[]
    )
    assert SchedulerType(args.lr_scheduler_type).value == name
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=0,
        num_training_steps=10,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )


def test_the_rate_follows_train_lr_scheduler_and_plateau_watches_the_monitor_the_right_way(tmp_path):
    expected = {"linear": 0.8, "cosine": 0.5 * (1 + math.cos(math.pi * 2 / 10)), "constant": 1.0}  # step 2 of 10
    for name, rate in expected.items():
        args = training_arguments(
            train=TrainSpec(lr_scheduler=name, lr=1.0),
            precision="fp32",
            workers=0,
            run_dir=tmp_path,
            seed=0,
            report_to=[],
        )
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        schedule = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=0, num_training_steps=10)
        for _ in range(2):
            optimizer.step()
            schedule.step()
        assert schedule.get_last_lr()[0] == pytest.approx(rate), name
    # torch's ReduceLROnPlateau defaults to mode "min": for accuracy it must cut the rate when it stops rising.
    for monitor, mode in (("accuracy", "max"), ("loss", "min")):
        args = training_arguments(
            train=TrainSpec(lr_scheduler="reduce_lr_on_plateau", monitor=monitor),
            precision="fp32",
            workers=0,
            run_dir=tmp_path,
            seed=0,
            report_to=[],
        )
        assert args.lr_scheduler_kwargs == {"mode": mode}


def test_label_smoothing_reaches_the_loss_of_a_peft_vit(tmp_path):
    trainer = tiny_trainer(tmp_path, *LORA, "train.label_smoothing=0.2")
    batch = first_batch(trainer)
    model = trainer.model.train()
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"]).logits
    smoothed = F.cross_entropy(logits, batch["labels"], label_smoothing=0.2)
    assert loss.item() == pytest.approx(smoothed.item(), rel=1e-5)
    assert abs(loss.item() - F.cross_entropy(logits, batch["labels"]).item()) > 1e-3  # the key did something
    # The soft-label loss (Mixup/CutMix) smooths the same way: on one-hot targets it is the same number.
    soft = soft_cross_entropy(logits, F.one_hot(batch["labels"], 4).float(), smoothing=0.2).mean()
    assert soft.item() == pytest.approx(smoothed.item(), rel=1e-5)


def test_mixup_mixes_training_batches_as_its_alpha_draws_and_leaves_eval_batches_whole(tmp_path):
    alpha = 0.4
    trainer = tiny_trainer(tmp_path, *LORA, f"train.mixup_alpha={alpha}")
    batch = first_batch(trainer)
    x, y = batch["pixel_values"], batch["labels"]
    assert x.dtype == torch.float32  # mixed after normalising: uint8 would round each mixed pixel
    i = next(i for i in range(len(y)) if y[i] != y[i - 1])  # a row whose two labels differ shows lam
    lams = []
    for _ in range(200):
        mixed, soft = trainer.mixer(x, y)
        assert soft.shape == (len(y), 4) and torch.allclose(soft.sum(-1), torch.ones(len(y)))
        lam = soft[i, y[i]].item()
        lams.append(lam)
        # Each image is lam x_i + (1 - lam) x_{i-1}, its label the same mix of the two one-hots.
        assert torch.allclose(mixed, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-5)
        assert torch.allclose(soft, lam * F.one_hot(y, 4) + (1 - lam) * F.one_hot(y.roll(1, 0), 4), atol=1e-6)
    lams = torch.tensor(lams)
    # lam ~ Beta(alpha, alpha): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.139 (alpha 1 would give 0.083).
    assert lams.mean().item() == pytest.approx(0.5, abs=0.05)
    assert lams.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), abs=0.02)

    # Training: the loss is the soft cross-entropy of the mixed batch (the same draw, replayed).
    model = trainer.model.train()
    torch.manual_seed(1)
    loss = trainer.compute_loss(model, dict(batch))
    torch.manual_seed(1)
    mixed, soft = trainer.mixer(x, y)
    with torch.no_grad():
        assert loss.item() == pytest.approx(
            soft_cross_entropy(model(pixel_values=mixed).logits, soft).mean().item(), rel=1e-5
        )
    # Evaluation: the plain loss of the whole images and their own labels.
    model.eval()
    eval_loss, logits, labels = trainer.prediction_step(model, dict(batch), prediction_loss_only=False)
    with torch.no_grad():
        assert eval_loss.item() == pytest.approx(F.cross_entropy(model(pixel_values=x).logits, y).item(), rel=1e-5)
    assert torch.equal(labels, y)


class FirstGradients(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", [LORA, ["peft=full"]], ids=["lora", "full"])
def test_gradient_checkpointing_recomputes_each_layer_and_leaves_the_gradients_as_they_were(tmp_path, method):
    seen = {}
    for checkpointing in (False, True):
        trainer = tiny_trainer(
            tmp_path / str(checkpointing),
            *method,
            "train.max_steps=1",
            "train.epochs=1",
            f"train.gradient_checkpointing={checkpointing}",
        )
        grads = FirstGradients()
        trainer.add_callback(grads)
        layer = next(
            m for name, m in trainer.model.named_modules() if name.endswith("layers.0") or name.endswith("layer.0")
        )
        calls = []
        # On a module inside the first layer: transformers checkpoints the layer's forward, so hooks on
        # the layer itself run once; what runs inside it runs again in the backward pass.
        next(layer.children()).register_forward_hook(
            lambda module, args, out, calls=calls: calls.append(module.training)
        )
        trainer.train()
        seen[checkpointing] = grads.grads, sum(calls)  # forward passes inside the layer while training
    (plain, once), (checkpointed, twice) = seen[False], seen[True]
    assert (once, twice) == (1, 2)  # with checkpointing the backward pass runs the layer again
    assert plain.keys() == checkpointed.keys()
    inner = [name for name in plain if ".0." in name]  # trainable tensors inside the checkpointed layers
    # Gradients reach inside them (LoRA: B's; A's is zero at the first step, B starting at zero).
    assert [name for name in inner if checkpointed[name].abs().sum() > 0]
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], rtol=1e-4, atol=1e-7), name


@pytest.mark.slow
def test_eval_steps_and_early_stopping_select_on_val_and_stop_once_it_stops_improving(tmp_path, caplog):
    # 64 images / batch 16: 4 steps an epoch, 16 in 4 epochs; val every 3 steps (and at the end).
    # Mixup, CutMix, label smoothing and a cosine schedule train in the same run.
    with caplog.at_level(logging.INFO):
        record = train(
            compose_config(
                *TINY_QUIET,
                "train.epochs=4",
                "train.eval_steps=3",
                "train.early_stopping_patience=1",
                "train.mixup_alpha=0.8",
                "train.cutmix_alpha=1.0",
                "train.label_smoothing=0.1",
                "train.lr_scheduler=cosine",
                output_dir=tmp_path,
            )
        )
    assert record.status == "completed"
    assert record.config["train"]["eval_steps"] == 3 and record.config["train"]["mixup_alpha"] == 0.8  # recorded

    # eval_steps: one evaluation every 3 optimizer steps, at fractional epochs.
    steps = [round(e["epoch"] * 4) for e in record.epochs]
    assert steps == [3 * (k + 1) for k in range(len(steps))]
    assert [e["epoch"] for e in record.epochs] == [s / 4 for s in steps]
    checkpoints = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "checkpoints").glob("checkpoint-*"))
    assert set(checkpoints) <= set(steps) and steps[-1] in checkpoints  # saved at evaluations only

    # Early stopping: it stopped before the 16th step, at the first evaluation that did not beat the
    # best before it (patience 1), and said so in the record and the log.
    val = [e["eval_accuracy"] for e in record.epochs]
    assert steps[-1] < 16 and record.stopped_early is not None
    assert all(val[k] > max(val[:k]) for k in range(1, len(val) - 1))  # every earlier evaluation improved
    assert val[-1] <= max(val[:-1])
    assert record.stopped_early["step"] == steps[-1] and record.stopped_early["epoch"] == record.epochs[-1]["epoch"]
    assert record.stopped_early["best"] == max(val[:-1]) and record.stopped_early["patience"] == 1
    assert f"early stopping at epoch {record.epochs[-1]['epoch']:g} (step {steps[-1]})" in caplog.text

    # The saved model is the val-best evaluation's checkpoint (the first of ties), not the last one's.
    best = val.index(max(val))
    assert record.best_epoch == record.epochs[best]
    logits, labels = eval_logits(tmp_path, "val")
    assert float((logits.argmax(-1) == labels).mean()) == record.best
    # Its val loss (smoothed, as Trainer's LabelSmoother evaluates it) is that evaluation's, not the last one's.
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), label_smoothing=0.1).item()
    assert loss == pytest.approx(record.best_epoch["eval_loss"], rel=1e-4)
    assert loss != pytest.approx(record.epochs[-1]["eval_loss"], rel=1e-4)
    assert RunRecord.load(tmp_path / "metrics.json").stopped_early == record.stopped_early
    # The patience count travels with each checkpoint (restored on resume): 1 at the stopping one.
    state = json.loads((tmp_path / "checkpoints" / f"checkpoint-{steps[-1]}" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["EarlyStop"]["attributes"]["early_stopping_patience_counter"] == 1


@pytest.mark.slow
def test_a_run_with_eval_steps_resumes_from_its_last_mid_epoch_checkpoint(tmp_path):
    # 4 steps an epoch, 8 in all; val and a checkpoint at steps 3, 6 and 8 (the end).
    args = [*TINY_QUIET, "train.eval_steps=3"]
    first = train(compose_config(*args, output_dir=tmp_path))
    assert [round(e["epoch"] * 4) for e in first.epochs] == [3, 6, 8]
    # As if it had been stopped after step 7: the end's checkpoint gone, the record unfinished.
    shutil.rmtree(tmp_path / "checkpoints" / "checkpoint-8")
    stopped = RunRecord.load(tmp_path / "metrics.json")
    stopped.status = "interrupted"
    stopped.write(tmp_path / "metrics.json")
    # save_total_limit 2 kept the val-best and the latest: the run continues from the later of those left.
    kept = max(int(p.name.split("-")[1]) for p in (tmp_path / "checkpoints").glob("checkpoint-*"))
    assert kept in (3, 6)

    resumed = train(compose_config(*args, "train.resume=true", output_dir=tmp_path))
    assert resumed.status == "completed" and resumed.resumed_from == [f"checkpoint-{kept}"]
    assert [round(e["epoch"] * 4) for e in resumed.epochs] == [3, 6, 8]  # no evaluation lost or repeated
    done = [e for e in first.epochs if round(e["epoch"] * 4) <= kept]
    assert resumed.epochs[: len(done)] == done  # those up to the checkpoint come from its state, unchanged
