"""How every run ends, in one place (lightning-hydra-template's task_wrapper): `recorded` wraps a
run and, whatever the exit (completed, a signal, a full disk, any error), sets the record's status
and runtime, writes it and finishes the W&B run; `share` pushes a completed run (hub.push=true).
The pipeline (pipeline.py) holds the happy path.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from peft_food.config import HubSpec
from peft_food.errors import Interrupted, UserError
from peft_food.files import disk_full
from peft_food.saved.sharing import push, stage
from peft_food.tracking.record import RunRecord
from peft_food.tracking.wandb_run import finish_wandb

log = logging.getLogger(__name__)


@contextmanager
def recorded(record: RunRecord, *, path: Path | None, wandb: Callable[[], Any]) -> Iterator[Any]:
    """The failure path of a run, in one place (lightning-hydra-template's task_wrapper): every
    exit sets the status, the runtime, writes the record and finishes the W&B run. `wandb` starts
    the W&B run (None for none) inside it, so a W&B that cannot start fails the record too;
    yields that run."""
    started = time.perf_counter()
    wandb_run = None
    try:
        wandb_run = wandb()
        record.wandb_run_id = wandb_run.id if wandb_run is not None else None
        yield wandb_run
        record.status = "completed"
    except (Interrupted, KeyboardInterrupt) as err:
        record.status, record.error = "interrupted", str(err) or "KeyboardInterrupt"
        raise
    except BaseException as err:
        full = disk_full(err, where=path.parent if path is not None else Path.cwd())
        record.status, record.error = "failed", str(full) if full else f"{type(err).__name__}: {err}"
        if full is not None:
            raise full from None  # one line: the library's own error names no path, or no cause at all
        raise
    finally:
        record.efficiency.runtime_s = round(time.perf_counter() - started, 2)
        if path is not None:
            _write_record(record, path)
        finish_wandb(wandb_run, summary=record.summary(), failed=record.status != "completed")


def _write_record(record: RunRecord, path: Path) -> None:
    """The record at the end of a run; on a full disk the previous one stays (atomic writes) and a
    warning says so: the same command still resumes a run whose record says `running`."""
    try:
        record.write(path)
    except OSError as err:
        if disk_full(err, where=path.parent) is None:
            raise
        log.warning("could not write %s (no space left): it still says the run is running", path)


def share(run_dir: Path, *, hub: HubSpec) -> None:
    """hub.push=true: push the completed run (hub.dry_run: stage it in <run dir>/hub/ instead). A push
    that fails leaves the run as it is, completed; the one line says how to push it again."""
    if hub.dry_run:
        staged = stage(run_dir, run_dir / "hub", repo_id=hub.repo_id, merged=hub.merged, say=log.warning)
        log.info("hub.dry_run=true: nothing pushed; %s", staged.describe())
        return
    try:
        url = push(
            run_dir, repo_id=hub.repo_id, merged=hub.merged, private=hub.private, revision=hub.revision, say=log.warning
        )
    except UserError as err:
        raise UserError(
            f"the run completed ({run_dir}) but was not pushed: {err}; push it with "
            f"peft-food-push {run_dir} {hub.repo_id}{' --merged' if hub.merged else ''}"
        ) from None
    log.info("pushed %s to https://huggingface.co/%s in one commit: %s", run_dir, hub.repo_id, url)
