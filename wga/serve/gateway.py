"""The backend's web server: jupyter_kernel_gateway in notebook-http mode, guarded.

Two things live here:

* **A kernel-gateway personality** (this module is passed as ``--KernelGatewayApp.api``). It is
  the stock ``notebook_http`` personality — the backend notebook's annotated cells become the
  REST endpoints, the explorer page is served at ``/public/`` — with a guard on every handler (see
  :mod:`wga.serve.guard`): token, Host and Origin checks, CORS for allowed origins only, JSON
  bodies checked before they reach the kernel, and every error, the gateway's own included, as
  ``{"error": …}`` JSON. The cache folder's renders and crops are served beside the page
  (``/public/renders/``, ``/public/probes/``); reads of a render's files mark it used (the
  cache's LRU), and the render cache's state files are how pages poll without a kernel
  round-trip.
* **The launcher** (:class:`Gateway`): starts ``jupyter kernelgateway`` on the backend notebook
  with one kernel (the render queue is state in that kernel; several kernels would each have
  their own queue), waits until the API answers, and stops it cleanly. The page and the notebook
  are package data; every folder the kernel reads or writes is resolved by :mod:`wga.paths`
  before it starts, and the kernel runs in the folder the server was started in.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import wga
from wga.errors import Unavailable
from wga.paths import Places, backend_notebook, page_dir
from wga.serve.http import TOKEN_ENV
from wga.vis.backends import backend_name

log = logging.getLogger(__name__)

# Where the ``wga`` package is imported from: the kernel must import the same copy (a checkout
# run with PYTHONPATH=. works from any folder too).
IMPORT_ROOT = Path(wga.__file__).resolve().parents[1]
DEFAULT_HOST = "127.0.0.1"  # local only; any other address requires a token
DEFAULT_PORT = 8765
PAGE_PATH = "/public/index.html"
READY_PATH = "/api/status"
START_TIMEOUT_S = 180.0  # TensorFlow start plus the seed cells, on a slow, busy machine
STOP_TIMEOUT_S = 15.0
LOG_LEVELS = ("WARN", "INFO", "DEBUG")  # the gateway's, by -v count: a quiet start by default


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (``localhost``, 127.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_personality(*args: Any, **kwargs: Any) -> Any:
    """Entry point the kernel gateway calls for ``--KernelGatewayApp.api=wga.serve.gateway``."""
    from wga.serve.guard import personality_class  # Tornado: only inside the gateway

    return personality_class()(*args, **kwargs)


# -- the launcher -------------------------------------------------------------------------------
def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that was free a moment ago (for tests and ``--port 0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


@dataclass
class Gateway:
    """A ``jupyter kernelgateway`` process serving the backend notebook and the page."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    places: Places = field(default_factory=Places.resolve)  # absolute folders (wga.paths)
    workdir: Path = field(default_factory=Path.cwd)  # the kernel's working directory
    notebook: Path = field(default_factory=backend_notebook)
    page: Path = field(default_factory=page_dir)
    allow_origins: tuple[str, ...] = ()  # origins besides the page's own (e.g. "null": file://)
    allow_hosts: tuple[str, ...] = ()  # Host names answered besides the bound address
    token: str | None = None  # required on /api/ and the cache's files when set
    queue_env: dict[str, str] = field(default_factory=dict)  # WGA_CACHE_MAX …, for the kernel
    env: dict[str, str] = field(default_factory=dict)
    log_file: IO[Any] | None = None  # where the gateway's log goes (None: inherit stderr)
    verbosity: int = 0  # 0: warnings and errors only; 1 (-v): the gateway's info; 2: debug
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def page_url(self) -> str:
        return self.url + PAGE_PATH

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "kernel_gateway",
            "--KernelGatewayApp.api=wga.serve.gateway",
            f"--KernelGatewayApp.seed_uri={self.notebook}",
            f"--KernelGatewayApp.ip={self.host}",
            f"--KernelGatewayApp.log_level={LOG_LEVELS[min(self.verbosity, 2)]}",
            f"--KernelGatewayApp.port={self.port}",
            "--KernelGatewayApp.port_retries=0",  # the printed URL must be the real one
            "--KernelGatewayApp.prespawn_count=1",  # one kernel: the queue is its state
            # The kernel talks to the gateway over Unix sockets in Jupyter's runtime folder:
            # no TCP ports on this machine for other users to reach (and no warning about them).
            "--KernelManager.transport=ipc",
            f"--NotebookHTTPPersonality.static_path={self.page}",
            f"--GuardedNotebookHTTPPersonality.wga_cache={self.places.cache}",
            f"--GuardedNotebookHTTPPersonality.wga_origins={','.join(self.allow_origins)}",
            f"--GuardedNotebookHTTPPersonality.wga_hosts={','.join(self.answered_hosts())}",
        ]

    def answered_hosts(self) -> list[str]:
        """Host names the guard accepts; empty (any) when bound off-loopback without a list."""
        if not is_loopback(self.host) and not self.allow_hosts:
            return []
        return [self.host.strip("[]"), *self.allow_hosts]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        pythonpath = [str(IMPORT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(":"))]
        env.update(
            {
                "PYTHONPATH": ":".join(dict.fromkeys(pythonpath)),
                "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                "KERAS_BACKEND": backend_name(),  # the kernel runs on the server's backend
                "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            }
        )
        env.update(self.places.environment())
        env.update(self.queue_env)
        env.update(self.env)
        env.pop(TOKEN_ENV, None)
        if self.token:
            env[TOKEN_ENV] = self.token
        return env

    def headers(self) -> dict[str, str]:
        """What a client of this gateway sends (the token, when there is one)."""
        return {"Authorization": f"token {self.token}"} if self.token else {}

    def start(self) -> Gateway:
        """Start the process (own session: a terminal's Ctrl-C reaches only the launcher)."""
        if not self.notebook.exists():
            raise Unavailable(f"the backend notebook is missing: {self.notebook}")
        if port_in_use(self.host, self.port):
            raise Unavailable(
                f"port {self.port} on {self.host} is already in use (another wga serve?); "
                "stop that server or choose another --port"
            )
        self.places.renders.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.argv(),
            cwd=self.workdir,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self.log_file if self.log_file is not None else None,
            stderr=subprocess.STDOUT if self.log_file is not None else None,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Poll ``/api/status`` until the kernel answers; its status, or :class:`Unavailable`."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.process.returncode if self.process else None
                raise Unavailable(f"the kernel gateway exited (status {code}) before it was ready")
            try:
                # A request made while the kernel starts is answered once it is up: wait long.
                remaining = max(1.0, deadline - time.monotonic())
                ready = urllib.request.Request(self.url + READY_PATH, headers=self.headers())
                with urllib.request.urlopen(ready, timeout=remaining) as response:
                    return json.loads(response.read())
            except (urllib.error.URLError, OSError, ValueError) as error:
                last_error = str(error)
            time.sleep(0.25)
        raise Unavailable(f"the kernel gateway did not answer in {timeout:.0f} s ({last_error})")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (the gateway shuts its kernel down), then SIGKILL the group if it lingers."""
        return stop_process(self.process, "the kernel gateway", timeout)

    def __enter__(self) -> Gateway:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(
    process: subprocess.Popen[bytes] | None, name: str, timeout: float = STOP_TIMEOUT_S
) -> int | None:
    """SIGTERM a server started in its own session, then SIGKILL its group if it lingers."""
    if process is None:
        return None
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", name, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    return process.returncode


@dataclass
class NotebookServer:
    """A Jupyter notebook server on the folder the backend was started in (Docker's CMD).

    It prints its own URL with the login token; it runs in its own session like the gateway.
    """

    host: str = DEFAULT_HOST
    port: int = 8888
    root: Path = field(default_factory=Path.cwd)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "notebook",
            "--no-browser",
            f"--ServerApp.ip={self.host}",
            f"--ServerApp.port={self.port}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.allow_root=True",
        ]

    def start(self) -> NotebookServer:
        if port_in_use(self.host, self.port):
            raise Unavailable(
                f"port {self.port} on {self.host} is already in use; choose another --notebook-port"
            )
        self.process = subprocess.Popen(
            self.argv(), cwd=self.root, stdin=subprocess.DEVNULL, start_new_session=True
        )
        return self

    def stop(self) -> int | None:
        return stop_process(self.process, "the notebook server")
