"""The render step on JAX: ``jax.value_and_grad`` inside one ``jax.jit`` per step.

The model's variables are passed to the compiled step as arguments (``keras.StatelessScope``),
not baked in as constants: one executable serves a model whatever its weights, and compiles
faster. ``jax.jit`` specialises on shapes, so batch sizes are padded up to a few buckets
(:data:`BUCKETS`) — at most that many traces per step, never one per batch size; padded elements
repeat the last real one and are dropped from the results (a batch that couples its elements,
like the diversity objective, is never padded). Measured forms: benchmarks/backends.py.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras
import numpy as np

from wga.vis.backends import Forward, Step, Update

BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
# donating the parameters and optimiser state lets XLA update them in place (GPU memory); on
# the CPU it measured no faster, so it is on only off the CPU (WGA_JAX_DONATE=0/1 overrides)
DONATE = os.environ.get("WGA_JAX_DONATE")


def bucket(size: int) -> int:
    """The padded batch size for ``size`` elements."""
    for candidate in BUCKETS:
        if candidate >= size:
            return candidate
    return -(-size // BUCKETS[-1]) * BUCKETS[-1]


def _pad(tree: Any, size: int, padded: int) -> Any:
    def pad(value: Any) -> Any:
        if getattr(value, "ndim", 0) == 0 or value.shape[0] != size or padded == size:
            return value
        return jnp.concatenate([value, jnp.repeat(value[-1:], padded - size, axis=0)])

    return jax.tree_util.tree_map(pad, tree)


def _unpad(tree: Any, size: int, padded: int) -> Any:
    if padded == size:
        return tree
    return jax.tree_util.tree_map(
        lambda v: v[:size] if getattr(v, "ndim", 0) and v.shape[0] == padded else v, tree
    )


def _donate() -> bool:
    if DONATE is not None:
        return DONATE != "0"
    return jax.default_backend() != "cpu"


def compile_step(
    forward: Forward, update: Update, variables: list[Any], *, couples_batch: bool = False
) -> Step:
    """One ascent step of a batch (see :mod:`wga.vis.backends`)."""
    variables = list(variables)

    def step(params: Any, state: tuple, values: list[Any], inputs: dict[str, Any]) -> tuple:
        def objective(p: Any) -> tuple[Any, Any]:
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return forward(p, inputs)

        (_, scores), gradient = jax.value_and_grad(objective, has_aux=True)(params)
        params, state = update(params, gradient, state)
        return params, state, scores

    compiled = jax.jit(step, donate_argnums=(0, 1) if _donate() else ())
    lock = threading.Lock()

    def call(params: Any, state: tuple, inputs: dict[str, Any]) -> tuple[Any, tuple, Any]:
        size = int(params.shape[0])
        padded = size if couples_batch else bucket(size)
        args = _pad((jnp.asarray(params), tuple(state), dict(inputs)), size, padded)
        values = [variable.value for variable in variables]
        with lock:  # one trace per shape, even when two threads ask at once
            out = compiled(args[0], args[1], values, args[2])
        return _unpad(out, size, padded)

    return call


def compile_function(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` under ``jax.jit`` (one executable per bucketed batch size)."""
    compiled = jax.jit(function)

    def call(*args: Any) -> Any:
        size = int(args[0].shape[0])
        padded = bucket(size)
        return _unpad(
            compiled(*_pad(tuple(jnp.asarray(a) for a in args), size, padded)), size, padded
        )

    return call


def affine_resample(images: Any, matrices: Any, side: int, fill: float) -> Any:
    """:func:`wga.vis.transform.affine_resample` (the generic gathers, TensorFlow's gradient
    definition) through ``jax.custom_vjp``: the same numbers, but ``keras.ops.custom_gradient``
    (``jax.custom_gradient``) made a whole InceptionV3 step 1.6× slower here."""
    return _resample(int(side), float(fill))(images, matrices)


@functools.lru_cache(maxsize=64)
def _resample(side: int, fill: float) -> Callable[[Any, Any], Any]:
    from wga.vis.transform import _bilinear, _inverse

    @jax.custom_vjp
    def resample(images: Any, matrices: Any) -> Any:
        return _bilinear(images, matrices, side, side, fill)

    def forward(images: Any, matrices: Any) -> tuple[Any, tuple]:
        return resample(images, matrices), (matrices, images.shape)

    def backward(saved: tuple, upstream: Any) -> tuple[Any, Any]:
        matrices, shape = saved
        back = _bilinear(upstream, _inverse(matrices), int(shape[1]), int(shape[2]), 0.0)
        return back, jnp.zeros_like(matrices)

    resample.defvjp(forward, backward)
    return resample


def to_numpy(value: Any) -> np.ndarray:
    return np.asarray(value)
