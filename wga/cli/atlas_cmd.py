"""``python -m wga atlas``: an activation atlas of one layer over a probed corpus.

    python -m wga atlas --index probes/hed-wga --layer block4_conv3 --grid 20 --icon 80 \\
        --out atlases/hed-block4

Writes ``DIR/atlas.png``, ``DIR/atlas.json`` (cells: ``i``, ``j``, ``count``, ``icon``,
``members``) and the icons as PNGs carrying their recipe. Run it again and it reuses the sample,
the layout and every icon already rendered.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from wga.cli.cluster import add_cluster_options, check_cluster_options


def register(subparsers: argparse._SubParsersAction) -> None:
    from wga.corpus.atlas import ICON_SIZE, ICON_STEPS
    from wga.corpus.atlas_sample import CAP, PER_IMAGE

    parser = subparsers.add_parser(
        "atlas",
        help="an activation atlas of a layer over a probed corpus",
        description="Sample a layer's activations over the corpus of a probe index, lay them "
        "out with UMAP, and render every grid cell's mean activation as an icon (the direction "
        "objective). Reruns reuse what is done.",
    )
    parser.add_argument("--index", required=True, type=Path, help="probe index folder")
    parser.add_argument("--layer", required=True, help="a spatial layer of the probe's model")
    parser.add_argument("--grid", type=int, default=20, help="cells a side (default 20)")
    parser.add_argument("--icon", type=int, default=ICON_SIZE, help="icon side in px")
    parser.add_argument(
        "--steps", type=int, default=ICON_STEPS, help=f"steps per icon (default {ICON_STEPS})"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling, layout and render seed")
    parser.add_argument("--preset", help="render preset (default: the render default)")
    parser.add_argument(
        "--per-image", type=int, default=PER_IMAGE, help="positions sampled per image"
    )
    parser.add_argument("--cap", type=int, default=CAP, help="at most this many vectors")
    parser.add_argument(
        "--no-whiten", action="store_true", help="optimise the raw mean, not the whitened one"
    )
    parser.add_argument("--model", help="the probe's model (default: the one the index names)")
    add_cluster_options(parser, "sample and render the icons")
    parser.add_argument("--out", required=True, type=Path, help="atlas folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wga.corpus.atlas import AtlasOptions, build_atlas
    from wga.corpus.index import ProbeIndex
    from wga.executors import open_executor
    from wga.models import default_registry
    from wga.quiet import quiet_keras
    from wga.vis.presets import get_preset

    options = AtlasOptions(
        layer=args.layer,
        grid=args.grid,
        icon=args.icon,
        steps=args.steps,
        seed=args.seed,
        preset=args.preset,
        per_image=args.per_image,
        cap=args.cap,
        whiten=not args.no_whiten,
    )
    if args.preset is not None:
        get_preset(args.preset)  # a wrong name fails before any model loads
    check_cluster_options(args)
    index = ProbeIndex.open(args.index)
    executor = open_executor(args.ray)  # a missing extra fails at once
    with contextlib.closing(executor):
        quiet_keras()
        loaded = default_registry().load(args.model or index.description["model"])
        document = build_atlas(
            index,
            loaded,
            options,
            args.out,
            executor=executor,
            workers=args.workers,
            progress=not args.no_progress,
        )
    icons = sum(1 for cell in document["cells"] if cell["icon"])
    print(
        f"{args.out}: {len(document['cells'])} cells of {options.grid}×{options.grid} "
        f"({icons} icons), {document['samples']['count']} vectors sampled, "
        f"{document['dropped']} in dropped cells → {args.out / 'atlas.png'}"
    )
    return 0
