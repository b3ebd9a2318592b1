"""What a trained run reports: the saved model's test predictions (metrics, per-class results and
examples, in the run dir and W&B) and the one result line that says how the number was obtained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from transformers import Trainer

from peft_food.data.images import to_rgb
from peft_food.evaluation.results import EvalResults
from peft_food.evaluation.results import write as write_results
from peft_food.tracking.record import RunRecord
from peft_food.tracking.wandb_run import log_results
from peft_food.training.trainer import split_metrics


def report_results(
    trainer: Trainer,
    test: Any,
    *,
    labels: list[str],
    out_dir: Path | None,
    wandb_run: Any,
    examples: int,
    metrics: list[str],
    split: str,
) -> dict[str, float]:
    """The test metrics and per-class results of the model that is saved (the best checkpoint,
    reloaded at the end): files in the run dir and tables in W&B (results.py), each naming `split`.
    Every rank predicts; the main one writes."""
    output = trainer.predict(test, metric_key_prefix="test")
    if out_dir is not None:
        results = EvalResults(logits=np.asarray(output.predictions), labels=np.asarray(output.label_ids), names=labels)
        shown = results.examples(examples)
        raw = test.with_format(None)  # the images as stored, not the model's tensors
        images = [to_rgb(raw[i]["image"]) for i in shown]
        write_results(results, out_dir=out_dir, examples=shown, images=images, split=split)
        if wandb_run is not None:
            log_results(wandb_run, results, examples=shown, images=images, out_dir=out_dir)
    return split_metrics(output.metrics, prefix="test", metrics=metrics)


def result_line(record: RunRecord) -> str:
    """What the run reports, with how it was obtained: "test accuracy 0.6150 (checkpoint of epoch
    6, best val accuracy 0.6400; final epoch: 0.6050); test accuracy of the checkpoint with ..."."""
    if record.protocol == "retrain":
        value = record.reported("accuracy")
        return f"test accuracy {value:.4f}; {record.describe_protocol()}" if value is not None else "no result"
    best = record.best_epoch or {}
    watched = record.monitor.removeprefix("eval_")
    chosen = f"checkpoint of epoch {best.get('epoch', 0):g}, best {record.selected_on} {watched} {record.best:.4f}"
    final = record.reported("accuracy", checkpoint="final")
    value = record.reported("accuracy")
    head = "eval" if record.protocol == "seed" else "test"
    return (
        (f"{head} accuracy {value:.4f} ({chosen}; final epoch: {final:.4f}); {record.describe_protocol()}")
        if value is not None and final is not None
        else "no result"
    )
