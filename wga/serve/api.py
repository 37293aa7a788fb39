"""The REST API: routes and request validation in, the render queue's answers out.

Nothing here knows about the kernel gateway: the backend notebook's endpoint cells pass the
gateway's ``REQUEST`` string to :meth:`RenderService.handle` and print the body; its ResponseInfo
cells print :meth:`Response.info`. So every endpoint is unit-testable in one Python process.
The business logic lives below: :mod:`wga.serve.queue` (jobs, scheduling, cache),
:mod:`wga.serve.loading` (models in the background); the request shapes in :mod:`wga.serve.http`.

Endpoints (``DESIGN.md``'s REST contract, plus what the explorer page needs):

* ``GET /api/models`` — every model, available or not (with the reason), and the default.
* ``GET /api/models/:model/layers`` — visualisable layers: name, units, kind (class names for a
  class layer when known).
* ``GET /api/presets`` — render presets and the allowed sizes, steps, seeds and priorities.
* ``POST /api/renders`` — one render; 202 when queued, 200 when the cache already has it.
* ``POST /api/renders/batch`` — many units of one layer at once (a grid of previews): rendered in
  shared batches, far cheaper than one request per unit.
* ``GET /api/renders?model=&layer=&limit=`` — past renders, newest first.
* ``DELETE /api/renders?model=&layer=`` — this client's live renders of a model (and layer) are
  given up: cancelled unless another client still wants them.
* ``GET /api/renders/:id`` — status, progress, URL of the PNG (snapshots while running) and
  ``status_url``, the same JSON as a static file (poll that: no kernel round-trip).
* ``DELETE /api/renders/:id`` — cancel a queued or running render.
* ``GET /api/status`` — queue depth, running jobs, worker health, cache bytes and cap; its
  ``status_url`` is the same as a static file.

Every error is ``{"error": "<what is wrong and what to do>"}`` with a 4xx/5xx status; a full
queue or a model that is still loading answers 503, a client with too many renders in flight 429,
both with ``Retry-After``. Endpoints return in milliseconds: rendering happens in the queue's
worker threads, model loading in a loader thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wga
from wga import paths
from wga.errors import InvalidInput, NotFound, WgaError
from wga.models import ModelRegistry
from wga.serve.atlases import AtlasService
from wga.serve.cache import parse_size
from wga.serve.http import (
    Response,
    client_key,
    error_response,
    json_body,
    parse_request,
    query,
    query_int,
)
from wga.serve.http import integer as _integer
from wga.serve.http import prefixed as _prefixed
from wga.serve.http import reject_unknown as _reject_unknown
from wga.serve.journal import JOURNAL_FOLDER
from wga.serve.loading import ModelLoader
from wga.serve.looks import LookService
from wga.serve.probes import ProbeService
from wga.serve.queue import RenderQueue
from wga.vis.estimate import layer_estimates
from wga.vis.recipe import DEFAULT_SIZE, REQUEST_FIELDS, check_recipes, recipes_from_request
from wga.vis.store import check_id
from wga.vis.vectors import VectorStore, check_direction

__all__ = ["MAX_PRIORITY", "ModelLoader", "RenderService", "Response", "build_service"]

log = logging.getLogger(__name__)

RENDER_FIELDS = REQUEST_FIELDS
BATCH_FIELDS = tuple("units" if name == "unit" else name for name in REQUEST_FIELDS)
MIN_PRIORITY, MAX_PRIORITY = -100, 100
MAX_BATCH_UNITS = 1024  # one batch request; the queue still renders them max_batch at a time
DEFAULT_LISTING, MAX_LISTING = 50, 1000  # GET /api/renders?limit=


class RenderService:
    """The backend behind the REST API: a model registry, a model loader and a render queue."""

    def __init__(
        self,
        registry: ModelRegistry,
        queue: RenderQueue,
        loader: ModelLoader | None = None,
        vectors: VectorStore | None = None,
    ) -> None:
        self.registry = registry
        self.queue = queue
        self.loader = loader or ModelLoader(registry)
        self.vectors = vectors or VectorStore()  # where the queue's renders find directions
        queue.status_extra = self._status_extra  # the status file carries them too
        self.routes: dict[str, Callable[[dict[str, Any]], Response]] = {
            "GET /api/models": self.list_models,
            "GET /api/models/:model/layers": self.list_layers,
            "GET /api/presets": self.list_presets,
            "POST /api/renders": self.create_render,
            "POST /api/renders/batch": self.create_batch,
            "GET /api/renders": self.list_renders,
            "DELETE /api/renders": self.cancel_renders,
            "GET /api/renders/:id": self.get_render,
            "DELETE /api/renders/:id": self.cancel_render,
            "GET /api/status": self.status,
        }

    # -- dispatch -------------------------------------------------------------------------------
    def handle(self, route: str, request: str | dict | None = None) -> Response:
        """Answer ``route`` (e.g. ``"GET /api/renders/:id"``); never raises."""
        try:
            endpoint = self.routes.get(route)
            if endpoint is None:
                raise NotFound(f"no endpoint {route}: the API has {', '.join(self.routes)}")
            return endpoint(parse_request(request))
        except WgaError as error:
            return error_response(error)
        except Exception as error:  # a bug: answer 500 with JSON, log the traceback
            log.exception("internal error in %s", route)
            return Response(
                500,
                {"error": f"internal error ({type(error).__name__}: {error}); see the server log"},
            )

    # -- models ---------------------------------------------------------------------------------
    def list_models(self, request: dict[str, Any]) -> Response:
        models = self.registry.listing()
        default = next(model["name"] for model in models if model["default"])
        return Response(200, {"models": models, "default": default})

    def list_layers(self, request: dict[str, Any]) -> Response:
        name = self.loader.registry_name(request["path"].get("model"))
        loaded = self.loader.available(name)
        layers = []
        for info in loaded.layers():
            entry = info.as_dict()
            names = loaded.class_names
            if info.kind == "class" and names and len(names) == info.units:
                entry["classes"] = list(names)
            seconds = layer_estimates(name, info.name, self.queue.clock)  # None before a step
            if seconds is not None:
                entry["seconds"] = seconds
            layers.append(entry)
        return Response(
            200,
            {
                "model": name,
                "title": loaded.spec.title,
                "fingerprint": loaded.fingerprint,
                "layers": layers,
            },
        )

    def list_presets(self, request: dict[str, Any]) -> Response:
        from wga.vis.objective_table import AUTO, OBJECTIVES
        from wga.vis.presets import DEFAULT_PRESET, PRESETS
        from wga.vis.recipe import MAX_SEED, MAX_SIZE, MAX_STEPS, MIN_SIZE

        return Response(
            200,
            {
                "presets": [
                    {
                        "name": preset.name,
                        "description": preset.description,
                        "default_steps": preset.default_steps,
                        "default": preset.name == DEFAULT_PRESET,
                    }
                    for preset in PRESETS.values()
                ],
                "default": DEFAULT_PRESET,
                "size": {"min": MIN_SIZE, "max": MAX_SIZE, "default": DEFAULT_SIZE},
                "steps": {"min": 1, "max": MAX_STEPS},
                "seed": {"min": 0, "max": MAX_SEED},
                "priority": {"min": MIN_PRIORITY, "max": MAX_PRIORITY, "default": 0},
                "max_batch_units": MAX_BATCH_UNITS,
                "objectives": [
                    {"name": AUTO, "description": "channel for feature maps, logit for Dense"},
                    *(spec.as_dict() for spec in OBJECTIVES.values()),
                ],
            },
        )

    # -- renders --------------------------------------------------------------------------------
    def _recipes(self, fields: dict[str, Any], unit: int | None) -> tuple[list[Any], str]:
        """Validated recipes (``unit``, or the request's own) and the weights' fingerprint."""
        units = None if unit is None else [unit]
        if isinstance(fields.get("vector"), list):  # a direction sent inline: stored by its hash
            fields = {**fields, "vector": self.vectors.put(fields["vector"])}
        recipes = recipes_from_request(fields, units)  # 400 for any bad value, before loading
        model = self.loader.registry_name(recipes[0].model)  # a registry name, never a path
        loaded = self.loader.available(model)
        check_recipes(recipes, loaded)  # layer, unit range and objective against the model
        for recipe in recipes:
            if recipe.vector is not None:
                check_direction(self.vectors, recipe.vector, loaded.layer(recipe.layer).units)
        return recipes, loaded.fingerprint

    def _priority(self, body: dict[str, Any]) -> int:
        return _integer(body, "priority", 0, MIN_PRIORITY, MAX_PRIORITY)

    def create_render(self, request: dict[str, Any]) -> Response:
        body = json_body(request)
        _reject_unknown(body, (*RENDER_FIELDS, "priority"))
        recipes, fingerprint = self._recipes(body, None)
        client = client_key(request)
        view = self.queue.submit(recipes[0], fingerprint, self._priority(body), client)
        status = 200 if view["status"] == "done" else 202
        return Response(status, view, {"Location": f"/api/renders/{view['id']}"})

    def create_batch(self, request: dict[str, Any]) -> Response:
        """Many renders in one request, queued all or none (see :func:`_batch_items`)."""
        body = json_body(request)
        items = _batch_items(body)
        if len(items) > MAX_BATCH_UNITS:
            raise InvalidInput(f"at most {MAX_BATCH_UNITS} renders per request, got {len(items)}")
        recipes, fingerprints, priorities = [], [], []
        for index, (fields, unit) in enumerate(items):
            with _prefixed(f"renders[{index}]" if "renders" in body else ""):
                (recipe,), fingerprint = self._recipes(fields, unit)
                priorities.append(self._priority(fields))
            recipes.append(recipe)
            fingerprints.append(fingerprint)
        client = client_key(request)
        views = self.queue.submit_many(recipes, fingerprints, priorities, client)
        renders = [
            {**view, "unit": recipe.unit} for view, recipe in zip(views, recipes, strict=True)
        ]
        status = 200 if all(view["status"] == "done" for view in renders) else 202
        return Response(status, {"renders": renders})

    def _filters(self, request: dict[str, Any]) -> tuple[str | None, str | None]:
        model, layer = query(request, "model"), query(request, "layer")
        if model is not None:
            self.loader.registry_name(model)
        if layer is not None and len(layer) > 200:
            raise InvalidInput("layer must be a layer name (at most 200 characters)")
        return model, layer

    def list_renders(self, request: dict[str, Any]) -> Response:
        model, layer = self._filters(request)
        limit = query_int(request, "limit", DEFAULT_LISTING, 1, MAX_LISTING)
        return Response(200, {"renders": self.queue.listing(model, layer, limit)})

    def cancel_renders(self, request: dict[str, Any]) -> Response:
        """Give up this client's live renders: ``{"ids": [...]}`` in the body and/or
        ``?model=&layer=`` (cancelled unless another client still wants them)."""
        model, layer = self._filters(request)
        ids = None
        if request.get("body") not in (None, "", {}):
            body = json_body(request)
            _reject_unknown(body, ("ids",))
            ids = body.get("ids")
            if not isinstance(ids, list) or len(ids) > MAX_BATCH_UNITS:
                raise InvalidInput(f"ids must be a list of at most {MAX_BATCH_UNITS} render ids")
            ids = [check_id(render) for render in ids]
        if model is None and ids is None:
            raise InvalidInput(
                "say which renders to give up: DELETE /api/renders?model=NAME[&layer=LAYER] or "
                'a body {"ids": [...]} (DELETE /api/renders/:id cancels one)'
            )
        result = self.queue.cancel_matching(model, layer, client_key(request), ids)
        return Response(200, result)

    def get_render(self, request: dict[str, Any]) -> Response:
        return Response(200, self.queue.get(request["path"].get("id", "")))

    def cancel_render(self, request: dict[str, Any]) -> Response:
        return Response(200, self.queue.cancel(request["path"].get("id", "")))

    def _status_extra(self) -> dict[str, Any]:
        from wga.vis.backends import backend_name

        return {
            "models_loaded": self.loader.loaded(),
            "version": wga.__version__,
            "backend": backend_name(),
        }

    def status(self, request: dict[str, Any]) -> Response:
        return Response(200, {**self.queue.status(), **self._status_extra()})


def _batch_items(body: dict[str, Any]) -> list[tuple[dict[str, Any], int | None]]:
    """The (recipe fields, unit) pairs of a batch request (``None``: the item's own ``unit``),
    in one of two forms:

    ``{"renders": [{recipe as for POST /api/renders}, …]}`` (any mix of recipes), or
    ``{"model", "layer", "units": [0, 1, …], "size", …}`` (a grid of one layer's units).
    """
    if "renders" not in body:
        _reject_unknown(body, (*BATCH_FIELDS, "priority", "renders"))
        units = body.get("units")
        if (
            not isinstance(units, list)
            or not units
            or any(isinstance(u, bool) or not isinstance(u, int) for u in units)
        ):
            shown = str(units)[:80]
            raise InvalidInput(
                "send either renders (a list of render requests) or units (a non-empty "
                f"list of integers) with model, layer and size; got units={shown}"
            )
        return [(body, unit) for unit in units]
    _reject_unknown(body, ("renders",))
    renders = body["renders"]
    if not isinstance(renders, list) or not renders:
        raise InvalidInput("renders must be a non-empty list of render requests")
    items = []
    for index, item in enumerate(renders):
        if not isinstance(item, dict):
            raise InvalidInput(f"renders[{index}] must be a JSON object")
        with _prefixed(f"renders[{index}]"):
            _reject_unknown(item, (*RENDER_FIELDS, "priority"))
        items.append((item, None))
    return items


def build_service(
    cache_dir: str | os.PathLike[str],
    runs_dir: str | os.PathLike[str] | None = None,
    *,
    preload: bool = True,
    **queue_options: Any,
) -> RenderService:
    """The whole backend: registry, render queue over ``cache_dir/renders``, started."""
    registry = ModelRegistry(runs_dir)
    queue_options.setdefault("journal", Path(cache_dir) / JOURNAL_FOLDER)  # accepted = kept
    queue = RenderQueue(Path(cache_dir) / paths.RENDERS_FOLDER, registry.load, **queue_options)
    service = RenderService(registry, queue.start())
    probes = ProbeService(cache_dir, service.loader)
    service.routes.update(probes.routes)  # wga.serve.probes
    atlases = AtlasService(queue, service.loader, service.vectors, probes=probes)
    service.routes.update(atlases.routes)  # wga.serve.atlases
    service.routes.update(LookService(cache_dir, probes, service.vectors).routes)  # serve.looks
    if preload:  # the default model is ready by the time the page asks for its layers
        service.loader.start(registry.default_name())
    return service


def service_from_env() -> RenderService:
    """:func:`build_service` configured by the launcher's environment (``WGA_*`` variables).

    ``$WGA_JOURNAL_SYNC``: seconds between the job journal's syncs to disk (default 1; ``0``:
    every write; ``off``: no journal, a crash forgets the queue).
    ``$WGA_RENDER_NICE=N`` (opt-in) lowers the kernel's CPU priority first (its render threads
    inherit it), so that the gateway process serving the page and the polls answers first while a
    render runs. Not the default: on a machine busy with other work a niced kernel starves (its
    start-up alone took minutes on a 2-core machine running 10 other processes).
    """
    nice = os.environ.get("WGA_RENDER_NICE", "")
    if nice.strip().isdigit() and int(nice):
        with contextlib.suppress(OSError):
            os.nice(int(nice))
    options: dict[str, Any] = {}
    for variable, option, kind in (
        ("WGA_MAX_PENDING", "max_pending", int),
        ("WGA_MAX_PER_CLIENT", "max_per_client", int),
        ("WGA_MAX_BATCH", "max_batch", int),
        ("WGA_SNAPSHOT_INTERVAL", "snapshot_interval_s", float),
        ("WGA_CHECKPOINT_INTERVAL", "checkpoint_interval_s", float),
        ("WGA_CACHE_MAX", "cache_max", parse_size),
        ("WGA_CACHE_GRACE", "grace_s", float),
    ):
        if os.environ.get(variable):
            options[option] = kind(os.environ[variable])
    sync = os.environ.get("WGA_JOURNAL_SYNC", "").strip().lower()  # seconds between fsyncs
    if sync in ("off", "none"):  # no journal: a crash forgets the queue (benchmarks compare)
        options["journal"] = None
    elif sync:
        options["journal_sync_s"] = float(sync)
    return build_service(paths.cache_dir(), paths.runs_dir(), **options)
