"""What Keras does not abstract — the gradient of one render step and its compilation — once per
backend: :mod:`~wga.vis.backends.tensorflow` (``GradientTape`` + ``tf.function``),
:mod:`~wga.vis.backends.jax` (``jax.value_and_grad`` + ``jax.jit``, the model's variables passed
statelessly, batch sizes bucketed) and :mod:`~wga.vis.backends.torch` (autograd). Everything else
of the engine is written on ``keras.ops`` and runs unchanged on each.

Every backend module offers the same three things:

* ``compile_step(forward, update, variables, *, couples_batch=False)`` → ``step(params, state,
  inputs) -> (params, state, scores)``: one ascent step of a batch. ``forward(params, inputs) ->
  (total, scores)`` is the objective (``keras.ops``, reads the model), ``update(params, gradient,
  state) -> (params, state)`` the optimiser's; ``inputs`` a dict of per-element arrays (first
  axis: the batch, any size);
* ``compile_function(function)``: a forward-only function compiled for any batch size;
* ``affine_resample`` (or ``None``): a faster, numerically identical stand-in for
  :func:`wga.vis.transform.affine_resample` where the backend has one.

The backend is Keras's own choice (``KERAS_BACKEND``, default ``tensorflow``);
:func:`backend_name` reads it without importing Keras, so front ends and recipes record it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

# The contract of ``compile_step`` (module docstring), named once for the three backends.
Forward = Callable[[Any, dict[str, Any]], tuple[Any, Any]]  # (params, inputs) → (total, scores)
Update = Callable[
    [Any, Any, tuple], tuple[Any, tuple]
]  # (params, gradient, state) → (params, state)
Step = Callable[[Any, tuple, dict[str, Any]], tuple[Any, tuple, Any]]  # → (params, state, scores)

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT_BACKEND = "tensorflow"


def backend_name() -> str:
    """The Keras backend this process runs (or will run, once Keras is imported): Keras's own
    answer when it is loaded, else ``KERAS_BACKEND``, else ``~/.keras/keras.json`` (Keras's
    config, ``KERAS_HOME`` honoured), else ``tensorflow``."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        try:
            return str(keras.backend.backend())
        except AttributeError:  # keras is being imported right now
            pass
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name
    home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    try:
        config = json.loads((Path(home) / "keras.json").read_text())
    except (OSError, ValueError):
        return DEFAULT_BACKEND
    return str(config.get("backend") or DEFAULT_BACKEND)


def active() -> ModuleType:
    """The step module of the running backend (imports Keras)."""
    import keras

    name = keras.backend.backend()
    if name not in BACKENDS:
        raise RuntimeError(f"Keras backend {name!r} is not supported: use one of {BACKENDS}")
    return importlib.import_module(f"wga.vis.backends.{name}")
