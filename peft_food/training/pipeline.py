"""The training pipeline behind `peft-food-train`: data, model and Trainer composed once each,
trained, recorded and reported (cli/train.py is the light command-line edge that calls `run`).

    from peft_food.training.pipeline import train
    record = train(cfg)          # a composed config -> the run's RunRecord (tests, reproduce)
"""

from __future__ import annotations

import functools
import logging
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from omegaconf import DictConfig
from transformers import Trainer, TrainerCallback, set_seed

from peft_food import progress
from peft_food.config import RunSpec, parse_config
from peft_food.data.splits import Splits, load_splits, selection_split
from peft_food.data.store import Plan, store_plan
from peft_food.data.transforms import attach_transforms
from peft_food.methods.apply import apply_peft, check_targets
from peft_food.model.backbone import count_parameters, load_base, load_processor
from peft_food.saved.artifacts import save_base, save_trained
from peft_food.saved.cards import write_card
from peft_food.saved.hub import TRAIN_LATER, require_online, require_token
from peft_food.tracking.curves import FILE as CURVES_FILE
from peft_food.tracking.curves import write_curves
from peft_food.tracking.provenance import provenance
from peft_food.tracking.record import RECORD_FILE, Counts, Efficiency, RunRecord
from peft_food.tracking.wandb_run import (
    WandbMetrics,
    log_model,
    start_wandb,
)
from peft_food.training.checkpoints import drop_torn_checkpoints, kept_epochs
from peft_food.training.console import progress_lines
from peft_food.training.distributed import is_main_process, world_size
from peft_food.training.early_stop import EarlyStop
from peft_food.training.ending import recorded, share
from peft_food.training.report import report_results, result_line
from peft_food.training.rundir import (
    RunDirInUse,
    RunDirLock,
    adopt_stub,
    discard_stub,
    latest_checkpoint,
    plan_resume,
    point_latest,
    resumed_record,
)
from peft_food.training.signals import StopOnSignal
from peft_food.training.trainer import (
    NO_SELECTION,
    EpochRecorder,
    build_image_trainer,
    epoch_metrics,
    load_best,
    peak_memory_mb,
    resolve_precision,
    resolve_workers,
    test_metrics,
    weights_mb,
)

log = logging.getLogger(__name__)


def train(cfg: DictConfig, *, resume_search: Path | None = None, started: float | None = None) -> RunRecord:
    """Validate the composed config (before any compute), then train. Returns the run's record.
    `resume_search`: where to look for an unfinished run of the same command (the CLI's outputs/);
    `started`: when the job began (time.time(); None: now), for the record's startup_s."""
    return run(parse_config(cfg), resume_search=resume_search, started=started)


def build_trainer(
    spec: RunSpec, *, run_dir: Path, precision: str, record: RunRecord, callbacks: list[TrainerCallback]
) -> tuple[Trainer, Any, Splits]:
    """Data, model and Trainer, once each; fills the record's labels and counts. The
    Trainer evaluates val every epoch; the returned splits' test is for the end."""
    splits = load_splits(spec.data, seed=spec.seed, plan=data_plan(spec))
    base, processor = load_base(model=spec.model, labels=splits.labels)
    if not spec.model.pretrained and spec.peft.saves_base and is_main_process():
        save_base(base, model_dir=run_dir / "model")
    model = apply_peft(base, peft=spec.peft, model=spec.model)
    _count(record, model=model, splits=splits)
    splits = attach_transforms(
        splits, processor, uint8=spec.data.uint8, cache=spec.data.cache, fast_decode=spec.data.fast_decode
    )
    trainer = build_image_trainer(
        model=model,
        processor=processor,
        train_dataset=splits.train,
        eval_dataset=splits.val,
        train=spec.train,
        precision=precision,
        workers=resolve_workers(spec.train.workers),
        run_dir=run_dir,
        seed=spec.seed,
        callbacks=callbacks,
        metrics=spec.train.metrics,
        **(NO_SELECTION if splits.val is None else {}),
    )
    return trainer, processor, splits


def _count(record: RunRecord, *, model: Any, splits: Splits) -> None:
    """The record's labels and counts (parameters, classes, images per split), said in two lines."""
    record.labels = splits.labels
    record.counts = Counts(
        **count_parameters(model),
        num_labels=len(splits.labels),
        num_train_samples=len(splits.train),
        num_eval_samples=len(splits.val or []),
        num_test_samples=None if splits.selects_on_test else len(splits.test),
    )
    log.info(
        "trainable params: %(trainable_params)s || all params: %(total_params)s || trainable%%: %(trainable_percent)s",
        vars(record.counts),
    )
    log.info(
        "protocol %s, %d classes (%s): the run reports the %s",
        record.protocol,
        len(splits.labels),
        named(splits.labels),
        record.describe_protocol(),
    )


def named(labels: list[str], shown: int = 6) -> str:
    """The first `shown` class names and how many more: a run's start line stays one line at 101 classes."""
    more = f", ... (+{len(labels) - shown} more)" if len(labels) > shown else ""
    return ", ".join(labels[:shown]) + more


def data_plan(spec: RunSpec) -> Plan | None:
    """With data.store, the stores at the model's sizes (its processor needs no weights)."""
    if not spec.data.store:
        return None
    return store_plan(load_processor(spec.model), side=spec.data.store_side, store_dir=spec.data.store_dir)


def run(spec: RunSpec, *, resume_search: Path | None = None, started: float | None = None) -> RunRecord:
    """Train one model as `spec` says; write model/ and metrics.json into its run dir (spec.output_dir,
    or the unfinished run being resumed). `started`: when the job began (None: now)."""
    started = time.time() if started is None else started
    progress.use(spec.progress)
    check_targets(spec.model, peft=spec.peft)
    if spec.hub.push and not spec.hub.dry_run and is_main_process():
        # No token or no Hub: refused now, in one line, not after the whole run has trained.
        require_token()
        require_online(later=TRAIN_LATER)
    resume_dir = plan_resume(
        Path(spec.output_dir), mode=spec.train.resume, search_root=resume_search, config=spec.config
    )
    run_dir = resume_dir or Path(spec.output_dir)
    main_process = is_main_process()  # under torchrun only rank 0 writes records and logs to W&B
    with _held(run_dir, stub=Path(spec.output_dir)) if main_process else nullcontext():
        if resume_dir is not None and main_process:
            log.warning(
                "resuming the unfinished run in %s from %s (train.resume=false starts fresh)",
                run_dir,
                latest_checkpoint(run_dir).name,
            )
            adopt_stub(Path(spec.output_dir), run_dir=run_dir)
        record = _train_in(run_dir, spec, resumed=resume_dir is not None, started=started)
    # outputs/latest names the run a user looks for next. Only in the default layout (outputs/<date>/<time>):
    # a run dir of the user's own (hydra.run.dir=...) has no outputs/ of ours to link from.
    if main_process and resume_search is not None and resume_search.name == "outputs":
        point_latest(resume_search, run_dir=run_dir)
    if main_process and spec.hub.push:  # only a completed run gets here, its record final on disk
        share(run_dir, hub=spec.hub)
    return record


@contextmanager
def _held(run_dir: Path, *, stub: Path) -> Iterator[None]:
    """`run_dir`'s lock for the whole run. Refused (a live process holds it), this launch leaves
    nothing behind: not even the new run dir Hydra made for it, which would otherwise be the
    newest run dir and hold no model."""
    try:
        with RunDirLock(run_dir):
            yield
    except RunDirInUse:
        if stub.resolve() != run_dir.resolve():
            discard_stub(stub)
        raise


def _train_in(run_dir: Path, spec: RunSpec, *, resumed: bool, started: float) -> RunRecord:
    """The run in its steps: where it resumes from, its record, W&B, training, selection and test,
    saving. Every exit goes through `recorded` (the failure path); a signal stops it (`stopper`)."""
    main_process = is_main_process()
    previous, checkpoint = _resume_point(run_dir, resumed=resumed, main_process=main_process)
    set_seed(spec.seed)
    precision = resolve_precision(spec.train.precision)
    record = _new_record(spec, precision=precision, previous=previous, checkpoint=checkpoint)
    path = run_dir / RECORD_FILE if main_process else None
    if path is not None:
        record.write(path)
    split = selection_split(spec.data.protocol)
    open_wandb = _wandb_starter(
        spec, run_dir=run_dir, record=record, previous=previous, split=split, main_process=main_process
    )
    stopper = StopOnSignal(checkpoint=lambda: latest_checkpoint(run_dir))
    with recorded(record, path=path, wandb=open_wandb) as wandb_run, stopper:
        if wandb_run is not None and previous is not None:
            wandb_run.summary["resumed_after"] = previous.status  # how the launch before ended (dead: killed)
        watchers = _watchers(
            spec, record=record, run_dir=run_dir, started=started, stopper=stopper, wandb_run=wandb_run, split=split
        )
        trainer, processor, splits = build_trainer(
            spec, run_dir=run_dir, precision=precision, record=record, callbacks=watchers
        )
        if wandb_run is not None:
            wandb_run.summary.update(vars(record.counts))
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        stopper.finish()  # stopped by a signal: Interrupted; from here on a signal stops at once
        _select_and_test(
            trainer, splits, record=record, spec=spec, out_dir=run_dir if main_process else None, wandb_run=wandb_run
        )
        log.info(result_line(record))
        if main_process:
            write_curves(record, trainer.state.log_history, run_dir / CURVES_FILE)  # the selected epoch marked
            _save(trainer.model, processor, record=record, spec=spec, model_dir=run_dir / "model")
        record.efficiency = _measured(record.efficiency, model_dir=run_dir / "model" if main_process else None)
        _log_model(wandb_run, spec=spec, record=record, model_dir=run_dir / "model")
    return record


def _watchers(
    spec: RunSpec,
    *,
    record: RunRecord,
    run_dir: Path,
    started: float,
    stopper: StopOnSignal,
    wandb_run: Any,
    split: str,
) -> list[TrainerCallback]:
    """What watches the training: the record each epoch, the signal stopper, progress lines (a
    redirected log has no bar), W&B, and the method's own (e.g. AdaLoRA's rank budget, every step)."""
    return [
        EpochRecorder(record, run_dir / RECORD_FILE, metrics=spec.train.metrics, started=started),
        stopper,
        *progress_lines(spec.progress_every_s),
        *([WandbMetrics(wandb_run, split=split)] if wandb_run else []),
        *spec.peft.callbacks(),
    ]


def _measured(efficiency: Efficiency, *, model_dir: Path | None) -> Efficiency:
    """The run's speed, peak memory and (on the main process) the saved weights' size."""
    return replace(
        efficiency,
        train_img_per_s=efficiency.img_per_s(),
        peak_mem_mb=peak_memory_mb(),
        model_size_mb=weights_mb(model_dir) if model_dir is not None else None,
    )


def _resume_point(run_dir: Path, *, resumed: bool, main_process: bool) -> tuple[RunRecord | None, Path | None]:
    """The record of the launch being resumed (its status as it ended: dead if it was killed) and the
    checkpoint to continue from, torn ones dropped first; (None, None) for a fresh run."""
    if not resumed:
        return None, None
    previous = resumed_record(run_dir)
    if main_process:
        drop_torn_checkpoints(run_dir)
    return previous, latest_checkpoint(run_dir)


def _new_record(spec: RunSpec, *, precision: str, previous: RunRecord | None, checkpoint: Path | None) -> RunRecord:
    """The run's record as it starts: what runs, where it came from, and what a resumed run keeps."""
    return RunRecord(
        status="running",
        method=spec.peft.label,
        protocol=spec.data.protocol,
        monitor=spec.train.monitor_key,
        config=spec.config,
        provenance=provenance(
            precision=precision,
            world_size=world_size(),
            effective_batch_size=spec.train.batch_size * spec.train.grad_accum * world_size(),
        ),
        resumed_from=[*(previous.resumed_from if previous else []), *([checkpoint.name] if checkpoint else [])],
        epochs=kept_epochs(previous, checkpoint),  # the epochs done up to the checkpoint are never lost
    )


def _wandb_starter(
    spec: RunSpec, *, run_dir: Path, record: RunRecord, previous: RunRecord | None, split: str, main_process: bool
) -> Callable[[], Any]:
    """How `recorded` starts the W&B run (inside the failure path): the run's config is the resolved
    Hydra config, the method and where the run came from; a resumed run continues its W&B run."""
    logger = spec.logger if main_process else replace(spec.logger, enabled=False)
    wandb_config = {"method": spec.peft.label, **spec.config, "provenance": asdict(record.provenance)}
    return functools.partial(
        start_wandb,
        spec=logger,
        run_dir=run_dir,
        config=wandb_config,
        tags=[spec.peft.label, spec.model.name],
        metrics=spec.train.metrics,
        split=split,
        run_id=previous.wandb_run_id if previous else None,
    )


def _select_and_test(
    trainer: Trainer, splits: Splits, *, record: RunRecord, spec: RunSpec, out_dir: Path | None, wandb_run: Any
) -> None:
    """The epochs into the record; the last epoch's model tested, then the selected checkpoint loaded
    and tested with its per-class results (protocol retrain: the last epoch's model, nothing selected)."""
    record.epochs = epoch_metrics(trainer.state.log_history, metrics=spec.train.metrics)
    record.stopped_early = next(
        (c.stopped for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStop)), None
    )
    final_test = None
    if splits.val is not None:  # the last epoch's model is in hand: test it, then load the selected one
        if not splits.selects_on_test:
            final_test = test_metrics(trainer, splits.test, metrics=spec.train.metrics)
        load_best(trainer)
    best_test = report_results(
        trainer,
        splits.test,
        labels=record.labels,
        out_dir=out_dir,
        wandb_run=wandb_run,
        examples=spec.logger.examples,
        metrics=spec.train.metrics,
        # The seed protocol reports its one held-out split, which also picked the checkpoint.
        split="the held-out eval split" if splits.selects_on_test else "test",
    )
    if splits.val is None:  # protocol retrain: the model is the last epoch's, nothing was selected
        record.test = {"final": best_test}
    elif not splits.selects_on_test:
        record.test = {"best": best_test, "final": final_test}


def _save(model: Any, processor: Any, *, record: RunRecord, spec: RunSpec, model_dir: Path) -> None:
    """What the method trained, the processor and the model card (over peft's placeholder card)."""
    save_trained(model, processor, model_dir=model_dir, peft=spec.peft, labels=record.labels, base=spec.model)
    write_card(record, model_dir, library=spec.peft.library, unfoldable=spec.peft.unfoldable)


def _log_model(wandb_run: Any, *, spec: RunSpec, record: RunRecord, model_dir: Path) -> None:
    """The saved model as a W&B artifact: by default only what is small (not a whole model)."""
    wants_model = spec.logger.log_model if spec.logger.log_model is not None else not spec.peft.saves_whole_model
    if wandb_run is not None and wants_model:
        log_model(
            wandb_run,
            model_dir=model_dir,
            record=record,
            base=spec.model.name_or_path or f"{spec.model.name} (random init)",
        )
