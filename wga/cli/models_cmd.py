"""``python -m wga models``: the registry, one line per model, with availability."""

from __future__ import annotations

import argparse
import json

from wga.models import ModelRegistry, default_registry


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the models that can be rendered and whether their weights are available",
        description="List the model registry: built-in models and fine-tuned runs.",
    )
    parser.add_argument(
        "--runs", help="folder of fine-tuned runs (default: $WGA_RUNS_DIR or ./runs)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--layers", metavar="MODEL", help="list the visualisable layers of MODEL (loads it)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    registry = ModelRegistry(args.runs) if args.runs else default_registry()
    if args.layers:
        loaded = registry.load(args.layers)
        layers = [info.as_dict() for info in loaded.layers()]
        if args.json:
            print(json.dumps({"model": loaded.name, "layers": layers}, indent=2))
        else:
            for info in layers:
                print(f"{info['name']:<28} {info['kind']:<10} {info['units']:>5} units")
        return 0
    rows = registry.listing()
    if args.json:
        print(json.dumps({"models": rows}, indent=2))
        return 0
    for row in rows:
        mark = "*" if row["default"] else " "
        state = "available  " if row["available"] else "unavailable"
        print(f"{mark} {row['name']:<16} {state} {row['title']}: {row['reason']}")
    return 0
