"""``python -m wga dataset``: class folders and leak-free train/val/test splits from a download."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wga.data.catalog import split_list
from wga.errors import InvalidInput


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dataset",
        help="build class folders with train/val/test splits from a download",
        description=(
            "Make DS/{train,val,test}/<class>/ from the images of a download (its manifest.csv), "
            "with DS/classes.json, DS/counts.json and DS/manifest.csv. Details and near-duplicates "
            "of one artwork always land in the same split."
        ),
        epilog=(
            "The 2018 paper's three classes: --by TYPE --classes portrait,landscape,still-life "
            "--where FORM=painting --balance"
        ),
    )
    parser.add_argument("--source", required=True, help="a download folder (with manifest.csv)")
    parser.add_argument("--by", help="catalog column whose values are the classes (TYPE, SCHOOL…)")
    parser.add_argument("--classes", help="comma list of values of --by (default: every value)")
    parser.add_argument(
        "--filters",
        help=(
            "classes as filter dicts instead of --by: JSON (or a .json file) such as "
            '\'{"portrait": {"FORM": "painting", "TYPE": "portrait"}}\''
        ),
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COLUMN=V1,V2",
        help="keep only rows with one of these values (repeatable)",
    )
    parser.add_argument("--out", required=True, help="dataset folder to create")
    parser.add_argument("--val", type=float, default=0.1, help="validation fraction (0.1)")
    parser.add_argument("--test", type=float, default=0.1, help="test fraction (0.1; 0 = no test)")
    parser.add_argument("--balance", action="store_true", help="cut classes to the smallest")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the split (0)")
    parser.add_argument("--copy", action="store_true", help="copy files instead of hard-linking")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.set_defaults(handler=run)


def _parse_where(items: list[str]) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for item in items:
        column, sep, values = item.partition("=")
        if not sep or not column.strip() or not split_list(values):
            raise InvalidInput(f"--where {item!r} should look like COLUMN=value1,value2")
        where.setdefault(column.strip(), []).extend(split_list(values))
    return where


def _parse_filters(text: str) -> dict[str, dict[str, str | list[str]]]:
    source = Path(text)
    raw = (
        source.read_text(encoding="utf-8")
        if source.suffix == ".json" and source.is_file()
        else text
    )
    try:
        filters = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"--filters is not valid JSON ({error}); see --help") from error
    if not isinstance(filters, dict) or not all(isinstance(v, dict) for v in filters.values()):
        raise InvalidInput("--filters must map class names to {column: value} dicts, see --help")
    return filters


def run(args: argparse.Namespace) -> int:
    from wga.data.dataset import build_dataset

    if args.filters and (args.by or args.classes):
        raise InvalidInput("give either --by/--classes or --filters, not both")
    if not args.filters and not args.by:
        raise InvalidInput("say how to make classes: --by COLUMN [--classes a,b,c] or --filters")
    summary = build_dataset(
        args.source,
        args.out,
        by=args.by,
        classes=split_list(args.classes) or None,
        class_filters=_parse_filters(args.filters) if args.filters else None,
        where=_parse_where(args.where),
        val=args.val,
        test=args.test,
        balance_classes=args.balance,
        seed=args.seed,
        link=not args.copy,
        force=args.force,
    )
    for line in summary.lines():
        print(line)
    return 0
