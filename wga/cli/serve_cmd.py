"""``python -m wga serve``: the backend (kernel gateway on the backend notebook) and the page."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from wga.serve.gateway import (  # light: no tornado
    DEFAULT_HOST,
    DEFAULT_PORT,
    STATIC_DIR,
    Gateway,
    NotebookServer,
    free_port,
)

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="start the render backend and the explorer page",
        description=(
            "Start jupyter_kernel_gateway on notebooks/backend.ipynb: the REST API under /api/, "
            "the explorer page at /public/index.html, renders at /public/renders/. "
            "Stop it with Ctrl-C."
        ),
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"interface to listen on (default {DEFAULT_HOST}: this machine only; the API has "
        "no authentication, so expose it only on networks you trust)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    parser.add_argument(
        "--runs",
        help="folder of fine-tuned runs to offer as models (default: $WGA_RUNS_DIR or ./runs)",
    )
    parser.add_argument(
        "--static",
        help="folder served at /public/ (default: the project's static/ with the explorer "
        "page); renders are cached in its renders/ subfolder",
    )
    parser.add_argument(
        "--cors-origin",
        default="*",
        help="Access-Control-Allow-Origin sent with every response (default *; '' for none)",
    )
    parser.add_argument(
        "--notebook-port",
        type=int,
        help="also start a Jupyter notebook server on the notebooks/ folder on this port "
        "(same --host; it prints its login URL)",
    )
    parser.set_defaults(handler=run)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    port = args.port or free_port(args.host)
    gateway = Gateway(
        host=args.host,
        port=port,
        runs_dir=Path(args.runs).resolve() if args.runs else None,
        static_dir=Path(args.static).resolve() if args.static else STATIC_DIR,
        cors_origin=args.cors_origin,
    )
    # SIGTERM (e.g. from a process manager) stops the server like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    print(
        f"starting the wga backend on {gateway.url} (TensorFlow takes a few seconds) …", flush=True
    )
    notebooks = NotebookServer(args.host, args.notebook_port) if args.notebook_port else None
    try:
        if notebooks is not None:
            notebooks.start()
        gateway.start()
        status = gateway.wait_ready()
        models = ", ".join(status.get("models_loaded", [])) or "loading"
        print(f"explorer page: {gateway.page_url}", flush=True)
        print(f"REST API:      {gateway.url}/api/status  (models: {models})", flush=True)
        print("press Ctrl-C to stop", flush=True)
        code = gateway.process.wait() if gateway.process else 1
        print(f"the kernel gateway exited with status {code}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping …", file=sys.stderr, flush=True)
        gateway.stop()
        print("stopped", file=sys.stderr, flush=True)
        return 0
    except BaseException:
        gateway.stop()
        raise
    finally:
        if notebooks is not None:
            notebooks.stop()
