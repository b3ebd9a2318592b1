"""Shared fixtures (the helpers they use, and that tests import, are in tests/helpers.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path_factory):
    """W&B as a user without an account has it: no API key, no ~/.netrc login, no forced mode."""
    from tests.helpers import WANDB_LOGIN

    for var in WANDB_LOGIN:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


# Two trained runs the saved-model tests share (tests/test_predict.py, tests/test_trust.py), each
# trained once per session, under umask 022 as on a shared machine (test_trust checks its files).
@pytest.fixture(scope="session")
def lora_run(tmp_path_factory):
    from peft_food.training.pipeline import train
    from tests.helpers import TINY, compose_config, umask

    run_dir = tmp_path_factory.mktemp("lora_run")
    with umask(0o022):
        record = train(compose_config(*TINY, "logger=none", "train.epochs=3", output_dir=run_dir))
    return run_dir, record


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    from peft_food.training.pipeline import train
    from tests.helpers import TINY, compose_config, umask

    run_dir = tmp_path_factory.mktemp("full_run")
    with umask(0o022):
        train(compose_config(*TINY, "peft=full", "logger=none", "train.epochs=1", output_dir=run_dir))
    return run_dir
