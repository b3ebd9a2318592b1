"""One method's check at one precision: N optimizer steps through training's own Trainer on learnable
pixels, then the saved model reloaded, and, where the method folds into a plain model, its export
through transformers' pipeline() against peft-food-predict.

Criteria (each a line of the check's `criteria` in acceptance.json):
- every logged loss is finite, and so is every trained parameter at the end;
- the loss falls: the mean of the last LOSS_WINDOW logged losses is below the mean of the first;
- fp16: GradScaler's scale ends at SCALE_FLOOR or more (it starts at 65,536 and halves at every
  overflow, so this allows six overflows in the run; steps it skipped are counted too);
- the trainable count on the device equals the count of the same method on a meta-device skeleton;
- the saved model, reloaded (peft-food-predict's loader) and moved to the device, gives the logits
  the trained model ended with, both in fp32 (autocast off): max |difference| <= RELOAD_TOL;
- export + pipeline() on the device against predict on CPU, on lossless files at the model's size:
  the same top-1 on every image, and max |difference in probability| <= EXPORT_TOL.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageClassification, TrainerCallback, pipeline, set_seed

from peft_food.bench.acceptance.compose import run_spec
from peft_food.bench.acceptance.images import ColourPixels, write_pngs
from peft_food.bench.acceptance.sizes import Size
from peft_food.config import RunSpec
from peft_food.data.geometry import input_sizes
from peft_food.data.transforms import normalize
from peft_food.methods.apply import apply_peft
from peft_food.model.backbone import base_config, count_parameters, load_base
from peft_food.saved.artifacts import load_trained, save_base, save_trained
from peft_food.saved.export import export
from peft_food.saved.predict import classify
from peft_food.training.trainer import NO_SELECTION, build_image_trainer

CLASSES = 10
LOSS_WINDOW = 5
SCALE_FLOOR = 1024.0
RELOAD_TOL = 1e-4
EXPORT_TOL = 1e-3
PROBE_IMAGES = 8


class StepProbe(TrainerCallback):
    """After each optimizer step: wall time, and under fp16 GradScaler's scale and whether the
    step was skipped (an overflow). The Trainer's logging at every step syncs anyway."""

    def __init__(self) -> None:
        self.trainer: Any = None
        self.scales: list[float] = []
        self.skipped = 0
        self.step_s: list[float] = []
        self._last = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        accelerator = self.trainer.accelerator
        if accelerator.scaler is not None:
            self.scales.append(float(accelerator.scaler.get_scale()))
            self.skipped += bool(accelerator.optimizer_step_was_skipped)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.step_s.append(now - self._last)
        self._last = now


def meta_trainable(spec: RunSpec, labels: list[str]) -> int:
    """The method's trainable count on a meta-device skeleton (no memory, no device): what the run's
    pre-flight (check_targets) prepares, counted."""
    with torch.device("meta"):
        skeleton = AutoModelForImageClassification.from_config(base_config(spec.model, labels=labels))
        return count_parameters(apply_peft(skeleton, peft=spec.peft, model=spec.model))["trainable_params"]


def link_base(base: torch.nn.Module, *, shared: Path, model_dir: Path) -> None:
    """A random-init base is saved beside the adapter, as training does, but once per acceptance
    run: every check builds it from the same seed, so each model dir links to one copy. (A base that
    differed would fail the reload check, not pass it.)"""
    if not (shared / "base").is_dir():
        save_base(base, model_dir=shared)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "base").symlink_to((shared / "base").resolve())


def logits(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(pixel_values=pixels).logits.float()


def method_check(
    *,
    method: str,
    size: Size,
    precision: str,
    device: str,
    work: Path,
    compile: bool = False,
    steps: int | None = None,
    export: bool = True,
) -> tuple[dict[str, bool], dict[str, Any]]:
    """Train `method` at its shipped defaults; returns (criteria, figures). `export`: also check the
    export through pipeline() (where the method folds)."""
    steps = steps or size.check_steps
    spec = run_spec(
        *size.model,
        f"peft={method}",
        f"train.precision={precision}",
        f"train.compile={compile}",
        output_dir=work / "run",
    )
    labels = [f"class_{k}" for k in range(CLASSES)]
    model_dir = work / "run" / "model"
    probe, losses, pixels, ended, figures = train_and_save(
        spec,
        size=size,
        precision=precision,
        steps=steps,
        labels=labels,
        model_dir=model_dir,
        device=device,
        shared_base=work.parent / "shared_base",
    )
    figures.update(compile=compile, trainable_params_meta=meta_trainable(spec, labels))
    criteria = training_criteria(losses, probe, figures, steps=steps, precision=precision)
    criteria.update(
        reload_criteria(
            spec, model_dir, pixels=pixels, ended=ended, device=device, work=work, export=export, figures=figures
        )
    )
    return criteria, figures


def train_and_save(
    spec: RunSpec,
    *,
    size: Size,
    precision: str,
    steps: int,
    labels: list[str],
    model_dir: Path,
    device: str,
    shared_base: Path,
) -> tuple[StepProbe, list[float], torch.Tensor, torch.Tensor, dict]:
    """`steps` optimizer steps through training's Trainer, then the model saved as a run saves it.
    Returns the step probe, the logged losses, the probe images (uint8), the logits the trained model
    gives them (fp32) and the run's figures."""
    set_seed(spec.seed)
    base, processor = load_base(model=spec.model, labels=labels)
    if spec.peft.saves_base and not spec.model.pretrained:
        link_base(base, shared=shared_base, model_dir=model_dir)
    model = apply_peft(base, peft=spec.peft, model=spec.model)
    trainable = count_parameters(model)["trainable_params"]
    pixels = ColourPixels(
        n=size.check_batch * steps, size=input_sizes(processor)[0], classes=CLASSES, pool=4 * size.check_batch
    )
    probe = StepProbe()
    train = replace(
        spec.train,
        batch_size=size.check_batch,
        eval_batch_size=size.check_batch,
        grad_accum=1,
        max_steps=steps,
        logging_steps=1,
    )
    trainer = build_image_trainer(
        model=model,
        processor=processor,
        train_dataset=pixels,
        eval_dataset=None,
        train=train,
        precision=precision,
        workers=0,
        run_dir=model_dir.parent,
        seed=spec.seed,
        callbacks=[probe, *spec.peft.callbacks()],
        metrics=None,
        **{**NO_SELECTION, "save_strategy": "no"},
    )
    probe.trainer = trainer
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    # The trained module itself: without accelerate's autocast wrapper (fp32 logits) or compile.
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False, keep_torch_compile=False).eval()
    probe_pixels = pixels.pixels[:PROBE_IMAGES]
    ended = logits(model, normalize(probe_pixels, mean=processor.image_mean, std=processor.image_std).to(device))
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)
    save_trained(model, processor, model_dir=model_dir, peft=spec.peft, labels=labels, base=spec.model)
    step_s = probe.step_s[1:] or probe.step_s
    figures = {
        "model": spec.model.name,
        "precision": precision,
        "batch": size.check_batch,
        "steps": len(losses),
        "lr": train.lr,
        "losses": losses,
        "trainable_params": trainable,
        "trained_params_finite": finite,
        "first_step_s": probe.step_s[0] if probe.step_s else None,
        "median_step_s": statistics.median(step_s),
    }
    return probe, losses, probe_pixels, ended, figures


def training_criteria(
    losses: list[float], probe: StepProbe, figures: dict[str, Any], *, steps: int, precision: str
) -> dict[str, bool]:
    first, last = statistics.fmean(losses[:LOSS_WINDOW]), statistics.fmean(losses[-LOSS_WINDOW:])
    figures.update(loss_first_mean=first, loss_last_mean=last, loss_last_over_first=last / first)
    criteria = {
        f"{steps} optimizer steps logged": len(losses) == steps,
        "every loss finite": all(math.isfinite(x) for x in losses),
        "every trained parameter finite": figures["trained_params_finite"],
        f"loss falls (mean of last {LOSS_WINDOW} < mean of first {LOSS_WINDOW})": last < first,
        "trainable count = meta-device count": figures["trainable_params"] == figures["trainable_params_meta"],
    }
    if precision == "fp16":
        final = probe.scales[-1] if probe.scales else None
        figures.update(scales=probe.scales, final_scale=final, skipped_steps=probe.skipped)
        criteria[f"GradScaler scale >= {SCALE_FLOOR:g} at the end"] = final is not None and final >= SCALE_FLOOR
    return criteria


def reload_criteria(
    spec: RunSpec,
    model_dir: Path,
    *,
    pixels: torch.Tensor,
    ended: torch.Tensor,
    device: str,
    work: Path,
    export: bool,
    figures: dict[str, Any],
) -> dict[str, bool]:
    """The saved model reloaded (predict's loader) against the trained logits; and its export."""
    trained = load_trained(model_dir)
    files = write_pngs(pixels, work / "probe")
    exported = export and spec.peft.unfoldable is None
    predicted = classify(trained, files, top_k=len(trained.labels), batch_size=len(files)) if exported else None
    batch = normalize(pixels, mean=trained.processor.image_mean, std=trained.processor.image_std).to(device)
    diff = float((logits(trained.model.to(device), batch) - ended).abs().max())
    figures["reload_max_abs_logit_diff"] = diff
    criteria = {f"reloaded logits = trained logits (max |diff| <= {RELOAD_TOL:g}, fp32)": diff <= RELOAD_TOL}
    del trained
    if predicted is None:
        figures["export"] = f"not exported: {spec.peft.unfoldable or 'checked in the last precision only'}"
    else:
        criteria.update(
            export_agrees(
                model_dir, work / "exported", files=files, predicted=predicted, device=device, figures=figures
            )
        )
    return criteria


def export_agrees(
    model_dir: Path, out_dir: Path, *, files: list[Path], predicted: list[Any], device: str, figures: dict[str, Any]
) -> dict[str, bool]:
    """peft-food-export's model through transformers' pipeline() on `device`, against predict's scores."""
    export(model_dir, out_dir)
    classifier = pipeline("image-classification", model=str(out_dir), device=torch.device(device))
    piped = classifier([str(f) for f in files], top_k=len(predicted[0].predictions))
    diffs, same_top1 = [], []
    for ours, theirs in zip(predicted, piped):
        mine = {p["label"]: p["score"] for p in ours.predictions}
        diffs += [abs(mine[r["label"]] - r["score"]) for r in theirs]
        same_top1.append(ours.predictions[0]["label"] == theirs[0]["label"])
    figures.update(export_max_abs_prob_diff=max(diffs), export_same_top1=sum(same_top1), export_images=len(files))
    return {
        "export + pipeline(): same top-1 as predict on every image": all(same_top1),
        f"export + pipeline(): probabilities within {EXPORT_TOL:g} of predict": max(diffs) <= EXPORT_TOL,
    }
