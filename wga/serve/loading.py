"""Models load in a background thread, so that an endpoint never blocks for long.

Loading InceptionV3 takes seconds, downloading its ImageNet weights minutes; the kernel gateway
serves one request at a time, so an endpoint that waited for it would stall every client.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from wga.errors import NotFound, Unavailable, WgaError, closest_names

if TYPE_CHECKING:
    from wga.models import LoadedModel, ModelRegistry

MODEL_LOAD_WAIT_S = 20.0  # an endpoint waits this long for a loading model, then answers 503
LOAD_FAILURE_TTL_S = 30.0  # a failed load is reported, not retried, for this long


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

    def registry_name(self, name: Any) -> str:
        """``name`` if the registry has it (never a path: the web must not open files by name)."""
        names = self.registry.names()
        if not isinstance(name, str) or name not in names:
            raise NotFound(
                f"unknown model {name!r}: {closest_names(str(name), names)} (GET /api/models)"
            )
        return name

    def available(self, name: str) -> LoadedModel:
        """The registry model ``name``, loaded: 503 when it cannot be (no weights here) or is
        still loading."""
        availability = self.registry.availability(name)
        if not availability.available:
            raise Unavailable(f"model {name!r} is not available: {availability.reason}")
        return self.get(name)

    def loaded(self) -> list[str]:
        with self._lock:
            return [
                name
                for name, (future, _) in self._futures.items()
                if future.done() and future.exception() is None
            ]
