"""Whether ImageNet weights could be downloaded now: asked at most once a minute, never hangs.

Offline, the registry must say within seconds that a model cannot load, instead of letting Keras
hang on a download.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

NETWORK_PROBE_TIMEOUT_S = 2.0
NETWORK_PROBE_TTL_S = 60.0


def weights_host() -> str | None:
    """The host Keras downloads application weights from, read from Keras' source.

    Reading the file rather than importing Keras keeps ``wga models`` free of a TensorFlow start.
    """
    import importlib.util
    import re

    spec = importlib.util.find_spec("keras")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / "src/applications/vgg16.py"
    try:
        match = re.search(r'"(https?://[^"]+)', source.read_text())
    except OSError:
        return None
    return urlparse(match.group(1)).hostname if match else None


class NetworkProbe:
    """Whether the weights server is reachable; asked at most once a minute, never hangs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked_at = -1e9
        self._reachable = False

    def reachable(self) -> bool:
        with self._lock:
            if time.monotonic() - self._checked_at < NETWORK_PROBE_TTL_S:
                return self._reachable
            host = weights_host()
            try:
                if host is None:
                    raise OSError("unknown weights host")
                with socket.create_connection((host, 443), timeout=NETWORK_PROBE_TIMEOUT_S):
                    self._reachable = True
            except OSError:
                self._reachable = False
            self._checked_at = time.monotonic()
            return self._reachable
