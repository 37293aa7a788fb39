"""The render store: finished renders in one folder, each under its content address.

A render is known by its **id**, the content address of its recipe and of the weights it ran on
(:func:`render_id`): equal recipes on equal weights give equal ids, whoever renders them — the
server's queue, a bulk render (``render --units all``), an atlas's icons, in this process or on
a Ray cluster. A finished render is two files:

* ``<id>.png`` — the image, with the recipe in its text chunks (:mod:`wga.vis.png`);
* ``<id>.json`` — its **record**: the render's view as the REST API shows it (status ``done``,
  params, times, URLs; :func:`render_view`) plus the weights' ``fingerprint``.

Image first, record second, each written atomically: a record always points at a whole image, so
a folder is read without locks, by any number of processes. The server's render cache
(:class:`wga.serve.cache.RenderCache`) is a store with live jobs, eviction and serving on top; an
atlas's ``icons/`` folder is a store too, and a render moves between stores by
:meth:`RenderStore.adopt` (same id, same bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from wga.atomic import atomic_path, write_text_atomic
from wga.errors import NotFound

if TYPE_CHECKING:
    import numpy as np

ID_LENGTH = 24  # hex digits of sha256: 96 bits, no collision among any realistic cache
ID_PATTERN = re.compile(rf"^[0-9a-f]{{{ID_LENGTH}}}$")
PUBLIC_URL = "/public/renders/"  # where the gateway serves the render cache folder

PngWriter = Callable[[Path, "np.ndarray", dict], None]


class Addressable(Protocol):
    """What a render id needs of a recipe (:class:`wga.vis.recipe.Recipe`)."""

    def as_dict(self) -> dict: ...


def render_id(recipe: Addressable, fingerprint: str) -> str:
    """The content address of a render: equal recipes on equal weights give equal ids."""
    payload = json.dumps(
        {"recipe": recipe.as_dict(), "weights": fingerprint}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:ID_LENGTH]


def check_id(render: Any) -> str:
    """``render`` if it looks like an id (which also keeps paths out of a store's folder)."""
    if not isinstance(render, str) or not ID_PATTERN.match(render):
        raise NotFound(
            f"no render with id {str(render)[:80]!r}: ids are {ID_LENGTH} hex digits, "
            "as returned by POST /api/renders"
        )
    return render


def urls(render: str, public_url: str = PUBLIC_URL) -> dict[str, str]:
    """The image and the fast-path state file of a render, as the gateway serves them."""
    return {"url": f"{public_url}{render}.png", "status_url": f"{public_url}{render}.json"}


def render_view(
    render: str,
    params: dict[str, Any],
    *,
    status: str,
    progress: float,
    error: str | None,
    priority: int,
    created: float | None,
    started: float | None,
    finished: float | None,
    public_url: str = PUBLIC_URL,
) -> dict[str, Any]:
    """A render as JSON: the API's answer, a live job's state file and (done) its record."""
    return {
        "id": render,
        "status": status,
        "progress": round(progress, 4),
        "error": error,
        "params": params,
        "priority": priority,
        "created": created,
        "started": started,
        "finished": finished,
        **urls(render, public_url),
    }


def view_from_record(record: dict[str, Any], public_url: str = PUBLIC_URL) -> dict[str, Any]:
    """A record read from disk as a view (records written before state files lack fields)."""
    keys = ("id", "status", "progress", "error", "params", "priority", "created", "started")
    defaults = {"status": "done", "progress": 1.0, "error": None, "params": {}, "priority": 0}
    view = {key: record.get(key, defaults.get(key)) for key in keys}
    view["finished"] = record.get("finished")
    return {**view, **urls(record["id"], public_url)}


def select(
    records: Iterable[dict[str, Any]], model: str | None, layer: str | None, limit: int
) -> list[dict[str, Any]]:
    """Finished records of ``model`` (and ``layer``; ``None``: any), newest first."""
    found = []
    for record in records:
        if record.get("status", "done") != "done":
            continue
        params = record.get("params") or {}
        if model is not None and params.get("model") != model:
            continue
        if layer is not None and params.get("layer") != layer:
            continue
        found.append(record)
    found.sort(key=lambda r: r.get("finished") or 0, reverse=True)
    return found[:limit]


def png_matches(path: Path, recipe: Addressable, fingerprint: str) -> bool:
    """Whether the PNG at ``path`` is a finished render of ``recipe`` on these weights (its text
    chunks carry both; a snapshot of a running render does not count)."""
    from wga.vis.png import read_png_metadata

    try:
        stored = read_png_metadata(path)
    except (OSError, ValueError, SyntaxError):
        return False
    if stored.get("weights") != fingerprint or "snapshot_step" in stored:
        return False
    wanted = recipe.as_dict()
    if wanted.get("objective") == "auto":  # the metadata records the objective it resolved to
        del wanted["objective"]
    return all(stored.get(key) == value for key, value in wanted.items())


def mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class RenderStore:
    """Finished renders in ``directory`` (see the module docstring).

    ``writer`` writes a PNG with its metadata (default :func:`wga.vis.png.save_png`; tests of the
    queue pass a cheaper one). ``public_url`` is where the folder is served, for the records'
    URLs.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        writer: PngWriter | None = None,
        *,
        public_url: str = PUBLIC_URL,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.public_url = public_url
        self._writer = writer

    # -- paths --------------------------------------------------------------------------------
    def png_path(self, render: str) -> Path:
        return self.directory / f"{render}.png"

    def record_path(self, render: str) -> Path:
        return self.directory / f"{render}.json"

    # -- reading ------------------------------------------------------------------------------
    def lookup(self, render: str) -> dict[str, Any] | None:
        """The record of a finished render, or ``None`` (also when its image went missing)."""
        try:
            record = json.loads(self.record_path(render).read_text())
        except (OSError, ValueError):
            return None
        if record.get("status", "done") != "done" or not self.png_path(render).exists():
            return None
        return record

    def finished_png(self, render: str) -> Path | None:
        """The image of a finished render with this id, or ``None``."""
        return self.png_path(render) if self.lookup(render) is not None else None

    def view(self, render: str) -> dict[str, Any] | None:
        record = self.lookup(render)
        return None if record is None else view_from_record(record, self.public_url)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every finished render's record in the folder (any order)."""
        for path in self.directory.glob("*.json"):
            if ID_PATTERN.match(path.stem) and (record := self.lookup(path.stem)) is not None:
                yield {**record, "id": path.stem}

    def listing(self, model: str | None, layer: str | None, limit: int) -> list[dict[str, Any]]:
        """Finished renders as views, newest first, optionally of one model (and layer)."""
        found = select(self.records(), model, layer, limit)
        return [view_from_record(record, self.public_url) for record in found]

    # -- writing ------------------------------------------------------------------------------
    def write_png(self, render: str, image: np.ndarray, metadata: dict) -> None:
        """The image alone (a finished render's, or a running one's snapshot)."""
        if self._writer is None:
            from wga.vis.png import save_png  # Pillow: only once images exist

            self._writer = save_png
        self._writer(self.png_path(render), image, metadata)

    def write(self, render: str, image: np.ndarray, metadata: dict, record: dict) -> None:
        """A finished render: the image first, then the record."""
        self.write_png(render, image, metadata)
        self._commit(render, record)

    def add(
        self,
        recipe: Addressable,
        fingerprint: str,
        image: np.ndarray,
        metadata: dict,
        *,
        started: float,
        priority: int = 0,
    ) -> str:
        """A render made outside a queue (bulk, atlas icons) under its id; returns the id."""
        render = render_id(recipe, fingerprint)
        record = render_view(
            render,
            recipe.as_dict(),
            status="done",
            progress=1.0,
            error=None,
            priority=priority,
            created=started,
            started=started,
            finished=time.time(),
            public_url=self.public_url,
        )
        self.write(render, image, metadata, {**record, "fingerprint": fingerprint})
        return render

    def adopt(self, source: RenderStore, render: str) -> bool:
        """Take ``source``'s finished render ``render`` (same id, same image bytes; the record
        gets this store's URLs); whether this store has it now."""
        if self.lookup(render) is not None:
            return True
        record = source.lookup(render)
        if record is None:
            return False
        with atomic_path(self.png_path(render)) as temp:
            shutil.copyfile(source.png_path(render), temp)
        self._commit(render, {**record, **urls(render, self.public_url)})
        return True

    def _commit(self, render: str, record: dict[str, Any]) -> int:
        """Write the record (its image is already in place); the record file's mtime."""
        path = self.record_path(render)
        write_text_atomic(path, json.dumps(record, default=str))
        return mtime_ns(path) or time.time_ns()
