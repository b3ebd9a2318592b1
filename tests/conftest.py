"""Shared fixtures (the helpers they use, and that tests import, are in tests/helpers.py)."""

from __future__ import annotations

import os

import pytest

# One torch thread in the test process and in every process a test starts (they inherit the
# environment; torch reads OMP_NUM_THREADS when imported): the tiny models gain nothing from a
# second intra-op thread, and on a busy 2-core AMD EPYC CPU two threads wait on each other (a
# one-epoch tiny run took 50 s with two threads, 12 s with one). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path_factory):
    """W&B as a user without an account has it: no API key, no ~/.netrc login, no forced mode."""
    from tests.helpers import scrub_wandb

    scrub_wandb(monkeypatch, home=tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """`tiny_run(*overrides) -> (run_dir, record)`: a finished tiny run (TINY_QUIET + overrides),
    trained once per session and shared by every test that asks for the same overrides. Trained
    under umask 022 as on a shared machine (tests/test_trust.py checks its files' modes). A test
    that changes the run dir works on a copy (helpers.copy_run)."""
    from peft_food.training.pipeline import train
    from tests.helpers import TINY_QUIET, compose_config, umask

    runs = {}

    def trained(*overrides: str):
        if overrides not in runs:
            run_dir = tmp_path_factory.mktemp("tiny_run")
            with umask(0o022):
                record = train(compose_config(*TINY_QUIET, *overrides, output_dir=run_dir))
            runs[overrides] = run_dir, record
        return runs[overrides]

    return trained


# The two trained runs the saved-model tests share (tests/test_predict.py, tests/test_trust.py).
@pytest.fixture(scope="session")
def lora_run(tiny_run):
    return tiny_run("train.epochs=3")


@pytest.fixture(scope="session")
def full_run(tiny_run):
    return tiny_run("peft=full")[0]


# Garbage collection without the imports (speed-b): Trainer runs gc.collect() as every training
# starts, and a full collection walks every object alive, ~576,000 of them once torch,
# transformers, peft and matplotlib are imported (0.3 s per collection on a 2-core AMD EPYC CPU,
# once per tiny run). Collected once, what is alive at the session's start (modules, classes,
# functions: alive until the process ends) is frozen out of later collections (gc.freeze); every
# object made later is collected as before.
@pytest.fixture(scope="session", autouse=True)
def imports_out_of_gc():
    import gc

    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


# (speed-b) The food101-mini run that test_train's 450/50/200 test and test_predict's pipeline
# export test both read (tiny ViT, 2 epochs, real photos): trained once per session. Neither
# changes its run dir (the export is written beside it).
@pytest.fixture(scope="session")
def mini_run(tmp_path_factory):
    from peft_food.training.pipeline import train
    from tests.helpers import MINI, NO_EXAMPLES, NO_WANDB, TINY_TRAIN, compose_config

    run_dir = tmp_path_factory.mktemp("mini_run")
    overrides = [*TINY_TRAIN, "data=food101_local", f"data.root={MINI}", NO_WANDB, NO_EXAMPLES]
    return run_dir, train(compose_config(*overrides, output_dir=run_dir))
