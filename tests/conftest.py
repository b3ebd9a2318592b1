"""Shared fixtures (the helpers they use, and that tests import, are in tests/helpers.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path_factory):
    """W&B as a user without an account has it: no API key, no ~/.netrc login, no forced mode."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
