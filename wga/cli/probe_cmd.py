"""``python -m wga probe``: one pass of a model over a corpus → an index of every unit's artworks.

    python -m wga probe --model vgg16-hed --corpus data/wga --layers block4_conv3,block5_conv3 \\
        --out probes/hed-wga

Resumable: run the same command again after an interruption and it continues from the last
checkpoint. ``--ray ADDRESS`` hands the chunks to a Ray cluster (Ray Data, through the executor
seam :mod:`wga.executors`; needs the extra ``wga[ray]``); the index is the same either way.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

from wga.cli.cluster import add_cluster_options, check_cluster_options
from wga.errors import InvalidInput

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from wga.corpus.probe import CHECKPOINT_SECONDS, DEFAULT_BATCH, DEFAULT_TOP
    from wga.corpus.receptive import DEFAULT_BORDER_MARGIN

    parser = subparsers.add_parser(
        "probe",
        help="find the top artworks of every unit of some layers (a corpus index)",
        description="Run a model over a corpus (a wga download or dataset folder, or any folder "
        "of images) and record, per unit of each layer, its top (and bottom) artworks, where in "
        "them it fires, and the per-image maxima with histograms. Resumes when run again.",
    )
    parser.add_argument(
        "--model", help="registry name or .keras path (default: inceptionv3, or vgg16-hed offline)"
    )
    parser.add_argument("--corpus", required=True, type=Path, help="folder of images")
    parser.add_argument("--layers", required=True, help="comma-separated layer names")
    parser.add_argument(
        "--top", type=int, default=DEFAULT_TOP, help="artworks kept per unit and sign"
    )
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="images per batch")
    parser.add_argument(
        "--border-margin",
        type=float,
        default=DEFAULT_BORDER_MARGIN,
        metavar="M",
        help="ignore positions whose receptive field reaches past the picture by more than "
        f"(1 - M)/2 of its size: frames and edges do not win (default {DEFAULT_BORDER_MARGIN:g}, "
        "measured; 0 keeps every position on the image)",
    )
    add_cluster_options(parser, "probe")
    parser.add_argument(
        "--checkpoint",
        type=float,
        default=CHECKPOINT_SECONDS,
        metavar="SECONDS",
        help=f"checkpoint interval (default {CHECKPOINT_SECONDS:g} s)",
    )
    parser.add_argument("--out", required=True, type=Path, help="index folder (created or resumed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    if not layers:
        raise InvalidInput("--layers is empty: name at least one layer (wga models --layers M)")
    check_cluster_options(args)
    from wga.corpus.receptive import check_border_margin

    check_border_margin(args.border_margin)
    from wga.corpus.corpus import open_corpus
    from wga.corpus.probe import run_probe
    from wga.executors import open_executor
    from wga.models import default_registry
    from wga.quiet import quiet_keras

    corpus = open_corpus(args.corpus)  # before TensorFlow: a wrong folder fails fast
    executor = open_executor(args.ray)  # a missing extra fails here, in one line
    with contextlib.closing(executor):
        quiet_keras()
        registry = default_registry()
        loaded = registry.load(args.model or registry.default_name())
        log.info(
            "probing %s over %d images (%s) on %s → %s",
            loaded.name,
            len(corpus),
            corpus.kind,
            executor.name,
            args.out,
        )
        index = run_probe(
            loaded,
            corpus,
            layers,
            args.out,
            k=args.top,
            batch_size=args.batch,
            executor=executor,
            workers=args.workers,
            progress=not args.no_progress,
            checkpoint_seconds=args.checkpoint,
            border_margin=args.border_margin,
        )
    described = index.description
    print(
        f"{index.root}: {described['done'] - len(described['skipped'])} images, "
        f"{len(described['skipped'])} skipped, layers {', '.join(index.layer_names())}"
    )
    return 0
