"""The Trainer as this package configures it: arguments from TrainSpec, uint8 batches normalised
on the device, the monitored metric picking the best checkpoint, and per-epoch records.
"""

from __future__ import annotations

import inspect
import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from peft_food import progress
from peft_food.config import TrainSpec
from peft_food.data.transforms import collate, normalize
from peft_food.evaluation.metrics import METRICS, Evaluator
from peft_food.files import share_safetensors
from peft_food.tracking.curves import FILE as CURVES_FILE
from peft_food.tracking.curves import write_curves
from peft_food.tracking.record import RunRecord
from peft_food.training.console import quiet_console
from peft_food.training.cores import default_workers
from peft_food.training.early_stop import EarlyStop
from peft_food.training.mixing import Mixer, batch_mixer, soft_cross_entropy
from peft_food.training.signals import workers_leave_signals
from peft_food.training.worker_rng import WorkerStates, own_generator

log = logging.getLogger(__name__)


# Trainer's settings without a val split (protocol retrain): no evaluation, so nothing to select;
# the last epoch is the model (checkpoints stay, for resuming).
NO_SELECTION = dict(eval_strategy="no", load_best_model_at_end=False, metric_for_best_model=None)


def resolve_precision(requested: str) -> str:
    """fp16/bf16 autocast needs CUDA; elsewhere train in fp32 and say so once."""
    if requested != "fp32" and not torch.cuda.is_available():
        log.warning("train.precision=%s needs a CUDA GPU; none found, training in fp32", requested)
        return "fp32"
    return requested


def resolve_workers(requested: int | None) -> int:
    """null: with a GPU, one worker per core (at most 8); on CPU the training process needs a
    core of its own, so one fewer."""
    if requested is not None:
        return requested
    return default_workers(cores=os.cpu_count() or 1, own_core=not torch.cuda.is_available())


# train.optimizer (config.py OPTIMIZERS) -> Trainer's `optim` and `optim_args`: sgd is SGD with momentum
# 0.9, as VPT (KMnP/vpt configs/base-prompt.yaml) and AdaptFormer (ShoufaChen/AdaptFormer main_image.py).
OPTIM = {"adamw": ("adamw_torch_fused", None), "sgd": ("sgd", "momentum=0.9")}


def training_arguments(
    *, train: TrainSpec, precision: str, workers: int, run_dir: Path, seed: int, report_to: list[str], **overrides: Any
) -> TrainingArguments:
    """Trainer's settings for a run. `overrides`: TrainingArguments fields set otherwise, at
    construction (the benchmark's: no checkpoints or evaluation, the seed recipe's optimizer)."""
    settings = dict(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        learning_rate=train.lr,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.grad_accum,
        weight_decay=train.weight_decay,
        optim="adamw_torch_fused",  # one fused kernel per step (transformers 5's default where torch has it)
        warmup_steps=train.warmup_ratio,  # a float below 1 is a fraction of all steps
        # Explicit on CPU-only machines: otherwise torchrun's ranks would each train alone
        # (transformers only enables CPU DDP with use_cpu).
        use_cpu=not torch.cuda.is_available(),
        fp16=precision == "fp16",  # AMP over fp32 master weights: the model stays fp32
        bf16=precision == "bf16",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,  # the best and the latest checkpoint
        # The best checkpoint is loaded after training (load_best), once the last epoch's model has
        # been tested: inside the loop, a test pass would leave a persistent worker behind.
        load_best_model_at_end=False,
        metric_for_best_model=train.monitor_key,
        greater_is_better=METRICS[train.monitor].higher_is_better,
        logging_steps=train.logging_steps,
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Trainer would drop the `image` column before our transform sees it (transformers #17894).
        remove_unused_columns=False,
        # Needed with a PeftModel, or compute_metrics is never called (peft #1120).
        label_names=["labels"],
        seed=seed,
        data_seed=seed,
        torch_compile=train.compile,
        report_to=report_to,
        disable_tqdm=not progress.shown(),  # Trainer's bars follow the run's `progress` key
        lr_scheduler_type=train.lr_scheduler,
        label_smoothing_factor=train.label_smoothing,  # Trainer's LabelSmoother (ImageTrainer: soft labels too)
    )
    return TrainingArguments(**{**settings, **knob_arguments(train), **overrides})


def knob_arguments(train: TrainSpec) -> dict[str, Any]:
    """TrainingArguments for the keys that are off by default, given only when on, so a run
    without them gets exactly the arguments it got before they existed."""
    settings: dict[str, Any] = {}
    if train.optimizer != "adamw":
        settings["optim"], settings["optim_args"] = OPTIM[train.optimizer]
    if train.lr_scheduler == "reduce_lr_on_plateau":
        # It steps on metric_for_best_model in torch's default mode "min": accuracy would cut the rate
        # whenever it stopped *falling*.
        settings["lr_scheduler_kwargs"] = {"mode": "max" if METRICS[train.monitor].higher_is_better else "min"}
    if train.gradient_checkpointing:
        # transformers >= 5.2x names it activation_checkpointing (gradient_* is a deprecated alias);
        # non-reentrant checkpointing (its default) passes gradients to adapters under a frozen embedding.
        name = (
            "activation_checkpointing"
            if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
            else "gradient_checkpointing"
        )
        settings[name] = True
        settings[f"{name}_kwargs"] = {"use_reentrant": False}
    if train.eval_steps is not None:
        # Saving at each evaluation keeps the val-best checkpoint on disk (Trainer keeps it beside the latest).
        settings.update(
            eval_strategy="steps", eval_steps=train.eval_steps, save_strategy="steps", save_steps=train.eval_steps
        )
    if train.early_stopping:
        # EarlyStoppingCallback's patience counter is saved in each checkpoint; restore it on resume.
        settings["restore_callback_states_from_checkpoint"] = True
    return settings


def build_image_trainer(
    *,
    model: Any,
    processor: Any,
    train_dataset: Any,
    eval_dataset: Any,
    train: TrainSpec,
    precision: str,
    workers: int,
    run_dir: Path,
    seed: int,
    callbacks: list[TrainerCallback],
    metrics: list[str] | None,
    **overrides: Any,
) -> "ImageTrainer":
    """The Trainer every training path uses, training and the benchmark alike: the run's settings
    (`overrides` as in training_arguments), uint8 batches normalised on the device with the
    processor's mean and std, `metrics` computed at each evaluation (None: none)."""
    args = training_arguments(
        train=train, precision=precision, workers=workers, run_dir=run_dir, seed=seed, report_to=[], **overrides
    )
    mixer = batch_mixer(
        mixup_alpha=train.mixup_alpha, cutmix_alpha=train.cutmix_alpha, num_classes=model.config.num_labels
    )
    stop = [EarlyStop(train.early_stopping_patience)] if train.early_stopping and args.eval_strategy != "no" else []
    trainer = ImageTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate,
        compute_metrics=Evaluator(metrics) if metrics else None,
        callbacks=[*callbacks, *stop],
        mean=processor.image_mean,
        std=processor.image_std,
        mixer=mixer,
    )
    quiet_console(trainer)  # step figures to train.log only: the console gets one line per epoch
    return trainer


def split_metrics(measured: dict[str, Any], *, prefix: str, metrics: list[str]) -> dict[str, float]:
    """<prefix>_loss and <prefix>_<name> for each of `metrics`, out of Trainer's evaluate/predict
    metrics (which also hold runtime and throughput)."""
    keys = [f"{prefix}_loss", *(f"{prefix}_{name}" for name in metrics if name != "loss")]
    return {key: measured[key] for key in keys if key in measured}


def epoch_metrics(log_history: list[dict[str, Any]], *, metrics: list[str]) -> list[dict[str, Any]]:
    """One entry per evaluation: its epoch, eval_loss and eval_<name> for each of `metrics`."""
    keys = ["eval_loss", *(f"eval_{name}" for name in metrics if name != "loss")]
    return [
        {"epoch": round(entry["epoch"], 4), **{key: entry[key] for key in keys}}
        for entry in log_history
        if "eval_loss" in entry and "epoch" in entry
    ]


def epoch_line(record: RunRecord, log_history: list[dict[str, Any]]) -> str:
    """One line per epoch for train.log: its val metrics, the last train loss, and img/s."""
    epoch = record.epochs[-1]
    losses = [e["loss"] for e in log_history if "loss" in e]
    rate = record.efficiency.img_per_s(-1)
    metrics = " ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in epoch.items() if k != "epoch")
    head = f"epoch {epoch['epoch']:g}: {record.selected_on} {metrics}"
    return (f"{head} | train loss {losses[-1]:.4f}" if losses else head) + (f" | {rate:.0f} img/s" if rate else "")


def test_metrics(trainer: Trainer, test: Any, *, metrics: list[str]) -> dict[str, float]:
    """One pass over test with the model in hand (after training: nothing selects on it)."""
    return split_metrics(trainer.predict(test, metric_key_prefix="test").metrics, prefix="test", metrics=metrics)


def load_best(trainer: Trainer) -> None:
    """The checkpoint with the best val monitor into the model, as load_best_model_at_end would at
    the end of train() (Trainer tracks and keeps that checkpoint whenever metric_for_best_model is
    set); a run with one checkpoint keeps the model it ends with."""
    if trainer.state.best_model_checkpoint is not None:
        trainer._load_best_model()  # Trainer's own loader: adapters, partial and full models alike


# A redraw of curves.png costs ~0.3 s of CPU (matplotlib): after every epoch of a run whose epochs
# take minutes, but once, at the end, for a run of a few seconds, where it would be a large share.
CURVES_EVERY_S = 10.0


class EpochRecorder(TrainerCallback):
    """Rewrites metrics.json after every evaluation (each epoch without val), so a running sweep can
    be compared, and curves.png at most every CURVES_EVERY_S, so a running job's curves can be looked
    at; times each epoch's training (evaluation excluded)."""

    def __init__(self, record: RunRecord, path: Path, *, metrics: list[str], started: float):
        """`started`: when the job began (time.time()), for the record's startup_s."""
        self.record, self.path, self.metrics, self.job_started = record, path, metrics, started
        self._started = 0.0
        self._drawn = time.monotonic()

    def _redraw(self, state: Any) -> None:
        """curves.png again, unless it was drawn under CURVES_EVERY_S ago (the run's end draws it anyway)."""
        if time.monotonic() - self._drawn >= CURVES_EVERY_S:
            write_curves(self.record, state.log_history, self.path.parent / CURVES_FILE)
            self._drawn = time.monotonic()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.record.efficiency.startup_s is None:  # the first step: its batch is in hand
            self.record.efficiency.startup_s = round(time.time() - self.job_started, 2)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._started, self._step = time.perf_counter(), state.global_step

    def on_epoch_end(self, args, state, control, **kwargs):
        efficiency = self.record.efficiency
        efficiency.epoch_wall_s.append(round(time.perf_counter() - self._started, 2))
        # Optimizer steps x effective batch, capped at the split (the last batch of an epoch is short).
        batch = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        efficiency.epoch_images.append(
            min((state.global_step - self._step) * batch, self.record.counts.num_train_samples)
        )
        if args.eval_strategy == "no" and state.is_world_process_zero:  # no val: the epoch's line is its training
            self.record.write(self.path)
            self._redraw(state)
            losses = [e["loss"] for e in state.log_history if "loss" in e]
            log.info(
                f"epoch {state.epoch:g}: no val (nothing selected)"
                f"{f' | train loss {losses[-1]:.4f}' if losses else ''} | {efficiency.img_per_s(-1):.0f} img/s"
            )

    def on_evaluate(self, args, state, control, **kwargs):
        self.record.epochs = epoch_metrics(state.log_history, metrics=self.metrics)
        if state.is_world_process_zero:
            self.record.write(self.path)
            self._redraw(state)
            log.info(epoch_line(self.record, state.log_history))


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by tensors, or the process's peak resident memory on CPU."""
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def weights_mb(model_dir: Path) -> float:
    """What a user ships: the adapter (+ head) or the full model, without a random-init base copy."""
    return round(sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) / 2**20, 3)


class ImageTrainer(Trainer):
    """Trainer that turns uint8 batches into normalised floats after the move to the device, and
    writes checkpoints that its own reloads can read."""

    def __init__(self, *args, mean: list[float], std: list[float], mixer: Mixer | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mean, self.std, self.mixer = mean, std, mixer
        self.worker_states = WorkerStates()  # workers' RNGs across a resume

    def train(self, resume_from_checkpoint: str | None = None, **kwargs):
        checkpoint = Path(resume_from_checkpoint) if isinstance(resume_from_checkpoint, str) else None
        self.worker_states.load(checkpoint, rank=self.args.process_index, world=self.args.world_size)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Mixup/CutMix on training batches only: evaluation (prediction_step) runs in eval mode and
        # takes Trainer's path, so val and test batches are never mixed.
        if self.mixer is None or not model.training:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        pixels, targets = self.mixer(inputs["pixel_values"], inputs["labels"])
        outputs = model(pixel_values=pixels)
        losses = soft_cross_entropy(outputs.logits, targets, smoothing=self.args.label_smoothing_factor)
        # As Trainer's own loss: normalised over the accumulated batch when it counts one (it then does
        # not divide by grad_accum), else a per-batch mean.
        scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        loss = losses.sum() / num_items_in_batch if scaled else losses.mean()
        return (loss, outputs) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        self._save_weights(output_dir, state_dict)
        share_safetensors(Path(output_dir))  # safetensors writes 0600: a checkpoint as readable as the run

    def _save_weights(self, output_dir: str, state_dict: dict | None) -> None:
        # transformers 5.x saves ViT-family weights under their pre-5.9 names (save_original_format),
        # but Trainer reloads a checkpoint (load_best_model_at_end, resume) with a plain
        # load_state_dict(strict=False): the renamed keys silently miss, and a full, linear-probe
        # or BitFit run would end on the last epoch's layers under the best epoch's head. Checkpoints
        # keep the model's own names; the final model/ is saved in the original format as usual.
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if "save_original_format" not in inspect.signature(model.save_pretrained).parameters:
            return super()._save(output_dir, state_dict)  # a release that saves no renamed keys: nothing to undo
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(
            output_dir, state_dict=state_dict, is_main_process=self.args.should_save, save_original_format=False
        )
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _get_dataloader(self, *args, **kwargs):
        # Workers leave the stop signals to this process (signals.py), after Trainer's own seed_worker;
        # a training loader's workers carry their RNG states across a resume (worker_rng.py).
        loader = super()._get_dataloader(*args, **kwargs)
        iterated = getattr(loader, "base_dataloader", loader)  # accelerate's wrapper iterates the loader inside
        init = iterated.worker_init_fn
        if iterated.num_workers > 0:
            own_generator(iterated, seed=self.args.seed)
            if kwargs.get("is_training"):
                self.worker_states.prepare(iterated)
                init = self.worker_states.worker_init(init)
        iterated.worker_init_fn = workers_leave_signals(init)
        return loader

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self.worker_states.take(batches)
        return batches, num_items

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        self.worker_states.save(
            Path(output_dir), epoch=self.state.epoch, rank=self.args.process_index, world=self.args.world_size
        )

    def _prepare_inputs(self, inputs):
        inputs = super()._prepare_inputs(inputs)
        inputs["pixel_values"] = normalize(inputs["pixel_values"], mean=self.mean, std=self.std)
        return inputs
