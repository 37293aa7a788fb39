"""``python -m wga download``: fetch the catalog, select rows, download their images politely."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from wga.data.catalog import (
    DEFAULT_BASE_URL,
    DEFAULT_CATALOG_URL,
    Selection,
    author_list,
    load_catalog,
    select,
    split_list,
)
from wga.data.download import DEFAULT_RATE, DEFAULT_WORKERS, DownloadConfig, download

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download the WGA catalog and the images of the selected rows (resumable)",
        description=(
            "Fetch the Web Gallery of Art catalog, select rows by FORM/TYPE/SCHOOL/TIMEFRAME/"
            "AUTHOR and download their images into OUT/images, verified, with OUT/manifest.csv. "
            "Run it again to resume: finished images are not requested again. The WGA's images "
            "are for educational and personal use only; do not redistribute them."
        ),
    )
    parser.add_argument(
        "--catalog-url", default=DEFAULT_CATALOG_URL, help="catalog zip URL or path"
    )
    parser.add_argument("--out", required=True, help="folder for images/, manifest.csv, catalog")
    group = parser.add_argument_group("filters (comma lists, case-insensitive; AND across options)")
    group.add_argument("--form", help="e.g. painting,sculpture")
    group.add_argument("--type", help="e.g. portrait,landscape,still-life")
    group.add_argument("--school", help="e.g. Italian,Flemish")
    group.add_argument("--timeframe", help="e.g. 1601-1650,1651-1700")
    group.add_argument(
        "--author",
        help="surnames (aachen,bosch) or full names separated by ';' ('AACHEN, Hans von;BOSCH')",
    )
    group.add_argument("--limit", type=int, help="at most this many rows (after the filters)")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"parallel downloads ({DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help=f"requests per second over all workers ({DEFAULT_RATE}; 0 = no limit)",
    )
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help="site to fetch images from")
    parser.add_argument(
        "--max-side", type=int, help="shrink images to this many pixels (long side)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="read timeout in seconds")
    parser.add_argument("--retries", type=int, default=4, help="retries on 5xx, resets, timeouts")
    parser.add_argument("--backoff", type=float, default=1.0, help="first retry wait in seconds")
    parser.add_argument("--refresh-catalog", action="store_true", help="fetch the catalog again")
    parser.add_argument("--retry-missing", action="store_true", help="ask again for earlier 404s")
    parser.add_argument("--recheck", action="store_true", help="decode every existing file again")
    parser.add_argument(
        "--no-page-fallback", action="store_true", help="on 404, do not look at the artwork page"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.verbose == 0:
        # urllib3 warns on every retry; the summary already counts them.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    out = Path(args.out)
    catalog = load_catalog(args.catalog_url, out / "catalog", refresh=args.refresh_catalog)
    log.info("catalog: %d rows (%r-delimited)", len(catalog), catalog.delimiter)
    if catalog.problems:
        report = out / "catalog" / "problems.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("".join(f"{problem}\n" for problem in catalog.problems), encoding="utf-8")
        log.warning("catalog: %d rows skipped or incomplete, see %s", len(catalog.problems), report)
    selection = Selection(
        form=split_list(args.form),
        type=split_list(args.type),
        school=split_list(args.school),
        timeframe=split_list(args.timeframe),
        author=author_list(args.author),
        limit=args.limit,
    )
    records = select(catalog, selection)
    log.info("selected %d rows (%s)", len(records), selection.describe())
    config = DownloadConfig(
        out_dir=out,
        base_url=args.base_url,
        workers=args.workers,
        rate=args.rate if args.rate and args.rate > 0 else None,
        max_side=args.max_side,
        timeout=(min(10.0, args.timeout), args.timeout),
        retries=args.retries,
        backoff=args.backoff,
        page_fallback=not args.no_page_fallback,
        recheck=args.recheck,
        retry_missing=args.retry_missing,
        progress=not args.no_progress,
    )
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():  # log lines above the progress bar, not through it
        summary = download(records, config)
    for line in summary.lines():
        print(line)
    return 1 if summary.failed or summary.pending else 0
