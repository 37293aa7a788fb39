"""``python -m wga``: one subcommand per module of this package.

Each module in :data:`COMMAND_MODULES` defines ``register(subparsers)``, which adds its parser
and sets ``handler`` to a function ``(args) -> int``. The handlers only translate arguments and
call the library, so the CLI, the notebooks and the REST API run the same code. Heavy imports
(TensorFlow) happen inside handlers, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence

from wga import __version__
from wga.cli.backend import KERAS_FREE_COMMANDS, choose_backend
from wga.errors import InvalidInput, NotFound, WgaError
from wga.quiet import filter_native_stderr, silence_tensorflow
from wga.vis.backends import BACKENDS

# A subcommand exists only once its feature is built (no placeholders).
COMMAND_MODULES: tuple[str, ...] = (
    "wga.cli.models_cmd",
    "wga.cli.download_cmd",
    "wga.cli.dataset_cmd",
    "wga.cli.finetune_cmd",
    "wga.cli.render_cmd",
    "wga.cli.serve_cmd",
    "wga.cli.probe_cmd",
    "wga.cli.examples_cmd",
    "wga.cli.atlas_cmd",
    "wga.cli.look_cmd",
    "wga.cli.similar_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wga",
        description=(
            "Web Gallery of Art tools: download the catalog and images, build datasets, "
            "fine-tune CNNs, render feature visualisations, serve the explorer."
        ),
    )
    parser.add_argument("--version", action="version", version=f"wga {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend to run on (default: KERAS_BACKEND, else tensorflow); "
        "install it with the extra of the same name, e.g. pip install 'wga[jax]'",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # Our own progress messages are worth seeing by default; third-party chatter is not.
    logging.getLogger("wga").setLevel(logging.INFO if verbosity == 0 else level)


def main(argv: Sequence[str] | None = None) -> int:
    silence_tensorflow()
    filter_native_stderr()
    # Ctrl-C interrupts every command, also when a parent started us with SIGINT ignored
    # (as shells do for background jobs); commands catch KeyboardInterrupt to finish cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        if args.command not in KERAS_FREE_COMMANDS:
            choose_backend(args.backend)
        return int(args.handler(args) or 0)
    except WgaError as error:
        # Errors the user can act on: one line, no traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, InvalidInput | NotFound) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
