"""The Web Gallery of Art catalog: fetch it, cache it, parse it into typed records, select rows.

The WGA publishes its whole catalog as a zipped CSV (one row per artwork image, no id column).
Its format changed over the years, so parsing has to be forgiving:

* the text is Latin-1 (``K\\xf6ln``), not UTF-8;
* the delimiter is ``;`` in older copies (2014–2018) and ``,`` with double quotes in newer ones,
  so it is detected from the header line;
* fields contain commas, semicolons and quotes (``"AACHEN, Hans von"``);
* blank and short rows occur; they are reported, never fatal.

Each record's ``URL`` column points at the artwork's HTML page; the image lives at the same path
with ``/html/`` → ``/art/`` and ``.html`` → ``.jpg``. Only the path is kept, and it is joined to a
configurable base URL, so the same catalog can be served by a local test server or a mirror.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from wga import __version__
from wga.atomic import write_bytes_atomic
from wga.errors import InvalidInput, NotFound, Unavailable, closest_names

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

# Source: wga.hu "Database download" page (see shared/notes/wga.md).
DEFAULT_CATALOG_URL = "https://www.wga.hu/database/download/data_txt.zip"
DEFAULT_BASE_URL = "https://www.wga.hu"
# Identify ourselves: the site has no crawling policy, so make it easy to see who is asking.
USER_AGENT = (
    f"wga/{__version__} (research downloader for art history; "
    "about 2 requests/s, resumes instead of refetching)"
)

# The 11 catalog columns, in file order (shared/notes/wga.md).
COLUMNS: tuple[str, ...] = (
    "AUTHOR",
    "BORN-DIED",
    "TITLE",
    "DATE",
    "TECHNIQUE",
    "LOCATION",
    "URL",
    "FORM",
    "TYPE",
    "SCHOOL",
    "TIMEFRAME",
)
# The columns a selection can filter on (the CLI's --form, --type, --school, --timeframe, --author).
FILTER_COLUMNS: tuple[str, ...] = ("FORM", "TYPE", "SCHOOL", "TIMEFRAME", "AUTHOR")

_FIELD_NAMES: dict[str, str] = {column: column.lower().replace("-", "_") for column in COLUMNS}
_SAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class Artwork:
    """One catalog row. Field names are the column names in lower case (``BORN-DIED`` → born_died)."""

    author: str
    born_died: str
    title: str
    date: str
    technique: str
    location: str
    url: str
    form: str
    type: str
    school: str
    timeframe: str
    line: int = 0  # line number in the catalog file, for messages

    def get(self, column: str) -> str:
        """The value of a catalog column by its catalog name (``"TYPE"``, ``"born-died"``)."""
        name = _FIELD_NAMES.get(column.upper())
        if name is None:
            raise InvalidInput(
                f"unknown catalog column {column!r}: {closest_names(column, list(COLUMNS))}"
            )
        return str(getattr(self, name))

    def as_row(self) -> dict[str, str]:
        """The record as ``{column name: value}`` in catalog order (for manifests)."""
        return {column: self.get(column) for column in COLUMNS}

    @property
    def page_path(self) -> str:
        """The path of the artwork's HTML page on the site (``/html/a/aachen/adonis.html``)."""
        return urlsplit(self.url.strip()).path

    @property
    def image_path(self) -> str:
        """The path of the full-size image: ``/html/`` → ``/art/``, ``.html`` → ``.jpg``."""
        return page_to_image_path(self.page_path)

    @property
    def key(self) -> str:
        """A stable id for the artwork: its page path below ``/html/`` without the extension.

        Basenames collide across artists (``adonis.html``), full paths do not.
        """
        return artwork_key(self.page_path)

    @property
    def file_name(self) -> str:
        """A flat, file-system-safe image file name that is unique per artwork."""
        return safe_file_name(self.key) + ".jpg"

    def image_url(self, base_url: str = DEFAULT_BASE_URL) -> str:
        return rebase_url(self.image_path, base_url)

    def page_url(self, base_url: str = DEFAULT_BASE_URL) -> str:
        return rebase_url(self.page_path, base_url)


@dataclass(slots=True)
class Problem:
    """A catalog row that was skipped, and why (reported, never fatal)."""

    line: int
    reason: str
    text: str = ""

    def __str__(self) -> str:
        excerpt = f": {self.text[:80]!r}" if self.text else ""
        return f"line {self.line}: {self.reason}{excerpt}"


@dataclass(slots=True)
class Catalog:
    """The parsed catalog: the records, the skipped rows and the delimiter that was detected."""

    records: list[Artwork]
    problems: list[Problem] = field(default_factory=list)
    delimiter: str = ","
    blank_lines: int = 0

    def __len__(self) -> int:
        return len(self.records)

    def values(self, column: str) -> list[str]:
        """The distinct values of a column (as written in the catalog), sorted."""
        return sorted({record.get(column) for record in self.records})


# --------------------------------------------------------------------------- URLs and names


def page_to_image_path(page_path: str) -> str:
    """``/html/a/aachen/adonis.html`` → ``/art/a/aachen/adonis.jpg`` (the site's own layout)."""
    path = page_path
    if path.startswith("/html/"):
        path = "/art/" + path[len("/html/") :]
    stem, ext = os.path.splitext(path)
    if ext.lower() in (".html", ".htm"):
        path = stem + ".jpg"
    return path


def artwork_key(page_path: str) -> str:
    """The page path below ``/html/`` without extension: ``a/aachen/adonis``."""
    path = page_path.strip("/")
    if path.startswith("html/"):
        path = path[len("html/") :]
    stem, ext = os.path.splitext(path)
    return stem if ext.lower() in (".html", ".htm", ".jpg") else path


def safe_file_name(key: str) -> str:
    """``a/aachen/adonis`` → ``a__aachen__adonis``; odd characters replaced, then disambiguated.

    A short hash of the original key is appended whenever a character had to be replaced, so two
    keys that differ only in such characters still get different names.
    """
    parts = [_SAFE_NAME_CHARS.sub("_", part) for part in key.split("/") if part]
    name = "__".join(parts).strip(".") or "artwork"
    if name != key.replace("/", "__"):
        name += "-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
    return name


def rebase_url(path_or_url: str, base_url: str) -> str:
    """Join the path (and query) of a URL to a base URL that may itself carry a path prefix."""
    parts = urlsplit(path_or_url)
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    if parts.query:
        path += "?" + parts.query
    return base_url.rstrip("/") + path


def find_image_link(html: str | bytes, page_url: str) -> str | None:
    """The full-size image that an artwork's HTML page links to, as an absolute URL, or None.

    Used when the ``html → art`` rewrite 404s. The page links the full image with
    ``<a href="…/art/….jpg">`` around a medium-size ``<img src="…/detail/….jpg">``; prefer the
    ``/art/`` link, then any linked JPEG, then the largest shown image.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")

    def is_jpeg(url: str) -> bool:
        return urlsplit(url).path.lower().endswith((".jpg", ".jpeg"))

    links = [urljoin(page_url, str(a["href"])) for a in soup.find_all("a", href=True)]
    images = [urljoin(page_url, str(img["src"])) for img in soup.find_all("img", src=True)]
    links = [url for url in links if is_jpeg(url)]
    images = [url for url in images if is_jpeg(url)]
    for candidates in (
        [url for url in links if "/art/" in urlsplit(url).path],
        links,
        [url for url in images if "/art/" in urlsplit(url).path],
        [url for url in images if "/detail/" in urlsplit(url).path],
    ):
        if candidates:
            return candidates[0]
    return None


# --------------------------------------------------------------------------- parsing


def decode_catalog(data: bytes) -> str:
    """Catalog bytes → text. The WGA writes Latin-1; a UTF-8 copy (re-saved by someone) is
    recognised because Latin-1 text with accents is almost never valid UTF-8."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def detect_delimiter(header: str) -> str:
    """``;`` or ``,``: whichever separates the header into known column names."""
    best, best_hits = ",", -1
    for delimiter in (";", ",", "\t"):
        names = next(csv.reader([header], delimiter=delimiter, quotechar='"'), [])
        hits = sum(1 for name in names if name.strip().upper() in COLUMNS)
        if hits > best_hits:
            best, best_hits = delimiter, hits
    if best_hits < 2:
        raise InvalidInput(
            f"this does not look like a WGA catalog: the header {header[:120]!r} names none of "
            f"the columns {', '.join(COLUMNS)}; check --catalog-url"
        )
    return best


def parse_catalog(text: str) -> Catalog:
    """Parse catalog text (either format) into records; bad rows go to ``problems``."""
    stream = io.StringIO(text, newline="")
    header_line = ""
    header_number = 0
    for header_number, line in enumerate(stream, start=1):  # noqa: B007
        if line.strip():
            header_line = line.rstrip("\r\n")
            break
    if not header_line:
        raise InvalidInput("the catalog is empty; check --catalog-url")
    delimiter = detect_delimiter(header_line)
    header = [name.strip().upper() for name in next(csv.reader([header_line], delimiter=delimiter))]
    position = {name: index for index, name in enumerate(header) if name in COLUMNS}
    if "URL" not in position:
        raise InvalidInput(f"the catalog header has no URL column: {header_line[:120]!r}")
    needed = max(position.values()) + 1
    url_index = position["URL"]

    records: list[Artwork] = []
    problems: list[Problem] = []
    blank = 0
    reader = csv.reader(stream, delimiter=delimiter, quotechar='"')
    line_offset = header_number
    try:
        for row in reader:
            line = line_offset + reader.line_num
            if not any(cell.strip() for cell in row):
                blank += 1
                continue
            if len(row) <= url_index or not row[url_index].strip():
                problems.append(Problem(line, "no URL (short row)", delimiter.join(row)))
                continue
            url = row[url_index].strip()
            if not urlsplit(url).path.lower().endswith((".html", ".htm", ".jpg")):
                problems.append(Problem(line, f"URL is not an artwork page: {url!r}"))
                continue
            if len(row) < needed:
                problems.append(
                    Problem(line, f"short row ({len(row)} of {len(header)} fields), kept", url)
                )
            values = {
                _FIELD_NAMES[name]: (row[index].strip() if index < len(row) else "")
                for name, index in position.items()
            }
            for name in COLUMNS:
                values.setdefault(_FIELD_NAMES[name], "")
            records.append(Artwork(**values, line=line))
    except csv.Error as error:  # an unterminated quote swallows the rest: say where it began
        problems.append(Problem(line_offset + reader.line_num, f"unreadable from here on: {error}"))
    if problems:
        log.debug("catalog: %d rows skipped or incomplete (first: %s)", len(problems), problems[0])
    return Catalog(records=records, problems=problems, delimiter=delimiter, blank_lines=blank)


def read_catalog_bytes(data: bytes) -> str:
    """The catalog text from a zip (its one CSV member) or from plain CSV bytes."""
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            preferred = [m for m in members if m.filename.lower().endswith((".csv", ".txt"))]
            chosen = (preferred or members or [None])[0]
            if chosen is None:
                raise InvalidInput("the catalog zip is empty; check --catalog-url")
            data = archive.read(chosen)
    return decode_catalog(data)


def read_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Parse a catalog file on disk (``data_txt.zip`` or the ``catalog.csv`` inside it)."""
    return parse_catalog(read_catalog_bytes(Path(path).read_bytes()))


# --------------------------------------------------------------------------- fetching


def _cache_name(url: str) -> str:
    digest = hashlib.sha1(url.encode("utf-8")).hexdigest()[:10]
    base = _SAFE_NAME_CHARS.sub("_", os.path.basename(urlsplit(url).path) or "catalog")
    return f"{digest}-{base}"


def fetch_catalog(
    url: str = DEFAULT_CATALOG_URL,
    cache_dir: str | os.PathLike[str] = ".",
    *,
    session: requests.Session | None = None,
    refresh: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download the catalog once and keep it in ``cache_dir``; later calls reuse the file.

    ``url`` may also be a local path (or ``file://`` URL) to a zip or CSV. The download goes to a
    temporary file first, so an interrupted fetch never leaves a broken cache behind.
    """
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        local = Path(parts.path if parts.scheme == "file" else url)
        if not local.is_file():
            raise NotFound(f"catalog file {str(local)!r} does not exist; give a URL or a path")
        return local
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / _cache_name(url)
    if target.is_file() and not refresh:
        log.info("catalog: using cached %s", target)
        return target
    import requests

    http = session if session is not None else requests.Session()
    log.info("catalog: fetching %s", url)
    try:
        response = http.get(url, timeout=timeout, headers={"User-Agent": USER_AGENT})
    except requests.RequestException as error:
        raise Unavailable(
            f"could not fetch the catalog from {url}: {error}; check the URL and the network"
        ) from error
    if response.status_code == 404:
        raise NotFound(f"no catalog at {url} (404); check --catalog-url")
    if response.status_code != 200:
        raise Unavailable(
            f"the catalog server answered {response.status_code} for {url}; try again later",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    write_bytes_atomic(target, response.content)
    return target


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date); None if absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            import time

            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def load_catalog(
    url: str = DEFAULT_CATALOG_URL,
    cache_dir: str | os.PathLike[str] = ".",
    *,
    session: requests.Session | None = None,
    refresh: bool = False,
) -> Catalog:
    """Fetch (or reuse) and parse the catalog."""
    return read_catalog(fetch_catalog(url, cache_dir, session=session, refresh=refresh))


# --------------------------------------------------------------------------- selection


def fold(text: str) -> str:
    """Case- and accent-insensitive comparison key (``Köln`` ~ ``koln``), for filters and classes."""
    decomposed = unicodedata.normalize("NFKD", str(text).strip().casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _timeframe_key(text: str) -> str:
    """``0751-0800`` and ``751-800`` mean the same bin."""
    return "-".join(part.lstrip("0") or "0" for part in fold(text).split("-"))


@dataclass(slots=True)
class Selection:
    """Which rows to download: each list is an OR of values; lists combine with AND.

    Values compare case- and accent-insensitively. An ``author`` value matches the whole AUTHOR
    field (``"AACHEN, Hans von"``) or its surname part before the first comma (``"aachen"``).
    """

    form: Sequence[str] = ()
    type: Sequence[str] = ()
    school: Sequence[str] = ()
    timeframe: Sequence[str] = ()
    author: Sequence[str] = ()
    limit: int | None = None

    def is_empty(self) -> bool:
        return not any(getattr(self, name.lower()) for name in FILTER_COLUMNS)

    def describe(self) -> str:
        parts = [
            f"{name}={'|'.join(getattr(self, name.lower()))}"
            for name in FILTER_COLUMNS
            if getattr(self, name.lower())
        ]
        if self.limit is not None:
            parts.append(f"limit={self.limit}")
        return ", ".join(parts) or "all rows"


def _keys(column: str, value: str) -> set[str]:
    if column == "TIMEFRAME":
        return {_timeframe_key(value)}
    if column == "AUTHOR":
        return {fold(value), fold(value.split(",", 1)[0])}
    return {fold(value)}


def select(catalog: Catalog, selection: Selection) -> list[Artwork]:
    """The records that match every filter, in catalog order, one per artwork, up to the limit.

    A filter value that no row of the whole catalog has is a typo, not an empty result:
    it raises :class:`InvalidInput` with the closest values.
    """
    wanted: dict[str, set[str]] = {}
    for column in FILTER_COLUMNS:
        values = [v for v in getattr(selection, column.lower()) if v.strip()]
        if not values:
            continue
        present: set[str] = set()
        for record in catalog.records:
            present |= _keys(column, record.get(column))
        keys = set()
        for value in values:
            key = fold(value) if column != "TIMEFRAME" else _timeframe_key(value)
            if key not in present:
                raise InvalidInput(
                    f"no catalog row has {column} = {value!r}; "
                    + closest_names(value, catalog.values(column))
                )
            keys.add(key)
        wanted[column] = keys
    if selection.limit is not None and selection.limit < 0:
        raise InvalidInput(f"--limit must be 0 or more, not {selection.limit}")

    chosen: list[Artwork] = []
    if selection.limit == 0:
        return chosen
    seen: set[str] = set()
    duplicates = 0
    for record in catalog.records:
        if all(_keys(col, record.get(col)) & keys for col, keys in wanted.items()):
            if record.key in seen:
                duplicates += 1
                continue
            seen.add(record.key)
            chosen.append(record)
            if selection.limit is not None and len(chosen) >= selection.limit:
                break
    if duplicates:
        log.info(
            "catalog: %d rows repeat an artwork page already selected; kept the first", duplicates
        )
    return chosen


def split_list(value: str | None, separator: str = ",") -> list[str]:
    """A CLI comma list → values (empty items dropped)."""
    if not value:
        return []
    return [item.strip() for item in value.split(separator) if item.strip()]


def author_list(value: str | None) -> list[str]:
    """``--author`` values: names contain commas, so a list with ``;`` splits on ``;`` only."""
    return split_list(value, ";" if value and ";" in value else ",")
