"""Download the images of selected catalog rows: polite, concurrent, verified, resumable.

* One shared ``requests.Session`` (connection reuse) used by a thread pool; a urllib3 ``Retry``
  on its adapter retries connection errors, resets and 5xx answers with exponential backoff.
* Every request — first tries and urllib3's retries alike — first takes a slot from one global
  :class:`RateLimiter`, so ``rate`` is a true ceiling for the whole run. A 429 pauses the limiter
  for everybody for as long as ``Retry-After`` says.
* An image counts only once Pillow has decoded all of it (a truncated transfer or an HTML error
  page served with 200 never becomes a file). It is written to a temporary file in the same
  folder and renamed, so a kill at any moment leaves either the whole verified file or nothing.
* A rerun skips files that are already there without requesting them (their size is checked
  against the previous manifest, or they are decoded again if unknown) and retries the rest.
* ``manifest.csv`` lists every selected row with its catalog fields, file, status and error;
  ``journal.jsonl`` records results as they happen, so even a killed run is accounted for.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from PIL import Image, UnidentifiedImageError
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.exceptions import MaxRetryError, NameResolutionError
from urllib3.util.retry import Retry

from wga.atomic import TEMP_MARK, write_bytes_atomic
from wga.data.catalog import (
    COLUMNS,
    DEFAULT_BASE_URL,
    USER_AGENT,
    Artwork,
    find_image_link,
    parse_retry_after,
    rebase_url,
)
from wga.data.layout import MANIFEST_FILE
from wga.errors import InvalidInput

log = logging.getLogger(__name__)

IMAGES_DIR = "images"
JOURNAL_NAME = "journal.jsonl"
SUMMARY_NAME = "summary.json"

# Politeness defaults (shared/notes/wga.md: "a few workers, ~2 requests/s overall").
DEFAULT_WORKERS = 4
DEFAULT_RATE = 2.0
# Larger than any WGA image (the largest are a few MB); guards against a runaway response.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# A request answered 429 this often in a row is given up (recorded as failed, retried next run).
MAX_429_PER_REQUEST = 20
# A host name that does not resolve is not transient (offline, or a typo in --base-url): after
# this many images whose host did not resolve, the run stops instead of retrying every image.
MAX_UNRESOLVED = 3

STATUS_OK = "ok"
STATUS_MISSING = "missing"
STATUS_FAILED = "failed"
STATUS_PENDING = "pending"

MANIFEST_FIELDS: tuple[str, ...] = (
    "key",
    "file",
    "status",
    "error",
    "source",
    "image_url",
    "width",
    "height",
    "bytes",
    *COLUMNS,
)


class RateLimiter:
    """A global request pacer shared by all threads: at most ``rate`` requests per second.

    Each caller reserves the next free time slot under a lock and sleeps outside it, so threads
    queue fairly without a busy loop. :meth:`pause` (after a 429) pushes every later slot back;
    :meth:`cancel` wakes every sleeper at once, so an interrupted run ends promptly.
    """

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self.requests = 0

    def acquire(self) -> bool:
        """Wait for a slot; False if the run was cancelled meanwhile (then do not send)."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
            self.requests += 1
        delay = slot - time.monotonic()
        if delay > 0 and self._cancelled.wait(delay):
            return False
        return not self._cancelled.is_set()

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)

    def sleep(self, seconds: float) -> None:
        """A backoff sleep that a cancel cuts short."""
        self._cancelled.wait(seconds)

    def cancel(self) -> None:
        self._cancelled.set()


class PoliteRetry(Retry):
    """urllib3's Retry, made to cooperate with the global rate limiter.

    Every retry waits for a limiter slot, so retries count against ``rate`` too. A
    ``Retry-After`` on a 503 pauses the limiter (capped at ``max_retry_after``) instead of
    sleeping in one thread. 429 is never retried here: :class:`_Fetcher` handles it, pausing
    every worker and stopping the run when the server asks for a very long break.
    """

    limiter: RateLimiter | None = None
    max_retry_after: float = 600.0

    def new(self, **kwargs: object) -> PoliteRetry:
        retry = super().new(**kwargs)  # type: ignore[arg-type]
        retry.limiter = self.limiter
        retry.max_retry_after = self.max_retry_after
        return retry  # type: ignore[return-value]

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 429:
            return False
        return super().is_retry(method, status_code, has_retry_after)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        """As urllib3's, except that a name that does not resolve is not retried (not transient)."""
        if error is not None and is_unresolved_host(error):
            raise MaxRetryError(_pool, url or "", error) from error  # type: ignore[arg-type]
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def sleep(self, response: object | None = None) -> None:
        retry_after = self.get_retry_after(response) if response is not None else None  # type: ignore[arg-type]
        if self.limiter is None:
            super().sleep(response)  # type: ignore[arg-type]
            return
        if retry_after is not None:
            self.limiter.pause(min(retry_after, self.max_retry_after))
        else:
            self.limiter.sleep(self.get_backoff_time())
        self.limiter.acquire()


@dataclass(slots=True)
class DownloadConfig:
    """How to download. The defaults are polite towards wga.hu; tests shorten the waits."""

    out_dir: Path
    base_url: str = DEFAULT_BASE_URL
    workers: int = DEFAULT_WORKERS
    rate: float | None = DEFAULT_RATE  # requests per second over all workers; None = unlimited
    max_side: int | None = None  # shrink larger images to this many pixels on the long side
    jpeg_quality: int = 92  # only used when an image is resized or re-encoded
    timeout: tuple[float, float] = (10.0, 60.0)  # connect, read (seconds)
    retries: int = 4  # urllib3 retries for connection errors, resets, 5xx
    attempts: int = 3  # whole-request attempts for broken or truncated bodies
    backoff: float = 1.0  # seconds; doubles each retry
    backoff_max: float = 60.0
    max_retry_after: float = 600.0  # a longer Retry-After stops the run ("come back later")
    page_fallback: bool = True  # on 404, look for the image link in the artwork's HTML page
    recheck: bool = False  # decode every existing file again instead of trusting the manifest
    retry_missing: bool = False  # ask again for images that were 404 in an earlier run
    progress: bool = True
    user_agent: str = USER_AGENT

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.workers < 1:
            raise InvalidInput(f"--workers must be at least 1, not {self.workers}")
        if self.rate is not None and self.rate < 0:
            raise InvalidInput(f"--rate must be positive (requests per second), not {self.rate}")
        if self.max_side is not None and self.max_side < 16:
            raise InvalidInput(f"--max-side must be at least 16 pixels, not {self.max_side}")


@dataclass(slots=True)
class Outcome:
    """What happened to one selected row."""

    status: str
    error: str = ""
    source: str = ""  # "download", "page" (found through the HTML page), "cached"
    image_url: str = ""
    width: int = 0
    height: int = 0
    bytes: int = 0


@dataclass(slots=True)
class DownloadSummary:
    selected: int = 0
    ok: int = 0
    downloaded: int = 0
    cached: int = 0
    via_page: int = 0
    missing: int = 0
    failed: int = 0
    pending: int = 0
    requests: int = 0
    bytes: int = 0
    seconds: float = 0.0
    stopped: str = ""  # why the run stopped early, if it did
    manifest: str = ""
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def lines(self) -> list[str]:
        rate = self.downloaded / self.seconds if self.seconds else 0.0
        lines = [
            f"selected {self.selected}: {self.ok} ok ({self.downloaded} downloaded, "
            f"{self.cached} already there, {self.via_page} found via the artwork page), "
            f"{self.missing} missing, {self.failed} failed, {self.pending} not tried",
            f"{self.requests} requests, {_human_bytes(self.bytes)} in {self.seconds:.1f} s "
            f"({rate:.2f} images/s)",
            f"manifest: {self.manifest}",
        ]
        if self.errors:
            top = sorted(self.errors.items(), key=lambda item: -item[1])[:5]
            lines.append("errors: " + "; ".join(f"{n}× {message}" for message, n in top))
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}")
        if self.failed or self.pending:
            lines.append("run the same command again to retry what failed (done files are kept)")
        return lines


def _human_bytes(n: float) -> str:
    for unit in ("bytes", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class StopDownload(Exception):
    """The server asked us to stay away longer than we are willing to wait."""


class _BadImage(Exception):
    pass


# --------------------------------------------------------------------------- session


def make_session(config: DownloadConfig, limiter: RateLimiter) -> requests.Session:
    """A session with a connection pool per worker and the polite retry policy."""
    retry = PoliteRetry(
        total=config.retries,
        connect=config.retries,
        read=config.retries,
        status=config.retries,
        other=0,
        backoff_factor=config.backoff,
        backoff_max=config.backoff_max,
        backoff_jitter=config.backoff / 4,
        status_forcelist=(500, 502, 503, 504),  # 429 is handled above, pausing every worker
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )
    retry.limiter = limiter
    retry.max_retry_after = config.max_retry_after
    adapter = HTTPAdapter(
        pool_connections=2, pool_maxsize=max(4, config.workers * 2), max_retries=retry
    )
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = config.user_agent
    return session


# --------------------------------------------------------------------------- images


def verify_image(data: bytes) -> Image.Image:
    """Decode the whole image (not just its header): truncated or non-image data raise."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()  # raises OSError "image file is truncated" for a cut-off JPEG
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        kind = "truncated image" if "truncated" in str(error).lower() else "not a readable image"
        raise _BadImage(f"{kind}: {error}") from error
    if image.width < 1 or image.height < 1:
        raise _BadImage("empty image")
    return image


def verify_file(path: Path) -> bool:
    try:
        verify_image(path.read_bytes())
    except (_BadImage, OSError):
        return False
    return True


def encode_image(data: bytes, image: Image.Image, max_side: int | None, quality: int) -> bytes:
    """The bytes to store: the original JPEG untouched, unless it must shrink or isn't JPEG."""
    too_big = max_side is not None and max(image.size) > max_side
    if image.format == "JPEG" and image.mode in ("RGB", "L") and not too_big:
        return data  # CMYK and other modes are re-encoded: not every decoder reads them
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    if too_big:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)  # type: ignore[arg-type]
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file next to ``path``, then rename: never a half-written file."""
    write_bytes_atomic(path, data)


# --------------------------------------------------------------------------- one artwork


class _Fetcher:
    """Downloads one artwork with the shared session; safe to call from many threads."""

    def __init__(self, config: DownloadConfig, session: requests.Session, limiter: RateLimiter):
        self.config = config
        self.session = session
        self.limiter = limiter
        self.images = config.out_dir / IMAGES_DIR
        self._stop = threading.Event()
        self.stop_reason = ""
        self._unresolved = 0
        self._unresolved_lock = threading.Lock()

    def stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()
        self.limiter.cancel()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _sleep_backoff(self, attempt: int) -> None:
        delay = min(self.config.backoff_max, self.config.backoff * 2**attempt)
        self.limiter.sleep(delay * random.uniform(0.75, 1.25))

    def get(self, url: str) -> tuple[int, bytes, str]:
        """GET with the limiter; 429 pauses everyone. Returns (status, body, error text).

        Status 0 means no answer after all attempts (the error text says why). Answers to 429
        do not use up the attempts: the server is alive, it only wants us slower.
        """
        last_error = ""
        failures = 0
        rate_limited = 0
        while failures < self.config.attempts and rate_limited < MAX_429_PER_REQUEST:
            if self.stopped or not self.limiter.acquire():
                raise StopDownload(self.stop_reason)
            try:
                with self.session.get(url, timeout=self.config.timeout, stream=True) as response:
                    if response.status_code == 429:
                        rate_limited += 1
                        wait_s = parse_retry_after(response.headers.get("Retry-After"))
                        if wait_s is None:
                            wait_s = min(
                                self.config.backoff_max, self.config.backoff * 2**rate_limited
                            )
                        if wait_s > self.config.max_retry_after:
                            self.stop(
                                f"the server answered 429 and asks to wait {wait_s:.0f} s "
                                f"(more than max_retry_after = {self.config.max_retry_after:.0f} s)"
                            )
                            raise StopDownload(self.stop_reason)
                        log.info("429 for %s: every worker pauses %.1f s", url, wait_s)
                        self.limiter.pause(wait_s)
                        last_error = "429 Too Many Requests"
                        continue
                    if response.status_code != 200:
                        return response.status_code, b"", f"HTTP {response.status_code}"
                    body = bytearray()
                    for chunk in response.iter_content(1 << 16):
                        body += chunk
                        if len(body) > MAX_IMAGE_BYTES:
                            return 200, b"", f"response larger than {MAX_IMAGE_BYTES} bytes"
                    return 200, bytes(body), ""
            except requests.RequestException as error:
                last_error = _short_error(error)
                if is_unresolved_host(error):
                    self._count_unresolved(url)
                    return 0, b"", last_error
                log.debug("attempt %d for %s failed: %s", failures + 1, url, last_error)
                self._sleep_backoff(failures)
                failures += 1
        return 0, b"", last_error

    def _count_unresolved(self, url: str) -> None:
        """One more image whose host did not resolve; the run stops at :data:`MAX_UNRESOLVED`."""
        with self._unresolved_lock:
            self._unresolved += 1
            count = self._unresolved
        if count >= MAX_UNRESOLVED:
            host = urlsplit(url).hostname
            self.stop(
                f"the image host {host} does not resolve (offline, or a wrong --base-url?): "
                f"stopped after {count} images; run the same command again once it resolves"
            )
            raise StopDownload(self.stop_reason)

    def fetch(self, record: Artwork) -> Outcome:
        if self.stopped:
            return Outcome(STATUS_PENDING, self.stop_reason)
        target = self.images / record.file_name
        url = record.image_url(self.config.base_url)
        try:
            outcome = self._fetch_image(url, target, "download")
            if outcome.status == STATUS_MISSING and self.config.page_fallback:
                outcome = self._fetch_via_page(record, target, outcome)
        except StopDownload as stop:
            return Outcome(STATUS_PENDING, str(stop), image_url=url)
        except Exception as error:  # a worker never dies: record the failure and go on
            log.exception("unexpected error for %s", url)
            return Outcome(STATUS_FAILED, f"unexpected error: {error!r}", image_url=url)
        return outcome

    def _fetch_image(self, url: str, target: Path, source: str) -> Outcome:
        last_error = ""
        for attempt in range(self.config.attempts):
            status, body, error = self.get(url)
            if status == 404:
                return Outcome(STATUS_MISSING, "404 Not Found", source, url)
            if status != 200:
                return Outcome(STATUS_FAILED, error, source, url)
            try:
                image = verify_image(body)
            except _BadImage as bad:
                last_error = str(bad)  # often a cut-off transfer: try again
                self._sleep_backoff(attempt)
                continue
            data = encode_image(body, image, self.config.max_side, self.config.jpeg_quality)
            if data is not body:
                with Image.open(io.BytesIO(data)) as stored:
                    size = stored.size
            else:
                size = image.size
            write_atomic(target, data)
            return Outcome(STATUS_OK, "", source, url, size[0], size[1], len(data))
        return Outcome(STATUS_FAILED, last_error, source, url)

    def _fetch_via_page(self, record: Artwork, target: Path, missing: Outcome) -> Outcome:
        page_url = record.page_url(self.config.base_url)
        status, body, _ = self.get(page_url)
        if status != 200:
            return missing
        link = find_image_link(body, page_url)
        if link is None:
            return Outcome(STATUS_MISSING, "404, and the artwork page links no image", "page")
        url = rebase_url(link, self.config.base_url)
        if url == missing.image_url:
            return missing
        outcome = self._fetch_image(url, target, "page")
        if outcome.status == STATUS_MISSING:
            outcome.error = "404, and 404 for the image the artwork page links"
        return outcome


def is_unresolved_host(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a host name that did not resolve (DNS)."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, NameResolutionError | socket.gaierror):
            return True
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__]
        linked.extend(arg for arg in current.args if isinstance(arg, BaseException))
        stack.extend(item for item in linked if isinstance(item, BaseException))
    return False


def _short_error(error: Exception) -> str:
    """A one-line reason without urllib3's nested reprs."""
    text = str(error)
    for marker in ("Caused by ", "(Caused by"):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = text.strip(" ()'\"")
    return f"{type(error).__name__}: {text[:160]}"


# --------------------------------------------------------------------------- resume


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a download manifest (CSV or JSONL)."""
    if not path.is_file():
        return []
    if path.suffix == ".jsonl":
        return list(_read_jsonl(path))
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _read_jsonl(path: Path) -> Iterator[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed run may be cut off


def _known_rows(out_dir: Path) -> dict[str, dict[str, str]]:
    """``artwork key → manifest row`` of earlier runs (manifest, then the journal of a killed run)."""
    known: dict[str, dict[str, str]] = {}
    rows: Iterable[dict[str, str]] = read_manifest(out_dir / MANIFEST_FILE)
    for source in (
        rows,
        _read_jsonl(out_dir / JOURNAL_NAME) if (out_dir / JOURNAL_NAME).is_file() else [],
    ):
        for row in source:
            if row.get("key") and row.get("status") in (STATUS_OK, STATUS_MISSING):
                known[str(row["key"])] = row
    return known


def _remove_temporaries(images: Path) -> int:
    removed = 0
    for leftover in images.glob(f"*{TEMP_MARK}*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


# --------------------------------------------------------------------------- the run


def download(
    records: Sequence[Artwork],
    config: DownloadConfig,
    *,
    session: requests.Session | None = None,
    on_result: Callable[[Artwork, Outcome], None] | None = None,
) -> DownloadSummary:
    """Download the images of ``records`` into ``config.out_dir/images`` and write the manifest.

    Returns the summary (also written to ``summary.json``). Never raises for a single image:
    failures are recorded in the manifest and retried by the next run.
    """
    started = time.monotonic()
    out_dir = config.out_dir
    images = _images_folder(out_dir)
    known = _known_rows(out_dir)
    limiter = RateLimiter(config.rate)
    own_session = session is None
    http = session if session is not None else make_session(config, limiter)
    fetcher = _Fetcher(config, http, limiter)
    outcomes: dict[str, Outcome] = {}
    summary = DownloadSummary(selected=len(records))

    journal_path = out_dir / JOURNAL_NAME
    with open(journal_path, "a", encoding="utf-8") as journal:

        def record_result(record: Artwork, outcome: Outcome) -> None:
            outcomes[record.key] = outcome
            journal.write(json.dumps(_manifest_row(record, outcome), ensure_ascii=False) + "\n")
            journal.flush()
            if on_result is not None:
                on_result(record, outcome)

        to_fetch = _to_fetch(records, known, images, config, outcomes)
        bar = tqdm(
            total=len(records),
            initial=len(records) - len(to_fetch),
            unit="img",
            desc="download",
            disable=not config.progress,
            dynamic_ncols=True,
        )
        interrupted: BaseException | None = None
        try:
            _run_pool(to_fetch, config.workers, fetcher.fetch, record_result, bar, fetcher.stop)
        except BaseException as error:  # Ctrl-C: still write the manifest of what is done
            interrupted = error
        finally:
            bar.close()
            if own_session:
                http.close()

    _finish(summary, records, outcomes, out_dir, fetcher.stop_reason, limiter.requests, started)
    # The manifest now holds everything the journal knew.
    journal_path.unlink(missing_ok=True)
    if interrupted is not None:
        raise interrupted
    return summary


def _finish(
    summary: DownloadSummary,
    records: Sequence[Artwork],
    outcomes: dict[str, Outcome],
    out_dir: Path,
    stopped: str,
    requests_made: int,
    started: float,
) -> None:
    """Count the outcomes into ``summary``; write the manifest and ``summary.json``."""
    for record in records:
        _count(summary, outcomes.get(record.key) or Outcome(STATUS_PENDING, stopped))
    summary.requests = requests_made
    summary.stopped = stopped
    summary.seconds = time.monotonic() - started
    summary.manifest = str(out_dir / MANIFEST_FILE)
    write_manifest(out_dir / MANIFEST_FILE, records, outcomes)
    write_atomic(out_dir / SUMMARY_NAME, json.dumps(summary.as_dict(), indent=2).encode())


def _to_fetch(
    records: Sequence[Artwork],
    known: dict[str, dict[str, str]],
    images: Path,
    config: DownloadConfig,
    outcomes: dict[str, Outcome],
) -> list[Artwork]:
    """The records that need a request; the others' outcomes (there already, or 404 in an earlier
    run) go into ``outcomes``."""
    to_fetch: list[Artwork] = []
    for record in records:
        previous = known.get(record.key)
        if (
            previous is not None
            and previous.get("status") == STATUS_MISSING
            and not config.retry_missing
        ):
            outcomes[record.key] = Outcome(
                STATUS_MISSING,
                previous.get("error") or "404 in an earlier run",
                "cached",
                previous.get("image_url") or "",
            )
            continue
        cached = _cached_outcome(images / record.file_name, previous, config)
        if cached is not None:
            outcomes[record.key] = cached
        else:
            to_fetch.append(record)
    if len(to_fetch) < len(records):
        log.info(
            "%d of %d rows need no request (already there, or 404 before)",
            len(records) - len(to_fetch),
            len(records),
        )
    return to_fetch


def _images_folder(out_dir: Path) -> Path:
    """``out_dir/images``, made if needed, without the temporary files of a killed run."""
    images = out_dir / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    if removed := _remove_temporaries(images):
        log.info("removed %d temporary files left by an interrupted run", removed)
    return images


def _cached_outcome(
    path: Path, known: dict[str, str] | None, config: DownloadConfig
) -> Outcome | None:
    """An outcome for a file that is already there and whole, without any request; else None."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if (
        known is not None
        and known.get("status") == STATUS_OK
        and str(known.get("bytes")) == str(size)
        and not config.recheck
    ):
        return Outcome(
            STATUS_OK,
            "",
            "cached",
            str(known.get("image_url") or ""),
            int(known.get("width") or 0),
            int(known.get("height") or 0),
            size,
        )
    # Unknown to the manifest (or rechecking): it was renamed into place only after
    # verification, but decode it again to be sure before trusting it.
    try:
        image = verify_image(path.read_bytes())
    except (_BadImage, OSError):
        log.warning("%s is not a whole image; fetching it again", path.name)
        path.unlink(missing_ok=True)
        return None
    return Outcome(STATUS_OK, "", "cached", "", image.width, image.height, size)


def _run_pool(
    records: Sequence[Artwork],
    workers: int,
    fetch: Callable[[Artwork], Outcome],
    record_result: Callable[[Artwork, Outcome], None],
    bar: object,
    abort: Callable[[str], None],
) -> None:
    """Feed a bounded window of jobs to the pool, so memory stays flat for any catalog size."""
    window = workers * 4
    pending: dict[Future[Outcome], Artwork] = {}
    iterator = iter(records)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wga-download") as pool:
        try:
            while True:
                while len(pending) < window:
                    record = next(iterator, None)
                    if record is None:
                        break
                    pending[pool.submit(fetch, record)] = record
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    record = pending.pop(future)
                    record_result(record, future.result())
                    bar.update(1)  # type: ignore[attr-defined]
        except BaseException as error:
            abort(
                f"interrupted ({type(error).__name__})"
            )  # running workers stop at their next request
            for future in pending:
                future.cancel()
            raise


def _count(summary: DownloadSummary, outcome: Outcome) -> None:
    if outcome.status == STATUS_OK:
        summary.ok += 1
        if outcome.source == "cached":
            summary.cached += 1
        else:
            summary.downloaded += 1
            summary.bytes += outcome.bytes
            if outcome.source == "page":
                summary.via_page += 1
    elif outcome.status == STATUS_MISSING:
        summary.missing += 1
    elif outcome.status == STATUS_FAILED:
        summary.failed += 1
        summary.errors[outcome.error] = summary.errors.get(outcome.error, 0) + 1
    else:
        summary.pending += 1


def _manifest_row(record: Artwork, outcome: Outcome) -> dict[str, object]:
    row: dict[str, object] = {
        "key": record.key,
        "file": f"{IMAGES_DIR}/{record.file_name}" if outcome.status == STATUS_OK else "",
        "status": outcome.status,
        "error": outcome.error,
        "source": outcome.source,
        "image_url": outcome.image_url,
        "width": outcome.width or "",
        "height": outcome.height or "",
        "bytes": outcome.bytes or "",
    }
    row.update(record.as_row())
    return row


def write_manifest(path: Path, records: Sequence[Artwork], outcomes: dict[str, Outcome]) -> None:
    """Every selected row, in catalog order, with its outcome (CSV, UTF-8, written atomically)."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        outcome = outcomes.get(record.key) or Outcome(STATUS_PENDING)
        writer.writerow(_manifest_row(record, outcome))
    write_atomic(path, out.getvalue().encode("utf-8"))
