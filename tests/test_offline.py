"""Without a Hub connection every Hub-touching command fails as fast as HF_HUB_OFFLINE=1 does: one
connection attempt, no retries, one line naming the offline fix. No timings are asserted (docs/offline.md
has them); what is asserted is the behaviour: the probe's decision, no retry line, the one line."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from peft_food.cli.hub import offline_unless_reachable
from peft_food.config import parse_config
from peft_food.data.sources import SOURCES
from peft_food.model.backbone import OFFLINE_FIX
from tests.helpers import MINI, NO_WANDB, compose_config


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_hub(tmp_path):
    """The environment of a user whose Hub does not answer: an endpoint nobody listens on, an empty
    Hugging Face cache, no offline or proxy setting of their own."""
    drop = (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "WANDB_API_KEY",
        "WANDB_MODE",
        "HF_HUB_ETAG_TIMEOUT",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HOME=str(tmp_path / "hf"), HOME=str(tmp_path / "home")
    )
    return env


def test_the_probe_goes_offline_only_when_the_hub_does_not_answer(monkeypatch, no_hub):
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", no_hub["HF_ENDPOINT"])
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert offline_unless_reachable() is True
    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE is True

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's own setting, either way, stays
    assert offline_unless_reachable() is False and os.environ["HF_HUB_OFFLINE"] == "0"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as server:  # a Hub that answers: nothing changes
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert offline_unless_reachable() is False and "HF_HUB_OFFLINE" not in os.environ


@pytest.mark.parametrize(
    "prog, args, fix",
    [
        (
            "peft-food-train",
            ["model=vit_base", "data=synthetic", NO_WANDB],
            "offline, train on local photos with experiment=food101_mini data.root=<a folder in Food-101's layout>",
        ),
        ("peft-food-prepare", [], "offline, train on local photos with experiment=food101_mini data.root="),
    ],
)
def test_a_hub_command_without_the_hub_prints_one_line_with_its_offline_fix_and_no_retries(
    tmp_path, no_hub, prog, args, fix
):
    script = Path(sys.executable).parent / prog
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, env=no_hub, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Retry" not in done.stderr + done.stdout
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"{prog}: error: could not load ") and fix in line
    assert not list(tmp_path.glob("outputs/*"))  # and no run dir left behind


def test_the_offline_fix_names_a_run_that_needs_nothing_from_the_hub():
    """model.pretrained=false alone (the fix once named) still reads Food-101 from the Hub; the
    named real-photo command reads neither a Hub model nor a Hub dataset."""
    assert "model.pretrained=false" not in OFFLINE_FIX
    command = re.search(r"with (experiment=\S+) data\.root=", OFFLINE_FIX).group(1)
    spec = parse_config(compose_config(command, f"data.root={MINI}", output_dir="/tmp/x"))
    assert not spec.model.pretrained and SOURCES[spec.data.source].root_layout is not None
