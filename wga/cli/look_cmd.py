"""``python -m wga look``: what the model sees in one artwork (or any image).

    python -m wga look --index probes/hed-wga --image 42 --layers block4_conv3 --top 8 \\
        --groups 6 --out looks/42
    python -m wga look --model vgg16-hed --image my-photo.jpg --layers block4_conv3 --json

Per layer: the top units by the artwork's spatial maximum (value, percentile among the probed
corpus, position in the original image's pixels) and K non-negative factor groups (share,
strongest units, map). ``--image`` is an id of the index, a file as ``examples`` prints it, or
any image file (fed by the probe's rule). ``--out DIR`` writes the heat overlays, ``look.json``
and a contact sheet; ``--icons`` also renders each group's icon there (slow on a CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from wga.errors import InvalidInput


def register(subparsers: argparse._SubParsersAction) -> None:
    from wga.corpus.look import DEFAULT_GROUPS, DEFAULT_TOP, ICON_STEPS, SORTS

    parser = subparsers.add_parser(
        "look",
        help="what a model sees in one artwork: top units, percentiles, factor groups",
        description="The units that fire most on one artwork (with their percentile among a "
        "probed corpus and where they fire) and its activations factorised into a few "
        "non-negative groups. From a probe index (--index) or a model alone (--model).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", type=Path, help="probe index folder (gives percentiles)")
    source.add_argument("--model", help="registry name or .keras path (no percentiles)")
    parser.add_argument(
        "--image",
        required=True,
        metavar="ID|FILE",
        help="an image id or file of the index, or any image file",
    )
    parser.add_argument("--layers", help="comma-separated layers (default: the index's)")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP, help="units shown per layer")
    parser.add_argument(
        "--groups", type=int, default=DEFAULT_GROUPS, help="factor groups per layer (0: none)"
    )
    parser.add_argument(
        "--sort", choices=SORTS, default="value", help="rank units by value or by percentile"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--out", type=Path, help="write overlays, look.json and contact.png here")
    parser.add_argument("--icons", action="store_true", help="render the groups' icons (--out)")
    parser.add_argument(
        "--icon-steps", type=int, default=ICON_STEPS, help=f"steps per icon ({ICON_STEPS})"
    )
    parser.set_defaults(handler=run)


def _layers(args: argparse.Namespace, index: Any) -> list[str]:
    if args.layers:
        return [name.strip() for name in args.layers.split(",") if name.strip()]
    if index is None:
        raise InvalidInput("--layers is needed with --model (e.g. --layers block4_conv3)")
    return list(index.layer_names())


def run(args: argparse.Namespace) -> int:
    if args.icons and args.out is None:
        raise InvalidInput("--icons renders into --out DIR: give --out")
    from wga.corpus.index import ProbeIndex
    from wga.corpus.look import index_model, look, picture_named
    from wga.corpus.probe import feed_rule
    from wga.models import default_registry
    from wga.quiet import quiet_keras

    index = ProbeIndex.open(args.index) if args.index is not None else None
    layers = _layers(args, index)
    quiet_keras()
    registry = default_registry()
    loaded = index_model(index, registry) if index is not None else registry.load(args.model)
    picture = picture_named(args.image, index, feed_rule(loaded))
    renderer = vectors = None
    if args.icons:
        from wga.corpus.atlas import VECTORS_DIR, executor_renderer
        from wga.executors.local import LocalExecutor
        from wga.vis.vectors import VectorStore

        vectors = VectorStore(args.out / VECTORS_DIR)
        renderer = executor_renderer(LocalExecutor(), loaded, args.out, progress=False)
    seen = look(
        loaded,
        picture,
        layers,
        index=index,
        top=args.top,
        groups=args.groups,
        sort=args.sort,
        renderer=renderer,
        vectors=vectors,
        icon_steps=args.icon_steps,
    )
    if args.out is not None:
        _write(seen, picture, args.out)
    if args.json:
        print(json.dumps(seen.as_dict(), indent=2, ensure_ascii=False))
    else:
        _print(seen)
    return 0


def _write(seen: Any, picture: Any, out: Path) -> None:
    from wga.corpus.look_figures import artwork_image, write_look

    artwork = artwork_image(picture.source)
    icons = {
        (layer.layer, number): out / group.icon
        for layer in seen.layers
        for number, group in enumerate(layer.groups)
        if group.icon
    }
    written = write_look(seen, artwork, out, icons)
    print(f"{out}: {len(written['overlays'])} overlays, contact sheet {written['contact']}")


def _print(seen: Any) -> None:
    image = seen.picture
    who = " · ".join(v for v in (image.meta.get("author"), image.meta.get("title")) if v)
    print(f"{seen.model} looks at {image.file}{f' ({who})' if who else ''}")
    for layer in seen.layers:
        print(f"{layer.layer} — {layer.values}, {layer.region[0]}×{layer.region[1]} positions")
        for unit in layer.units:
            rank = "" if unit.percentile is None else f"  {unit.percentile:6.2f} %ile"
            print(f"  unit {unit.unit:<5} {unit.value:10.3f}{rank}  y={unit.y:<5} x={unit.x}")
        for number, group in enumerate(layer.groups):
            units = ", ".join(str(u) for u in group.units)
            print(f"  group {number}  {100 * group.share:5.1f} %  units {units}")
