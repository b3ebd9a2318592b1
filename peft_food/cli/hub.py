"""Offline, fail as fast as `HF_HUB_OFFLINE=1` does: one connection attempt to the Hub, with a short
timeout, before huggingface_hub, transformers or datasets load.

huggingface_hub retries a failed request five times with backoff (1+2+4+8+8 s), and does so for
each file it looks up, with no setting to turn that off: without a connection a command spends
tens of seconds per file in retries, printing a retry line for each, before its one-line error
(docs/offline.md has the figures). When the Hub does not answer, this sets HF_HUB_OFFLINE=1 for the process: cached files
are used as they would be after the retries, and anything not cached fails at once with the
command's one-line error (which names the offline fix).
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

DEFAULT_TIMEOUT_S = 3.0  # a TCP connect to the Hub takes well under a second where it is reachable
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_reachable(endpoint: str, *, timeout: float) -> bool:
    """One TCP connection to the Hub's host (DNS included), given up after `timeout` seconds."""
    url = urlparse(endpoint)
    try:
        with socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout
        ):
            return True
    except OSError:
        return False


def offline_unless_reachable() -> bool:
    """Set HF_HUB_OFFLINE=1 when the Hub does not answer one connection attempt; returns whether it did.

    Left alone: an offline setting the user made (either way), and a proxy (the host is then reached
    through it, which this probe cannot tell)."""
    if any(os.environ.get(name) for name in (*OFFLINE_VARIABLES, *PROXY_VARIABLES)):
        return False
    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or DEFAULT_TIMEOUT_S)  # the Hub's own metadata timeout
    if hub_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout=timeout):
        return False
    go_offline()
    return True


def go_offline() -> None:
    """HF_HUB_OFFLINE=1 for this process: cached files only, no request to the Hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    # Read once at import: a library already loaded (an embedding program) is told directly.
    for module, attribute in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE")):
        if module in sys.modules:
            setattr(sys.modules[module], attribute, True)
