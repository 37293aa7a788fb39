"""The render cache: the render store the page reads, plus live jobs and a byte cap (LRU).

One folder (the static ``renders/``, served by the gateway at ``/public/renders/``) is a
:class:`~wga.vis.store.RenderStore` — finished renders as ``<id>.png`` and their record
``<id>.json`` — to which the server adds, per live job:

* ``<id>.png`` — while the job runs, its latest snapshot (rewritten atomically);
* ``<id>.json`` — the job's state, rewritten atomically at each change: the same JSON as
  ``GET /api/renders/:id``. It is the job's ``status_url``: pages poll it as a static file, with
  no kernel round-trip. When the job is done it becomes the store's record.

plus ``_status.json``, the queue's status (the fast path of ``GET /api/status``).

**Bounded.** Finished renders are indexed (bytes, last use); past ``max_bytes`` the least
recently used are deleted (state file first, then image, so a record never points at a missing
image) down to :data:`LOW_WATER` of the cap. Never deleted: a live job's files, and a render a
page read in the last ``grace_s`` seconds. Pages read through the gateway, which marks each read
with :func:`mark_used` (the state file's mtime), so uses survive restarts too: on start the index
is rebuilt from the folder, and stale files of jobs that died with the previous server, snapshots
without a record and temporary files are removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wga.atomic import TEMP_MARK, write_text_atomic
from wga.serve.jobs import LIVE
from wga.vis.store import (
    ID_PATTERN,
    PUBLIC_URL,
    PngWriter,
    RenderStore,
    mtime_ns,
    select,
    view_from_record,
)

log = logging.getLogger(__name__)

DEFAULT_CACHE_MAX = 4 * 1024**3  # bytes: a few GB
DEFAULT_GRACE_S = 120.0  # a render a page read this recently is never evicted
LOW_WATER = 0.9  # eviction frees down to this fraction of the cap (fewer, larger sweeps)
STATUS_FILE = "_status.json"
UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3}
UNITS.update({"GB": 1024**3, "T": 1024**4, "TB": 1024**4})


def parse_size(text: str | int) -> int:
    """``"50MB"``, ``"2 GB"``, ``"512k"``, ``1000`` → bytes (binary units, as ``du -h``)."""
    if isinstance(text, int):
        value, unit = text, ""
    else:
        cleaned = str(text).strip().upper().replace(" ", "").removesuffix("IB")
        digits = cleaned.rstrip("KMGTB")
        unit = cleaned[len(digits) :]
        try:
            value = float(digits)
        except ValueError:
            value, unit = -1, "?"
    if unit not in UNITS or value <= 0:
        raise ValueError(
            f"cache size {text!r} is not a size: give bytes or a number with KB, MB or GB, "
            "e.g. 500MB or 4GB"
        )
    return int(value * UNITS[unit])


def mark_used(state_file: Path) -> None:
    """A page read this render (called by the gateway on every read of its files). The time is
    given to the nanosecond: the file system's own clock ticks coarsely (milliseconds), and a
    read must show as later than the write it follows."""
    now = time.time_ns()
    with contextlib.suppress(OSError):
        os.utime(state_file, ns=(now, now))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class Entry:
    """A finished render in the index."""

    record: dict[str, Any]
    bytes: int
    written_ns: int  # when the cache wrote its state file
    used_ns: int = 0  # the last read by a page, as far as the cache has seen

    @property
    def last_use(self) -> int:
        return max(self.written_ns, self.used_ns)


class RenderCache(RenderStore):
    """Renders and job states in one folder, with a byte cap (see the module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        writer: PngWriter | None = None,
        *,
        max_bytes: int = DEFAULT_CACHE_MAX,
        grace_s: float = DEFAULT_GRACE_S,
        public_url: str = PUBLIC_URL,
        resuming: Container[str] = (),
    ) -> None:
        """``resuming``: ids of jobs a previous server accepted that this one takes over (from
        its journal): their state files stay, so a page polling them never sees a 404."""
        super().__init__(directory, writer, public_url=public_url)
        self._resuming = resuming
        self.max_bytes = max_bytes
        self.grace_ns = int(grace_s * 1e9)
        self._lock = threading.Lock()
        self._index: dict[str, Entry] = {}
        # Live jobs: the mtime of the state file the cache last wrote, and the last read by a
        # page seen so far (kept across rewrites: a finished render a page polled stays).
        self._live: dict[str, tuple[int, int]] = {}
        self._bytes = 0
        self.evicted = 0
        self._load()

    state_path = RenderStore.record_path  # a live job's state; a finished render's record

    # -- reading ------------------------------------------------------------------------------
    def listing(self, model: str | None, layer: str | None, limit: int) -> list[dict[str, Any]]:
        """Finished renders, newest first, optionally of one model (and layer)."""
        with self._lock:
            records = [entry.record for entry in self._index.values()]
        found = select(records, model, layer, limit)
        return [view_from_record(record, self.public_url) for record in found]

    def last_view(self, render: str) -> dict[str, Any] | None:
        """A finished render's view, or the last state of a job that failed or was cancelled
        (its state file stays, so a restarted server still answers what became of it)."""
        view = self.view(render)
        if view is not None:
            return view
        try:
            record = json.loads(self.state_path(render).read_text())
        except (OSError, ValueError):
            return None
        if record.get("status") not in ("failed", "cancelled"):
            return None
        return view_from_record({**record, "id": render}, self.public_url)

    def usage(self) -> dict[str, int]:
        with self._lock:
            return {
                "cache_entries": sum(
                    1 for e in self._index.values() if e.record.get("status", "done") == "done"
                ),
                "cache_bytes": self._bytes,
                "cache_max": self.max_bytes,
                "cache_evicted": self.evicted,
            }

    def entries(self) -> int:
        return self.usage()["cache_entries"]

    # -- writing ------------------------------------------------------------------------------
    def _last_read(self, render: str) -> int:
        """When a page last read the live job's state file, as far as can be seen (or 0): a
        read after the cache's last write shows as a newer mtime (:func:`mark_used`)."""
        written, seen = self._live.pop(render, (None, 0))
        mtime = mtime_ns(self.state_path(render))
        if written is not None and mtime is not None and mtime > written:
            seen = max(seen, mtime)
        return seen

    def write_state(self, view: dict[str, Any]) -> None:
        """The state of a live job (queued or running), for pages polling its ``status_url``."""
        render = view["id"]
        with self._lock:
            seen = self._last_read(render)
            written = super()._commit(render, {**view, "server": os.getpid()})
            self._live[render] = (written, seen)

    def touch(self, render: str) -> None:
        """A finished render was asked for again (a cache hit): the page will load it now."""
        with self._lock:
            entry = self._index.get(render)
            if entry is not None:
                entry.used_ns = time.time_ns()

    write_snapshot = RenderStore.write_png

    def _commit(self, render: str, record: dict[str, Any]) -> int:
        """A finished render's record (its image is in place), indexed for eviction."""
        with self._lock:
            touched = self._last_read(render)
            written = super()._commit(render, record)
            size = _size(self.png_path(render)) + _size(self.state_path(render))
            self._add(render, Entry(record, size, written, touched))
        return written

    def discard(self, view: dict[str, Any]) -> None:
        """A job ended without an image (failed, cancelled): its snapshot goes, its state stays
        (a page polling it learns why it ended) as a small entry that eviction may take."""
        render = view["id"]
        with self._lock:
            self._live.pop(render, None)
            old = self._index.get(render)
            if old is not None and old.record.get("status", "done") == "done":
                return  # a finished render: its files stay
            self.png_path(render).unlink(missing_ok=True)
            written = super()._commit(render, view)
            self._add(render, Entry(view, _size(self.state_path(render)), written))

    def _add(self, render: str, entry: Entry) -> None:
        old = self._index.pop(render, None)
        self._bytes += entry.bytes - (old.bytes if old else 0)
        self._index[render] = entry

    def write_status(self, status: dict[str, Any]) -> None:
        write_text_atomic(self.directory / STATUS_FILE, json.dumps(status, default=str))

    # -- eviction -----------------------------------------------------------------------------
    def evict(self, protected: Container[str] = ()) -> int:
        """Delete least recently used renders until under the cap; the number deleted."""
        with self._lock:
            if self._bytes <= self.max_bytes:
                return 0
            target = int(self.max_bytes * LOW_WATER)
            now = time.time_ns()
            deleted = 0
            for render, entry in sorted(self._index.items(), key=lambda kv: kv[1].last_use):
                if self._bytes <= target:
                    break
                if render in protected:
                    continue
                mtime = mtime_ns(self.state_path(render))
                if mtime is not None and mtime > entry.written_ns:
                    entry.used_ns = max(entry.used_ns, mtime)
                if entry.used_ns and now - entry.used_ns < self.grace_ns:
                    continue  # a page is looking at it
                self._delete(render)
                deleted += 1
            self.evicted += deleted
            return deleted

    def _delete(self, render: str) -> None:
        """Record first, image second: a record never points at a missing image."""
        entry = self._index.pop(render)
        self._bytes -= entry.bytes
        self.state_path(render).unlink(missing_ok=True)
        self.png_path(render).unlink(missing_ok=True)

    # -- start-up -----------------------------------------------------------------------------
    def _load(self) -> None:
        """Index the folder; remove what a previous server left half-done."""
        pid = os.getpid()
        resuming = self._resuming
        for path in self.directory.iterdir():
            if TEMP_MARK in path.name:
                path.unlink(missing_ok=True)
                continue
            if path.suffix != ".json" or not ID_PATTERN.match(path.stem):
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                record = {"status": "broken"}
            status = record.get("status", "done")
            ended = status in ("failed", "cancelled")
            if (status == "done" and self.png_path(path.stem).exists()) or ended:
                record.setdefault("id", path.stem)
                size = _size(path) + (0 if ended else _size(self.png_path(path.stem)))
                self._add(path.stem, Entry(record, size, mtime_ns(path) or 0))
            elif status in LIVE and (_alive(record.get("server"), pid) or path.stem in resuming):
                continue  # another server on this folder is rendering it, or we take it over
            else:
                path.unlink(missing_ok=True)  # died with the previous server, or broken
        for path in self.directory.glob("*.png"):
            if not ID_PATTERN.match(path.stem):
                continue
            entry = self._index.get(path.stem)
            if entry is None:
                orphan = not self.state_path(path.stem).exists()  # else: another server's job
            else:
                orphan = entry.record.get("status", "done") != "done"
            if orphan:
                path.unlink(missing_ok=True)  # a snapshot of a job that never finished
        self.evict()


def _alive(pid: Any, own: int) -> bool:
    """Whether ``pid`` is another running process (a second server sharing the folder)."""
    if not isinstance(pid, int) or pid == own or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
