"""``python -m wga similar``: the artworks of a probed corpus most like one artwork (or image).

    python -m wga similar --index probes/hed-wga --image 42 --layer block4_conv3 --by style

``--by content`` (default): cosine of the layer's per-channel spatial maxima; ``--by style``:
cosine of the per-channel mean and standard deviation over the artwork's positions. Exact
search, best first, the query excluded, equal scores by image id. ``--json`` prints
``{"layer", "by", "results": [{"file", "score", …}]}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from wga.corpus.similar import BY, DEFAULT_K

    parser = subparsers.add_parser(
        "similar",
        help="artworks of a probed corpus similar to one artwork, in content or style",
        description="Nearest artworks of a probe's corpus to one of its artworks or to any "
        "image: by content (per-channel maxima of a layer) or by style (per-channel mean and "
        "standard deviation), cosine, exact.",
    )
    parser.add_argument("--index", required=True, type=Path, help="probe index folder")
    parser.add_argument(
        "--image",
        required=True,
        metavar="ID|FILE",
        help="an image id or file of the index, or any image file",
    )
    parser.add_argument("--layer", required=True, help="a layer the probe recorded")
    parser.add_argument("--by", choices=BY, default="content", help="content or style")
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="how many (default 12)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wga.corpus.index import ProbeIndex
    from wga.corpus.look import resolve_image
    from wga.corpus.similar import check_k, similar

    check_k(args.k)
    index = ProbeIndex.open(args.index)
    index.layer_index(args.layer)  # NotFound with the closest names, before any model loads
    image_id = resolve_image(index, args.image)
    vector = None
    query = index.images()[image_id]["file"] if image_id is not None else args.image
    if image_id is None:  # an image from outside: the model sees it first
        from wga.corpus.look import index_model, picture_named, see
        from wga.corpus.similar import query_features
        from wga.models import default_registry
        from wga.quiet import quiet_keras

        quiet_keras()
        loaded = index_model(index, default_registry())
        (seen,) = see(loaded, [args.layer], picture_named(args.image, index))
        vector = query_features(seen, args.by)
    found = similar(index, args.layer, by=args.by, k=args.k, image=image_id, vector=vector)
    if args.json:
        document = {
            "layer": args.layer,
            "by": args.by,
            "query": query,
            "results": [match.as_dict() for match in found],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    print(f"most like {query} at {args.layer}, by {args.by}:")
    for match in found:
        who = " · ".join(v for v in (match.meta.get("author"), match.meta.get("title")) if v)
        print(f"  {match.score:9.6f}  {match.file}  {who}")
    return 0
