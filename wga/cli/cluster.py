"""``--ray ADDRESS`` and ``--workers N``: the options of every command that can scale out
(``probe``, ``atlas``, ``render --units all``), declared and checked in one place."""

from __future__ import annotations

import argparse

from wga.errors import InvalidInput

ADDRESS_HELP = (
    "local (start one here), auto (the one in RAY_ADDRESS), or HOST:PORT / ray://HOST:PORT "
    "(needs the extra: pip install 'wga[ray]')"
)


def add_cluster_options(parser: argparse._ActionsContainer, doing: str) -> None:
    """``doing``: what runs on the cluster, as the help starts ("probe", "render the icons")."""
    parser.add_argument(
        "--ray", metavar="ADDRESS", help=f"{doing} on a Ray cluster: {ADDRESS_HELP}"
    )
    parser.add_argument(
        "--workers", type=int, help="workers on Ray (default: one per GPU, else per CPU slot)"
    )


def check_cluster_options(args: argparse.Namespace) -> None:
    """``--workers`` only means something on Ray, and at least one."""
    if args.workers is not None and (args.workers < 1 or not args.ray):
        raise InvalidInput("--workers N (≥ 1) applies to Ray: add --ray local or --ray ADDRESS")
