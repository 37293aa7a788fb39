"""The REST API as plain functions: a request in, ``(status, JSON body, headers)`` out.

Nothing here knows about the kernel gateway: the backend notebook's endpoint cells pass the
gateway's ``REQUEST`` string to :meth:`RenderService.handle` and print the body; its ResponseInfo
cells print :meth:`Response.info`. So every endpoint is unit-testable in one Python process.

Endpoints (``DESIGN.md``'s REST contract, plus what the explorer page needs):

* ``GET /api/models`` — every model, available or not (with the reason), and the default.
* ``GET /api/models/:model/layers`` — visualisable layers: name, units, kind (class names for a
  class layer when known).
* ``GET /api/presets`` — render presets and the allowed sizes, steps, seeds and priorities.
* ``POST /api/renders`` — one render; 202 when queued, 200 when the cache already has it.
* ``POST /api/renders/batch`` — many units of one layer at once (a grid of previews): rendered in
  shared batches, far cheaper than one request per unit.
* ``GET /api/renders/:id`` — status, progress, URL of the PNG (snapshots while running).
* ``DELETE /api/renders/:id`` — cancel a queued or running render.
* ``GET /api/status`` — queue depth, running jobs, worker health, cache entries.

Every error is ``{"error": "<what is wrong and what to do>"}`` with a 4xx/5xx status; a full
queue or a model that is still loading answers 503 with ``Retry-After``. Endpoints return in
milliseconds: rendering happens in the queue's worker threads, model loading in a loader thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import wga
from wga.errors import InvalidInput, NotFound, Unavailable, WgaError, closest_names

if TYPE_CHECKING:
    from wga.models import LoadedModel, ModelRegistry
    from wga.serve.queue import RenderQueue

log = logging.getLogger(__name__)

RENDERS_URL = "/public/renders/"  # where the gateway serves static/renders/
RENDER_FIELDS = ("model", "layer", "unit", "size", "preset", "steps", "seed", "objective")
BATCH_FIELDS = ("model", "layer", "units", "size", "preset", "steps", "seed", "objective")
MIN_PRIORITY, MAX_PRIORITY = -100, 100
MAX_BATCH_UNITS = 1024  # one batch request; the queue still renders them max_batch at a time
DEFAULT_SIZE = 224
MODEL_LOAD_WAIT_S = 20.0  # an endpoint waits this long for a loading model, then answers 503
LOAD_FAILURE_TTL_S = 30.0  # a failed load is reported, not retried, for this long


@dataclass
class Response:
    """What an endpoint answers: the notebook prints :meth:`body_json` and :meth:`info`."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def body_json(self) -> str:
        return json.dumps(self.body, default=str)

    def info(self) -> str:
        """The ResponseInfo cell's output: ``{"status": N, "headers": {...}}``."""
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Cache-Control": "no-store",
            **self.headers,
        }
        return json.dumps({"status": self.status, "headers": headers})


class ModelLoader:
    """Loads models in a background thread so that an endpoint never blocks for long.

    The first request for a model starts its load and waits up to ``wait_s``; if it is still
    loading (e.g. downloading ImageNet weights), the request gets a 503 with Retry-After. A failed
    load is remembered for ``failure_ttl_s`` so that repeated requests answer at once.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        wait_s: float = MODEL_LOAD_WAIT_S,
        failure_ttl_s: float = LOAD_FAILURE_TTL_S,
    ) -> None:
        self.registry = registry
        self.wait_s = wait_s
        self.failure_ttl_s = failure_ttl_s
        self._futures: dict[str, tuple[Future[LoadedModel], float]] = {}
        self._lock = threading.Lock()

    def start(self, name: str) -> Future[LoadedModel]:
        with self._lock:
            entry = self._futures.get(name)
            if entry is not None:
                future, started = entry
                failed = future.done() and future.exception() is not None
                if not failed or time.monotonic() - started < self.failure_ttl_s:
                    return future
            future = Future()
            self._futures[name] = (future, time.monotonic())

        def load() -> None:
            try:
                future.set_result(self.registry.load(name))
            except BaseException as error:  # reported to every waiting request
                future.set_exception(error)

        threading.Thread(target=load, name=f"wga-load-{name}", daemon=True).start()
        return future

    def get(self, name: str, wait_s: float | None = None) -> LoadedModel:
        future = self.start(name)
        try:
            return future.result(timeout=self.wait_s if wait_s is None else wait_s)
        except FutureTimeout:
            raise Unavailable(
                f"model {name!r} is still loading (its weights may be downloading); "
                "retry in a few seconds",
                retry_after=5,
            ) from None
        except WgaError:
            raise
        except Exception as error:
            raise Unavailable(
                f"model {name!r} could not be loaded ({type(error).__name__}: {error})"
            ) from error

    def loaded(self) -> list[str]:
        with self._lock:
            return [
                name
                for name, (future, _) in self._futures.items()
                if future.done() and future.exception() is None
            ]


def parse_request(request: str | dict | None) -> dict[str, Any]:
    """The gateway's ``REQUEST`` (a JSON string) as a dict with body, args, path, headers."""
    if request is None:
        return {"body": {}, "args": {}, "path": {}, "headers": {}}
    if isinstance(request, str):
        request = json.loads(request)
    return {
        "body": request.get("body", ""),
        "args": request.get("args") or {},
        "path": request.get("path") or {},
        "headers": request.get("headers") or {},
    }


def json_body(request: dict[str, Any]) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says how to send one."""
    body = request.get("body")
    if isinstance(body, str):
        if not body.strip():
            raise InvalidInput(
                'the request has no body: send a JSON object, e.g. {"model": "vgg16-hed", '
                '"layer": "block4_conv1", "unit": 7, "size": 224}'
            )
        try:
            body = json.loads(body)
        except json.JSONDecodeError as error:
            raise InvalidInput(
                f"the request body is not valid JSON ({error.msg} at line {error.lineno} "
                f"column {error.colno}); send a JSON object with Content-Type: application/json"
            ) from None
    if not isinstance(body, dict):
        raise InvalidInput(
            f"the request body must be a JSON object, not {type(body).__name__}: "
            'e.g. {"model": "vgg16-hed", "layer": "block4_conv1", "unit": 7, "size": 224}'
        )
    return body


def _integer(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> Any:
    value = body.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(
            f"{name} must be an integer from {low} to {high}, got {json.dumps(value)} "
            f"({type(value).__name__})"
        )
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be from {low} to {high}, got {value}")
    return value


def _string(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if value is None:
        raise InvalidInput(f"missing field {name!r}: it is required")
    if not isinstance(value, str) or not value:
        raise InvalidInput(
            f"{name} must be a non-empty string, got {json.dumps(value)} ({type(value).__name__})"
        )
    return value


def _reject_unknown(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(map(repr, unknown))}: "
            f"the allowed fields are {', '.join(allowed)}"
        )


class RenderService:
    """The backend behind the REST API: a model registry, a model loader and a render queue."""

    def __init__(
        self,
        registry: ModelRegistry,
        queue: RenderQueue,
        loader: ModelLoader | None = None,
        renders_url: str = RENDERS_URL,
    ) -> None:
        self.registry = registry
        self.queue = queue
        self.loader = loader or ModelLoader(registry)
        self.renders_url = renders_url
        self.routes: dict[str, Callable[[dict[str, Any]], Response]] = {
            "GET /api/models": self.list_models,
            "GET /api/models/:model/layers": self.list_layers,
            "GET /api/presets": self.list_presets,
            "POST /api/renders": self.create_render,
            "POST /api/renders/batch": self.create_batch,
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
    def _model_name(self, name: Any) -> str:
        """A registry name (never a path: the web must not open files by name)."""
        names = self.registry.names()
        if not isinstance(name, str) or name not in names:
            raise NotFound(
                f"unknown model {name!r}: {closest_names(str(name), names)} (GET /api/models)"
            )
        return name

    def list_models(self, request: dict[str, Any]) -> Response:
        default = self.registry.default_name()
        models = []
        for spec in self.registry.specs():
            availability = self.registry.availability(spec.name)
            models.append(
                {
                    "name": spec.name,
                    "title": spec.title,
                    "available": availability.available,
                    "reason": availability.reason,
                    "default": spec.name == default,
                    "description": spec.description,
                    "input_size": spec.input_size,
                }
            )
        return Response(200, {"models": models, "default": default})

    def _loaded(self, name: str) -> LoadedModel:
        availability = self.registry.availability(name)
        if not availability.available:
            raise Unavailable(f"model {name!r} is not available: {availability.reason}")
        return self.loader.get(name)

    def list_layers(self, request: dict[str, Any]) -> Response:
        name = self._model_name(request["path"].get("model"))
        loaded = self._loaded(name)
        layers = []
        for info in loaded.layers():
            entry = info.as_dict()
            names = loaded.class_names
            if info.kind == "class" and names and len(names) == info.units:
                entry["classes"] = list(names)
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
    def _recipes(self, body: dict[str, Any], units: list[int]) -> tuple[list[Any], str]:
        """Validated recipes for ``units`` of one layer, and the model's weights fingerprint."""
        from wga.vis.presets import DEFAULT_PRESET, PRESETS
        from wga.vis.recipe import MAX_SEED, MAX_SIZE, MAX_STEPS, MIN_SIZE, Recipe

        model = self._model_name(_string(body, "model"))
        layer = _string(body, "layer")
        size = _integer(body, "size", DEFAULT_SIZE, MIN_SIZE, MAX_SIZE)
        preset = _string(body, "preset", DEFAULT_PRESET)
        if preset not in PRESETS:
            raise InvalidInput(f"unknown preset {preset!r}: {closest_names(preset, list(PRESETS))}")
        steps = _integer(body, "steps", None, 1, MAX_STEPS)
        seed = _integer(body, "seed", 0, 0, MAX_SEED)
        objective = _string(body, "objective", "auto")
        loaded = self._loaded(model)
        info = loaded.layer(layer)  # NotFound with suggestions
        recipes = []
        for unit in units:
            if not 0 <= unit < info.units:
                raise InvalidInput(
                    f"unit {unit} is out of range for layer {layer!r} of {model!r}: "
                    f"it has units 0 … {info.units - 1}"
                )
            recipe = Recipe(model, layer, unit, size, preset, steps, seed, objective)
            recipes.append(recipe)
        recipes[0].check(loaded)  # the objective fits the layer (all share layer and objective)
        return recipes, loaded.fingerprint

    def _view(self, view: dict[str, Any]) -> dict[str, Any]:
        out = dict(view)
        # One URL for snapshots and the final image; the server sends Cache-Control: no-cache.
        out["url"] = f"{self.renders_url}{view['id']}.png"
        return out

    def _priority(self, body: dict[str, Any]) -> int:
        return _integer(body, "priority", 0, MIN_PRIORITY, MAX_PRIORITY)

    def create_render(self, request: dict[str, Any]) -> Response:
        body = json_body(request)
        _reject_unknown(body, (*RENDER_FIELDS, "priority"))
        unit = _integer(body, "unit", None, 0, 1 << 30)
        if unit is None:
            raise InvalidInput("missing field 'unit': it is required (an integer ≥ 0)")
        recipes, fingerprint = self._recipes(body, [unit])
        view = self._view(self.queue.submit(recipes[0], fingerprint, self._priority(body)))
        status = 200 if view["status"] == "done" else 202
        return Response(status, view, {"Location": f"/api/renders/{view['id']}"})

    def create_batch(self, request: dict[str, Any]) -> Response:
        """Many renders in one request, queued all or none. Two forms:

        ``{"renders": [{recipe as for POST /api/renders}, …]}`` (any mix of recipes), or
        ``{"model", "layer", "units": [0, 1, …], "size", …}`` (a grid of one layer's units).
        """
        body = json_body(request)
        items: list[tuple[dict[str, Any], int]] = []  # (recipe fields, unit)
        if "renders" in body:
            _reject_unknown(body, ("renders",))
            renders = body["renders"]
            if not isinstance(renders, list) or not renders:
                raise InvalidInput("renders must be a non-empty list of render requests")
            for index, item in enumerate(renders):
                if not isinstance(item, dict):
                    raise InvalidInput(f"renders[{index}] must be a JSON object")
                with _prefixed(f"renders[{index}]"):
                    _reject_unknown(item, (*RENDER_FIELDS, "priority"))
                    unit = _integer(item, "unit", None, 0, 1 << 30)
                    if unit is None:
                        raise InvalidInput("missing field 'unit': it is required")
                items.append((item, unit))
        else:
            _reject_unknown(body, (*BATCH_FIELDS, "priority", "renders"))
            units = body.get("units")
            if (
                not isinstance(units, list)
                or not units
                or any(isinstance(u, bool) or not isinstance(u, int) for u in units)
            ):
                raise InvalidInput(
                    "send either renders (a list of render requests) or units (a non-empty "
                    f"list of integers) with model, layer and size; got units={json.dumps(units)}"
                )
            items = [(body, unit) for unit in units]
        if len(items) > MAX_BATCH_UNITS:
            raise InvalidInput(f"at most {MAX_BATCH_UNITS} renders per request, got {len(items)}")
        recipes, fingerprints, priorities = [], [], []
        for index, (fields, unit) in enumerate(items):
            with _prefixed(f"renders[{index}]" if "renders" in body else ""):
                (recipe,), fingerprint = self._recipes(fields, [unit])
                priorities.append(self._priority(fields))
            recipes.append(recipe)
            fingerprints.append(fingerprint)
        views = self.queue.submit_many(recipes, fingerprints, priorities)
        renders = [
            {**self._view(view), "unit": recipe.unit}
            for view, recipe in zip(views, recipes, strict=True)
        ]
        status = 200 if all(view["status"] == "done" for view in renders) else 202
        return Response(status, {"renders": renders})

    def get_render(self, request: dict[str, Any]) -> Response:
        return Response(200, self._view(self.queue.get(request["path"].get("id", ""))))

    def cancel_render(self, request: dict[str, Any]) -> Response:
        return Response(200, self._view(self.queue.cancel(request["path"].get("id", ""))))

    def status(self, request: dict[str, Any]) -> Response:
        status = self.queue.status()
        status["models_loaded"] = self.loader.loaded()
        status["version"] = wga.__version__
        return Response(200, status)


@contextlib.contextmanager
def _prefixed(prefix: str) -> Iterator[None]:
    """Errors raised inside name the batch item they are about."""
    try:
        yield
    except WgaError as error:
        if prefix:
            error.args = (f"{prefix}: {error}", *error.args[1:])
        raise


def error_response(error: WgaError) -> Response:
    headers: dict[str, str] = {}
    body: dict[str, Any] = {"error": str(error)}
    retry_after = getattr(error, "retry_after", None)
    if error.http_status == 503:
        seconds = max(1, round(retry_after or 5))
        headers["Retry-After"] = str(seconds)
        body["retry_after"] = seconds
    return Response(error.http_status, body, headers)


def build_service(
    static_dir: str | os.PathLike[str],
    runs_dir: str | os.PathLike[str] | None = None,
    *,
    preload: bool = True,
    **queue_options: Any,
) -> RenderService:
    """The whole backend: registry, render queue over ``static_dir/renders``, started."""
    from wga.models import ModelRegistry
    from wga.serve.queue import RenderQueue

    registry = ModelRegistry(runs_dir)
    queue = RenderQueue(Path(static_dir) / "renders", registry.load, **queue_options).start()
    service = RenderService(registry, queue)
    if preload:  # the default model is ready by the time the page asks for its layers
        service.loader.start(registry.default_name())
    return service


def service_from_env() -> RenderService:
    """:func:`build_service` configured by the launcher's environment (``WGA_*`` variables)."""
    options: dict[str, Any] = {}
    for variable, option, kind in (
        ("WGA_MAX_PENDING", "max_pending", int),
        ("WGA_MAX_BATCH", "max_batch", int),
        ("WGA_SNAPSHOT_INTERVAL", "snapshot_interval_s", float),
    ):
        if os.environ.get(variable):
            options[option] = kind(os.environ[variable])
    from wga.serve.gateway import STATIC_DIR

    static = os.environ.get("WGA_STATIC_DIR") or STATIC_DIR
    return build_service(static, os.environ.get("WGA_RUNS_DIR", "runs"), **options)
