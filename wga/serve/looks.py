"""The artwork-view endpoints: what the model sees in an artwork of a probe, or in an upload.

* ``GET /api/probes/:probe/images/:id[?layers=L1,L2&top=8&groups=6&sort=value|percentile]`` →
  the artwork view (``look --json``'s document, :mod:`wga.corpus.look`) with the unit and group
  maps, ``image_url`` (the artwork), each unit's ``overlay_url`` and the catalog fields. It needs
  a forward pass and a factorisation, so it is made in a background thread: 202
  ``{"status": "pending"}`` (``Retry-After``) until ready, then 200 with the view; views are kept
  for the next request.
* ``GET /api/probes/:probe/images/:id/similar[?layer=&by=content|style&k=12]`` → ``{"layer",
  "by", "results": [{"file", "score", "id", "image_url", author, title, …}]}`` (exact, from the
  index: fast).
* ``POST /api/looks`` (the image's bytes, ``image/jpeg|png|webp``, ≤ 20 MB; checked and stored by
  :mod:`wga.serve.uploads`) → 201 ``{"id", "url"}`` (200 when the same bytes came before).
* ``GET /api/looks/:id?probe=NAME[&layers=…&top=…&groups=…&sort=…]`` → the artwork view of the
  upload against the probe's corpus (percentiles among its artworks), with ``similar``: per layer
  the most similar artworks by content (and by style where the probe stored style statistics).
  202 while it is made, as above.

Group icons are not rendered here: each group carries its icon's render ``recipe`` (the direction
objective on the group's channel vector, stored in the service's vector store), which the page
sends to ``POST /api/renders/batch`` — the queue answers at once for icons already rendered.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wga.errors import InvalidInput, NotFound, WgaError, closest_names
from wga.paths import LOOKS_FOLDER
from wga.serve.http import Response, json_body, query, query_int
from wga.serve.uploads import Uploads, check_upload_id, decode_body

if TYPE_CHECKING:
    from wga.corpus.index import ProbeIndex
    from wga.models import LoadedModel
    from wga.serve.probes import ProbeService
    from wga.vis.vectors import VectorStore

log = logging.getLogger(__name__)

UPLOADS_FOLDER = "uploads"  # under the cache's looks/ folder (served at /public/looks/)
MAX_TOP, MAX_GROUPS, MAX_K = 64, 16, 100
DEFAULT_SIMILAR = 12
KEPT_VIEWS = 64  # finished views kept in memory for the next request
MODEL_WAIT_S = 600.0  # a background view waits this long for its model to load
_IMAGE_ID = re.compile(r"^\d{1,9}$")


class LookService:
    """Answers the artwork-view routes; one per backend."""

    def __init__(
        self,
        cache_dir: str | Path,
        probes: ProbeService,
        vectors: VectorStore | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.probes = probes
        self.vectors = vectors
        self.uploads = Uploads(self.cache_dir / LOOKS_FOLDER / UPLOADS_FOLDER)
        self._work = ThreadPoolExecutor(1, thread_name_prefix="wga-look")
        self._lock = threading.Lock()
        self._pending: dict[tuple[Any, ...], Future[dict[str, Any]]] = {}
        self._views: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()

    @property
    def routes(self) -> dict[str, Callable[[dict[str, Any]], Response]]:
        return {
            "GET /api/probes/:probe/images/:id": self.get_artwork,
            "GET /api/probes/:probe/images/:id/similar": self.get_similar,
            "POST /api/looks": self.create_look,
            "GET /api/looks/:id": self.get_look,
        }

    # -- requests -------------------------------------------------------------------------------
    def _image(self, request: dict[str, Any]) -> tuple[ProbeIndex, int]:
        index = self.probes.index(request["path"].get("probe"))
        text = str(request["path"].get("id"))
        if not _IMAGE_ID.match(text):
            raise InvalidInput(
                f"an artwork is named by its id in the probe (a whole number), not {text[:40]!r}"
            )
        image_id = int(text)
        if image_id >= len(index.images()):
            raise NotFound(
                f"probe {index.name!r} has no image {image_id}: ids run 0 … "
                f"{len(index.images()) - 1}"
            )
        return index, image_id

    def _options(self, request: dict[str, Any], index: ProbeIndex) -> tuple[Any, ...]:
        from wga.corpus.look import DEFAULT_GROUPS, DEFAULT_TOP, SORTS

        text = query(request, "layers")
        names = index.layer_names()
        layers = [n.strip() for n in text.split(",") if n.strip()] if text else names
        for layer in layers:
            if layer not in names:
                raise NotFound(
                    f"probe {index.name!r} did not record layer {layer[:80]!r}: "
                    f"{closest_names(layer, names)}"
                )
        sort = query(request, "sort") or "value"
        if sort not in SORTS:
            raise InvalidInput(f"sort must be one of {', '.join(SORTS)}, not {sort[:40]!r}")
        return (
            tuple(dict.fromkeys(layers)),
            query_int(request, "top", DEFAULT_TOP, 1, MAX_TOP),
            query_int(request, "groups", DEFAULT_GROUPS, 0, MAX_GROUPS),
            sort,
        )

    def _answer(self, key: tuple[Any, ...], make: Callable[[], dict[str, Any]]) -> Response:
        """The finished view of ``key``, or 202 while a background thread makes it."""
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                self._views.move_to_end(key)
                return Response(200, view)
            future = self._pending.get(key)
            if future is None:
                self._pending[key] = self._work.submit(make)
                return Response(202, {"status": "pending"}, {"Retry-After": "1"})
            if not future.done():
                return Response(202, {"status": "pending"}, {"Retry-After": "1"})
            del self._pending[key]
        error = future.exception()
        if error is not None:
            if isinstance(error, WgaError):
                raise error
            log.error("the artwork view failed", exc_info=error)
            raise InvalidInput(f"the view could not be made: {type(error).__name__}: {error}")
        view = future.result()
        with self._lock:
            self._views[key] = view
            while len(self._views) > KEPT_VIEWS:
                self._views.popitem(last=False)
        return Response(200, view)

    def _model(self, index: ProbeIndex) -> LoadedModel:
        loader = self.probes.loader
        if loader is None:
            raise InvalidInput("this backend has no model loader: artwork views are unavailable")
        loaded = loader.get(self.probes._model_name(index), wait_s=MODEL_WAIT_S)
        expected = index.description.get("model_fingerprint")
        if expected and loaded.fingerprint != expected:
            raise InvalidInput(
                f"the weights of {loaded.name!r} here are not those probe {index.name!r} was "
                "made with: probe the corpus again with this model"
            )
        return loaded

    # -- an artwork of a probe ------------------------------------------------------------------
    def get_artwork(self, request: dict[str, Any]) -> Response:
        index, image_id = self._image(request)
        options = self._options(request, index)
        key = ("probe", index.name, index.description.get("created"), image_id, options)
        return self._answer(key, lambda: self._artwork_view(index, image_id, options))

    @staticmethod
    def _for_page(view: dict[str, Any], index: ProbeIndex) -> dict[str, Any]:
        """The view with what the page needs to ask the render queue: the model's registry name
        (``render_model``), also in each icon recipe (the API takes names, never paths)."""
        name = index.description["model"]
        view["render_model"] = name
        for layer in view["layers"]:
            for group in layer["groups"]:
                if group.get("recipe"):
                    group["recipe"]["model"] = name
        return view

    def _look(self, index: ProbeIndex, picture: Any, options: tuple[Any, ...]) -> Any:
        from wga.corpus.look import look

        layers, top, groups, sort = options
        return look(
            self._model(index),
            picture,
            layers,
            index=index,
            top=top,
            groups=groups,
            sort=sort,
            vectors=self.vectors,
        )

    def _artwork_view(
        self, index: ProbeIndex, image_id: int, options: tuple[Any, ...]
    ) -> dict[str, Any]:
        from wga.corpus.look import picture_from_index

        seen = self._look(index, picture_from_index(index, image_id), options)
        view = seen.as_dict(unit_maps=True)
        view["image"].update(self.probes.with_images(index, [{"id": image_id}])[0])
        overlay = f"/api/probes/{index.name}/layers/{{}}/units/{{}}/overlay?image={image_id}"
        for layer in view["layers"]:
            for unit in layer["units"]:
                unit["overlay_url"] = overlay.format(layer["layer"], unit["unit"])
        view["similar_url"] = f"/api/probes/{index.name}/images/{image_id}/similar"
        return self._for_page(view, index)

    def get_similar(self, request: dict[str, Any]) -> Response:
        from wga.corpus.similar import BY, DEFAULT_K, similar

        index, image_id = self._image(request)
        layer = query(request, "layer") or index.layer_names()[-1]
        index.layer_index(layer)  # NotFound with the closest names
        by = query(request, "by") or "content"
        if by not in BY:
            raise InvalidInput(f"by must be one of {', '.join(BY)}, not {by[:40]!r}")
        k = query_int(request, "k", DEFAULT_K, 1, MAX_K)
        found = similar(index, layer, by=by, k=k, image=image_id)
        results = self.probes.with_images(index, [m.as_dict() for m in found])
        return Response(200, {"layer": layer, "by": by, "probe": index.name, "results": results})

    # -- uploads --------------------------------------------------------------------------------
    def create_look(self, request: dict[str, Any]) -> Response:
        data, _ = decode_body(json_body(request))
        upload, new = self.uploads.accept(data)
        url = f"/api/looks/{upload}"
        return Response(201 if new else 200, {"id": upload, "url": url}, {"Location": url})

    def _probe_for_upload(self, request: dict[str, Any]) -> ProbeIndex:
        name = query(request, "probe")
        if name is None:
            names = self.probes.names()
            if len(names) != 1:
                raise InvalidInput(
                    "say which probe's corpus to compare with: ?probe=NAME (GET /api/probes)"
                )
            name = names[0]
        return self.probes.index(name)

    def get_look(self, request: dict[str, Any]) -> Response:
        upload = check_upload_id(request["path"].get("id"))
        path = self.uploads.path(upload)  # NotFound with what to do
        index = self._probe_for_upload(request)
        options = self._options(request, index)
        key = ("upload", upload, index.name, index.description.get("created"), options)
        return self._answer(key, lambda: self._upload_view(upload, path, index, options))

    def _upload_view(
        self, upload: str, path: Path, index: ProbeIndex, options: tuple[Any, ...]
    ) -> dict[str, Any]:
        from wga.corpus.look import index_rule, picture_from
        from wga.corpus.similar import query_features, similar

        picture = picture_from(path, index_rule(index), file=f"upload {upload}")
        seen = self._look(index, picture, options)
        view = seen.as_dict(unit_maps=True)
        image_url = f"/public/{LOOKS_FOLDER}/{UPLOADS_FOLDER}/{path.name}"
        view["image"].update({"upload": upload, "file": None, "image_url": image_url})
        view["similar"] = {}
        for layer in seen.seen:
            found: dict[str, Any] = {}
            for by in ("content", "style"):
                try:
                    vector = query_features(layer, by)
                    matches = similar(index, layer.name, by=by, k=DEFAULT_SIMILAR, vector=vector)
                except (NotFound, InvalidInput) as error:  # no style statistics, a silent layer
                    found[by] = {"error": str(error), "results": []}
                    continue
                results = [m.as_dict() for m in matches]
                found[by] = {"results": self.probes.with_images(index, results)}
            view["similar"][layer.name] = found
        return self._for_page(view, index)
