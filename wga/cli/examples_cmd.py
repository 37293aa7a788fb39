"""``python -m wga examples``: the artworks behind one unit, from a probe index.

    python -m wga examples --index probes/hed-wga --layer block5_conv3 --unit 7 [--json]

``--json`` prints ``{"model", "layer", "unit", "examples": [{"file", "value", "y", "x",
"crop"}, …], "negatives": […], "histogram": {"edges", "counts"}}`` (DESIGN.md), best first, with
``file`` relative to the corpus and ``y``/``x`` in the original image's pixels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "examples",
        help="print the top (and bottom) artworks of a unit from a probe index",
        description="The artworks of a corpus that make a unit fire most (and least), where in "
        "them (original pixels), with the unit's histogram; from `wga probe`'s index.",
    )
    parser.add_argument("--index", required=True, type=Path, help="probe index folder")
    parser.add_argument("--layer", required=True, help="layer name")
    parser.add_argument("--unit", required=True, type=int, help="unit (channel or class) number")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wga.corpus.index import ProbeIndex

    index = ProbeIndex.open(args.index)
    document = index.unit(args.layer, args.unit)
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    label = f" ({document['label']})" if document["label"] else ""
    print(f"{document['model']} {args.layer} unit {args.unit}{label} — {document['values']}")
    for title, rows in (("top", document["examples"]), ("bottom", document["negatives"])):
        if not rows:
            continue
        print(f"{title}:")
        for row in rows:
            who = " · ".join(v for v in (row.get("author"), row.get("title"), row.get("date")) if v)
            print(f"  {row['value']:10.3f}  y={row['y']:<5} x={row['x']:<5} {row['file']}  {who}")
    return 0
