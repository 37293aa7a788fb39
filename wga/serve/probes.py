"""The probe endpoints: corpus indexes, a unit's artworks, and heat overlays, for the page.

* ``GET /api/probes`` → ``{"probes": [{"name", "model", "corpus", "layers", "images", …}]}``:
  every index folder under ``$WGA_PROBES_DIR`` (default ``./probes``).
* ``GET /api/probes/:probe/layers/:layer/units/:unit`` → the unit's examples and negatives, each
  with ``image_url`` (the whole artwork), ``crop_url`` (its receptive field around the maximum),
  ``overlay_url`` (the endpoint below) and the catalog's ``author``, ``title``, ``date`` and
  ``page`` (the WGA page); the histogram and quantiles of its per-image maxima. ``?limit=N``
  keeps the first N of each (``limit=1``: the best example only, for grid thumbnails).
* ``GET /api/probes/:probe/layers/:layer/units/:unit/overlay?image=ID`` → ``{"status", "url"}``:
  the artwork with the unit's activation map (Grad-CAM for a class unit) as heat. Made in a
  background thread (it needs a forward pass): 202 ``pending`` until the file exists, then 200.

Files are reached only through an index: a probe is named by its folder (listed, never joined
from the request), an image by its id in that index, and every derived image is written under
``probes/<probe>-<key>/`` in the server's cache folder (``key`` changes when the index is rebuilt, so stale crops are
never shown). Crops and thumbnails are made on first request and cached.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wga.corpus.atlas import member_examples
from wga.corpus.index import DESCRIPTION_NAME, Example, ProbeIndex
from wga.corpus.views import crop_file, overlay_file, overlay_name, thumbnail_file
from wga.errors import InvalidInput, NotFound, WgaError, closest_names
from wga.paths import PROBE_IMAGES_FOLDER, probes_dir
from wga.serve.http import Response

if TYPE_CHECKING:
    from wga.serve.loading import ModelLoader

log = logging.getLogger(__name__)

PUBLIC_URL = "/public/"  # the gateway serves the cache folder's probes/ at /public/probes/
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
IMAGE_WORKERS = 4  # crops and thumbnails of one unit are cut in parallel (Pillow frees the GIL)


def _arg(request: dict[str, Any], name: str) -> str | None:
    values = request["args"].get(name)
    if isinstance(values, list):
        return str(values[0]) if values else None
    return None if values is None else str(values)


class ProbeService:
    """Answers the probe routes; one per backend (it caches opened indexes)."""

    def __init__(
        self,
        cache_dir: str | Path,
        loader: ModelLoader | None = None,
        probes: str | Path | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.loader = loader
        self._probes_root = Path(probes) if probes is not None else None
        self._indexes: dict[str, tuple[float, ProbeIndex]] = {}
        self._lock = threading.Lock()
        self._overlays = ThreadPoolExecutor(1, thread_name_prefix="wga-overlay")
        self._pending: dict[Path, Any] = {}

    @property
    def routes(self) -> dict[str, Callable[[dict[str, Any]], Response]]:
        return {
            "GET /api/probes": self.list_probes,
            "GET /api/probes/:probe/layers/:layer/units/:unit": self.get_unit,
            "GET /api/probes/:probe/layers/:layer/units/:unit/overlay": self.get_overlay,
        }

    # -- finding indexes ------------------------------------------------------------------------
    def root(self) -> Path:
        return self._probes_root if self._probes_root is not None else probes_dir()

    def names(self) -> list[str]:
        root = self.root()
        if not root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in root.iterdir()
            if _SAFE_NAME.match(entry.name) and (entry / DESCRIPTION_NAME).is_file()
        )

    def index(self, name: Any) -> ProbeIndex:
        names = self.names()
        if not isinstance(name, str) or name not in names:
            hint = (
                closest_names(str(name), names)
                if names
                else (
                    "there are none yet in the server's probes folder: build one with "
                    "`python -m wga probe --out probes/NAME` where wga serve runs (or --probes)"
                )
            )
            raise NotFound(f"unknown probe {name!r}: {hint} (GET /api/probes)")
        path = self.root() / name
        stamp = max(
            (path / f).stat().st_mtime
            for f in (DESCRIPTION_NAME, "state.npz")
            if (path / f).exists()
        )
        with self._lock:
            cached = self._indexes.get(name)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            index = ProbeIndex.open(path)
            self._indexes[name] = (stamp, index)
            return index

    def _cache(self, index: ProbeIndex) -> tuple[Path, str]:
        """The cache folder of ``index``'s derived images and its URL prefix."""
        d = index.description
        identity = (
            f"{d.get('created')}\0{d.get('model_fingerprint')}\0{d.get('corpus_fingerprint')}"
        )
        folder = f"{index.name}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
        public = f"{PUBLIC_URL}{PROBE_IMAGES_FOLDER}/{folder}/"
        return self.cache_dir / PROBE_IMAGES_FOLDER / folder, public

    # -- endpoints ------------------------------------------------------------------------------
    def list_probes(self, request: dict[str, Any]) -> Response:
        probes = []
        for name in self.names():
            try:
                probes.append(self.index(name).summary())
            except (OSError, ValueError, KeyError) as error:  # a broken folder is not fatal
                log.warning("probe %s cannot be read: %s", name, error)
        return Response(200, {"probes": probes})

    def _unit(self, request: dict[str, Any]) -> tuple[ProbeIndex, str, int]:
        path = request["path"]
        index = self.index(path.get("probe"))
        layer = str(path.get("layer"))
        index.layer_index(layer)  # NotFound with the closest names
        text = str(path.get("unit"))
        if not re.fullmatch(r"\d{1,7}", text):
            raise InvalidInput(f"unit must be a whole number, not {text!r}")
        unit = int(text)
        index.check_unit(layer, unit)
        return index, layer, unit

    def get_unit(self, request: dict[str, Any]) -> Response:
        index, layer, unit = self._unit(request)
        text = _arg(request, "limit")
        if text is not None and not re.fullmatch(r"\d{1,4}", text):
            raise InvalidInput(f"limit must be a whole number of examples, not {text!r}")
        limit = int(text) if text is not None else None
        document = index.unit(layer, unit)
        cache, url = self._cache(index)
        examples = index.examples(layer, unit)[:limit]
        negatives = index.examples(layer, unit, negatives=True)[:limit] if limit != 1 else []
        overlay = f"/api/probes/{index.name}/layers/{layer}/units/{unit}/overlay?image="

        def decorate(example: Example) -> dict[str, Any]:
            entry = example.as_dict()
            try:
                entry["image_url"] = (
                    url + thumbnail_file(index, example.image, cache).relative_to(cache).as_posix()
                )
                entry["crop_url"] = (
                    url + crop_file(index, layer, example, cache).relative_to(cache).as_posix()
                )
            except (OSError, WgaError) as error:  # the artwork moved away: say so, keep the rest
                entry["image_url"] = entry["crop_url"] = None
                entry["missing"] = str(error)
            entry["overlay_url"] = f"{overlay}{example.image}"
            return entry

        with ThreadPoolExecutor(IMAGE_WORKERS) as pool:
            document["examples"] = list(pool.map(decorate, examples))
            document["negatives"] = list(pool.map(decorate, negatives))
        document["probe"] = index.name
        document["images"] = index.description["images"]
        return Response(200, document)

    def image_url(self, index: ProbeIndex, image: int) -> str:
        """The URL of the whole artwork's thumbnail (made on first request); OSError/WgaError
        when the artwork is gone from the corpus."""
        cache, url = self._cache(index)
        return url + thumbnail_file(index, image, cache).relative_to(cache).as_posix()

    def with_images(self, index: ProbeIndex, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``entries`` (each with the artwork's ``id``) with their ``image_url`` added, the
        thumbnails cut in parallel; ``None`` and ``missing`` for an artwork no longer there."""

        def decorate(entry: dict[str, Any]) -> dict[str, Any]:
            try:
                return {**entry, "image_url": self.image_url(index, int(entry["id"]))}
            except (OSError, WgaError) as error:
                return {**entry, "image_url": None, "missing": str(error)}

        with ThreadPoolExecutor(IMAGE_WORKERS) as pool:
            return list(pool.map(decorate, entries))

    def artwork(
        self, index: ProbeIndex, layer: str, image: int, grid: tuple[int, int]
    ) -> dict[str, Any]:
        """One artwork at a position of ``layer``'s grid as the page shows it: the thumbnail's
        and the receptive-field crop's URLs, and the catalog fields (an atlas cell's members)."""
        cache, url = self._cache(index)
        meta = {k: v for k, v in index.images()[image].items() if k != "file"}
        entry: dict[str, Any] = {"image": image, "crop_url": None, **meta}
        try:
            entry["image_url"] = (
                url + thumbnail_file(index, image, cache).relative_to(cache).as_posix()
            )
            if layer in index.layer_names():  # the crop needs the layer's receptive field
                cell = {"member_ids": [[image, *grid]]}
                (example,) = member_examples(index, layer, cell)
                entry["crop_url"] = (
                    url + crop_file(index, layer, example, cache).relative_to(cache).as_posix()
                )
        except (OSError, WgaError) as error:  # the artwork moved away: say so, keep the rest
            entry["image_url"] = None
            entry["missing"] = str(error)
        return entry

    def get_overlay(self, request: dict[str, Any]) -> Response:
        index, layer, unit = self._unit(request)
        text = _arg(request, "image") or ""
        if not re.fullmatch(r"\d{1,9}", text):
            raise InvalidInput(
                f"give the image id as ?image=N (from the unit's examples), not {text!r}"
            )
        image_id = int(text)
        if image_id >= len(index.images()):
            raise NotFound(f"probe {index.name!r} has no image {image_id}")
        cache, url = self._cache(index)
        target = cache / overlay_name(layer, unit, image_id)
        if target.exists():
            return Response(
                200, {"status": "done", "url": url + target.relative_to(cache).as_posix()}
            )
        future = self._pending.get(target)
        if future is not None and future.done():
            self._pending.pop(target, None)
            error = future.exception()
            if error is not None:
                if isinstance(error, WgaError):
                    raise error
                raise InvalidInput(
                    f"the overlay could not be made: {type(error).__name__}: {error}"
                )
            path = future.result()
            return Response(
                200, {"status": "done", "url": url + path.relative_to(cache).as_posix()}
            )
        if future is None:
            model = self._model_name(index)
            loader = self.loader
            if loader is None:
                raise InvalidInput("this backend has no model loader: overlays are unavailable")

            def make() -> Path:
                loaded = loader.get(model, wait_s=600)
                return overlay_file(loaded, index, layer, unit, image_id, cache)

            self._pending[target] = self._overlays.submit(make)
        return Response(202, {"status": "pending", "url": None}, {"Retry-After": "1"})

    def _model_name(self, index: ProbeIndex) -> str:
        d = index.description
        if self.loader is not None and d["model"] in self.loader.registry.names():
            return str(d["model"])
        reference = d.get("model_ref")
        if reference and Path(reference).exists():
            return str(reference)
        raise NotFound(
            f"the model of probe {index.name!r} ({d['model']!r}) is not in the registry here: "
            "put its run under $WGA_RUNS_DIR"
        )
