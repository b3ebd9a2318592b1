"""Training stage: compose data, model and Trainer once each, train, and record the run.

    peft-food-train experiment=quickstart                  # offline, CPU, ~1 minute
    peft-food-train                                        # the seed recipe (needs the Hub)
    peft-food-train peft=full                              # full fine-tuning
    peft-food-train peft.r=8 peft.alpha=32 train.epochs=3 logger.project=my-proj
    peft-food-train model=dinov2_small peft=ia3            # any method on any backbone

`main` is a thin Hydra wrapper; tests and sweepers call `train(cfg) -> metrics`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from transformers import Trainer, TrainerCallback, set_seed

from peft_food.artifacts import save_base, save_trained
from peft_food.config import RunSpec, parse_config, resolve
from peft_food.data import load_splits
from peft_food.distributed import is_main_process, share_run_dir, world_size
from peft_food.errors import UserError
from peft_food.methods import FullSpec, method_label
from peft_food.model import apply_peft, check_targets, count_parameters, load_base
from peft_food.resume import Interrupted, StopOnSignal, latest_checkpoint, plan_resume
from peft_food.sweep import is_multirun, job_labels
from peft_food.tracking import finish_wandb, provenance, start_wandb, write_json
from peft_food.trainer import (
    EpochRecorder,
    ImageTrainer,
    accuracy,
    epoch_metrics,
    peak_memory_mb,
    resolve_precision,
    resolve_workers,
    training_arguments,
    weights_mb,
)
from peft_food.transforms import attach_transforms, collate

log = logging.getLogger(__name__)

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def build_trainer(spec: RunSpec, *, run_dir: Path, precision: str, method: str, record: dict[str, Any],
                  callbacks: list[TrainerCallback], report_to: list[str]) -> tuple[Trainer, Any, list[str]]:
    """Data, model and Trainer, once each; fills the record's parameter and sample counts."""
    splits = load_splits(spec.data, seed=spec.seed)
    base, processor = load_base(model=spec.model, labels=splits.labels)
    # Every method but full saves only what it trained; a random-init base exists nowhere else.
    if not spec.model.pretrained and not isinstance(spec.peft, FullSpec) and is_main_process():
        save_base(base, model_dir=run_dir / "model")
    model = apply_peft(base, peft=spec.peft, model=spec.model)
    record.update(count_parameters(model), num_labels=len(splits.labels), labels=splits.labels,
                  num_train_samples=len(splits.train), num_eval_samples=len(splits.eval))
    log.info("trainable params: %(trainable_params)s || all params: %(total_params)s "
             "|| trainable%%: %(trainable_percent)s", record)
    attach_transforms(splits, processor, uint8=spec.data.uint8, cache=spec.data.cache,
                      fast_decode=spec.data.fast_decode)
    args = training_arguments(train=spec.train, precision=precision, workers=resolve_workers(spec.train.workers),
                              run_dir=run_dir, seed=spec.seed, report_to=report_to)
    trainer = ImageTrainer(model=model, args=args, train_dataset=splits.train, eval_dataset=splits.eval,
                           data_collator=collate, compute_metrics=accuracy, callbacks=callbacks,
                           mean=processor.image_mean, std=processor.image_std)
    return trainer, processor, splits.labels


def run(spec: RunSpec, *, resolved_config: dict[str, Any], resume_search: Path | None = None) -> dict[str, Any]:
    """Train one model as `spec` says; write model/ and metrics.json into its run dir (spec.output_dir,
    or the unfinished run being resumed)."""
    started = time.perf_counter()
    check_targets(spec.model, peft=spec.peft)
    resume_dir = plan_resume(Path(spec.output_dir), mode=spec.train.resume, search_root=resume_search)
    run_dir = resume_dir or Path(spec.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = json.loads((run_dir / "metrics.json").read_text()) if resume_dir else {}
    set_seed(spec.seed)
    precision = resolve_precision(spec.train.precision)
    method = method_label(spec.peft)
    main_process = is_main_process()  # under torchrun only rank 0 writes records and logs to W&B
    record: dict[str, Any] = {"status": "running", "method": method, "precision": precision, **provenance(),
                              "config": resolved_config, "run_dir": str(run_dir), "world_size": world_size(),
                              "effective_batch_size": spec.train.batch_size * spec.train.grad_accum * world_size()}
    checkpoint = latest_checkpoint(run_dir) if resume_dir else None
    if checkpoint:
        record["resumed_from"] = [*previous.get("resumed_from", []), checkpoint.name]
    if main_process:
        write_json(run_dir / "metrics.json", record)
    logger = spec.logger if main_process else replace(spec.logger, enabled=False)
    wandb_run = start_wandb(spec=logger, run_dir=run_dir, config={"method": method, **resolved_config},
                            tags=[method, spec.model.name], run_id=previous.get("wandb_run_id"))
    if wandb_run is not None:
        record["wandb_run_id"] = wandb_run.id
    stopper = StopOnSignal()
    try:
        trainer, processor, labels = build_trainer(
            spec, run_dir=run_dir, precision=precision, method=method, record=record,
            callbacks=[EpochRecorder(record, run_dir / "metrics.json"), stopper],
            report_to=["wandb"] if wandb_run else [])
        if wandb_run is not None:
            wandb_run.summary.update({k: record[k] for k in ("trainable_params", "total_params", "trainable_percent")})
        with stopper:
            output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if stopper.signum is not None:
            raise Interrupted(stopper.signum, latest_checkpoint(run_dir))
        epochs = epoch_metrics(trainer.state.log_history)
        if main_process:
            save_trained(trainer.model, processor, model_dir=run_dir / "model", method=method, labels=labels,
                         base=spec.model)
        record.update(status="completed", epochs=epochs, best_eval_accuracy=max(e["eval_accuracy"] for e in epochs),
                      final_eval_accuracy=epochs[-1]["eval_accuracy"],
                      train_img_per_s=round(output.metrics["train_samples_per_second"], 2),
                      peak_mem_mb=peak_memory_mb(),
                      model_size_mb=weights_mb(run_dir / "model") if main_process else None)
    except (Interrupted, KeyboardInterrupt) as err:
        record.update(status="interrupted", error=str(err) or "KeyboardInterrupt")
        raise
    except BaseException as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        record["runtime_s"] = round(time.perf_counter() - started, 2)
        if main_process:
            write_json(run_dir / "metrics.json", record)
        summary = {k: v for k, v in record.items() if k in SUMMARY_KEYS}
        finish_wandb(wandb_run, summary=summary, failed=record["status"] != "completed")
    return record


SUMMARY_KEYS = ("status", "method", "precision", "trainable_params", "total_params", "trainable_percent",
                "best_eval_accuracy", "final_eval_accuracy", "num_eval_samples", "num_labels", "runtime_s",
                "train_img_per_s", "peak_mem_mb", "model_size_mb", "epoch_wall_s")


def train(cfg: DictConfig, *, resume_search: Path | None = None) -> dict[str, Any]:
    """Validate the composed config (before any compute), then train. Returns metrics.json's content.
    `resume_search`: where to look for an unfinished run of the same command (the CLI's outputs/)."""
    spec = parse_config(cfg)
    return run(spec, resolved_config=resolve(cfg), resume_search=resume_search)


def record_failure(cfg: DictConfig, err: BaseException) -> None:
    """A job that failed before run() started still leaves a metrics.json saying so, with the
    config as composed (unresolved: resolving may be what failed)."""
    path = Path(str(cfg.output_dir)) / "metrics.json"
    if is_main_process() and not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        config = OmegaConf.to_container(cfg, resolve=False)
        write_json(path, {"status": "failed", "error": f"{type(err).__name__}: {err}", "config": config})


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra edge: label multirun jobs for W&B, run, and turn failures into one line + exit code.

    In a multirun a failed job returns NaN instead of raising, so the remaining jobs still run;
    SweepSummary then lists the failures and exits non-zero."""
    for key, value in job_labels(sweep_name=cfg.get("sweep_name")).items():
        if cfg.logger.get(key) is None:
            cfg.logger[key] = value
    cfg.output_dir = share_run_dir(HydraConfig.get().runtime.output_dir)
    # Same command again -> continue its unfinished run: look among the timestamped run dirs.
    search = None if is_multirun() else Path(cfg.output_dir).parent.parent
    try:
        metrics = train(cfg, resume_search=search)
    except Interrupted as err:
        print(f"peft-food-train: {err}", file=sys.stderr)
        sys.exit(128 + err.signum)
    except UserError as err:
        # A user mistake: one line that names the problem and the fix, no traceback.
        print(f"peft-food-train: error: {err}", file=sys.stderr)
        record_failure(cfg, err)
        if is_multirun():
            return float("nan")
        sys.exit(2)
    except Exception as err:
        if not is_multirun():
            raise
        log.exception("job failed: %s", err)
        record_failure(cfg, err)
        return float("nan")
    if is_main_process():
        print(json.dumps({k: metrics.get(k) for k in SUMMARY_KEYS}))
    return metrics["best_eval_accuracy"]


if __name__ == "__main__":
    main()
