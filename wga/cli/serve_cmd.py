"""``python -m wga serve``: the backend (kernel gateway on the backend notebook) and the page."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys

from wga.paths import Places
from wga.serve.cache import DEFAULT_CACHE_MAX, parse_size
from wga.serve.gateway import (  # light: no tornado
    DEFAULT_HOST,
    DEFAULT_PORT,
    TOKEN_ENV,
    Gateway,
    NotebookServer,
    free_port,
    is_loopback,
)

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="start the render backend and the explorer page",
        description=(
            "Start jupyter_kernel_gateway on wga's backend notebook: the REST API under /api/, "
            "the explorer page at /public/index.html, renders at /public/renders/. Runs, "
            "probes, atlases, vectors and the cache live under the current folder unless "
            "flags or WGA_*_DIR variables say otherwise. Stop it with Ctrl-C."
        ),
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"interface to listen on (default {DEFAULT_HOST}: this machine only; any other "
        "address requires a token)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    parser.add_argument(
        "--runs",
        help="folder of fine-tuned runs to offer as models (default: $WGA_RUNS_DIR or ./runs)",
    )
    parser.add_argument(
        "--probes", help="folder of corpus indexes (default: $WGA_PROBES_DIR or ./probes)"
    )
    parser.add_argument(
        "--atlases", help="folder of activation atlases (default: $WGA_ATLASES_DIR or ./atlases)"
    )
    parser.add_argument(
        "--vectors",
        help="folder of direction vectors (default: $WGA_VECTORS_DIR or ./vectors)",
    )
    parser.add_argument(
        "--cache-dir",
        help="the server's cache: renders, probe crops and the job journal (default: "
        "$WGA_CACHE_DIR or ./cache)",
    )
    parser.add_argument(
        "--cache-max",
        type=_size,
        metavar="SIZE",
        help="bytes the render cache may use, e.g. 500MB or 4GB (default: $WGA_CACHE_MAX or "
        f"{DEFAULT_CACHE_MAX // 1024**3}GB); the least recently used renders are deleted past it",
    )
    access = parser.add_mutually_exclusive_group()
    access.add_argument(
        "--token",
        help=f"require this token on the API and the renders (default: ${TOKEN_ENV}, or a "
        "generated one when --host is not a loopback address); the page's address carries it",
    )
    access.add_argument(
        "--no-token",
        action="store_true",
        help="no token even off-loopback: anyone who reaches the port can use the server",
    )
    parser.add_argument(
        "--allow-origin",
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also let pages at ORIGIN call the API (repeatable; 'null' for the page opened as "
        "a file); by default only the page this server serves can",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests addressed to host NAME (repeatable), e.g. a name that "
        "points at this machine; by default a loopback server answers only loopback names",
    )
    parser.add_argument(
        "--notebook-port",
        type=int,
        help="also start a Jupyter notebook server on the current folder on this port "
        "(same --host; it prints its login URL)",
    )
    parser.set_defaults(handler=run)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def choose_token(args: argparse.Namespace) -> tuple[str | None, bool]:
    """The token (or None) and whether it was generated here (then it must be shown)."""
    if args.no_token:
        return None, False
    given = args.token or os.environ.get(TOKEN_ENV)
    if given:
        return given, False
    if is_loopback(args.host):
        return None, False
    return secrets.token_urlsafe(24), True


def page_address(gateway: Gateway, generated: bool) -> str:
    """The page's URL as printed: with the token when it was generated here (the user has no
    other way to learn it), elided when the user chose it (it stays out of logs)."""
    if not gateway.token:
        return gateway.page_url
    shown = gateway.token if generated else "…"
    return f"{gateway.page_url}?token={shown}"


def run(args: argparse.Namespace) -> int:
    port = args.port or free_port(args.host)
    token, generated = choose_token(args)
    places = Places.resolve(
        runs=args.runs,
        probes=args.probes,
        atlases=args.atlases,
        cache=args.cache_dir,
        vectors=args.vectors,
    )
    gateway = Gateway(
        host=args.host,
        port=port,
        places=places,
        allow_origins=tuple(o for o in args.allow_origin if o and o != "*"),
        allow_hosts=tuple(args.allow_host),
        token=token,
        queue_env={"WGA_CACHE_MAX": str(args.cache_max)} if args.cache_max else {},
        verbosity=getattr(args, "verbose", 0),  # -v: the gateway's own info lines too
    )
    if args.no_token and not is_loopback(args.host):
        print(
            f"warning: --no-token on {args.host}: anyone who can reach port {port} can use this "
            "server (render, cancel, read renders); use it only on a network you trust",
            file=sys.stderr,
            flush=True,
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
        print(f"explorer page: {page_address(gateway, generated)}", flush=True)
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
