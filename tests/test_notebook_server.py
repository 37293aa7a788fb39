"""``serve --notebook-port``: the Jupyter server that the Docker images start beside the API."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from wga.serve.gateway import NotebookServer, free_port


@pytest.mark.timeout(120)
def test_notebook_server_serves_the_notebooks_folder_and_stops():
    server = NotebookServer("127.0.0.1", free_port()).start()
    try:
        deadline = time.monotonic() + 90
        version = None
        while time.monotonic() < deadline and version is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api", timeout=5) as r:
                    version = json.loads(r.read())["version"]
            except (urllib.error.URLError, OSError):
                assert server.process.poll() is None, "the notebook server exited"
                time.sleep(0.5)
        assert version, "the notebook server never answered"
    finally:
        code = server.stop()
    assert code is not None and server.process.poll() is not None


def test_notebook_server_refuses_a_busy_port():
    import socket

    from wga.errors import Unavailable

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(Unavailable, match="--notebook-port"):
            NotebookServer("127.0.0.1", busy.getsockname()[1]).start()
