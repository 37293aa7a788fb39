"""The render step on TensorFlow: ``tf.GradientTape`` inside one ``tf.function`` per step.

Measured (a bare gradient step, InceptionV3 ``mixed5``, 8 × 128 px, 2 cores): the plain graph
with oneDNN is the fastest form; XLA (``jit_compile=True``) was 0.4–0.8× of it. The batch axis is
``None`` in the signature, so every batch size reuses one trace.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from wga.vis.backends import Forward, Step, Update


def _spec(value: Any) -> tf.TensorSpec:
    """A signature entry: the first axis (the batch) free; scalars stay scalars."""
    shape = tuple(value.shape)
    dtype = tf.as_dtype(value.dtype)
    return tf.TensorSpec([None, *shape[1:]] if shape else [], dtype)


class _Lazy:
    """Traces on the first call, when the arguments' shapes and dtypes are known; thread-safe."""

    def __init__(self, build: Callable[[Any], Callable[..., Any]]) -> None:
        self._build = build
        self._compiled: Callable[..., Any] | None = None
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        if self._compiled is None:
            with self._lock:
                if self._compiled is None:
                    self._compiled = self._build(args)
        return self._compiled(*args)


def compile_step(
    forward: Forward, update: Update, variables: list[Any], *, couples_batch: bool = False
) -> Step:
    """One ascent step of a batch (see :mod:`wga.vis.backends`)."""

    def step(params: Any, state: tuple, inputs: dict[str, Any]) -> tuple[Any, tuple, Any]:
        with tf.GradientTape() as tape:
            tape.watch(params)
            total, scores = forward(params, inputs)
        gradient = tape.gradient(total, params)
        params, state = update(params, gradient, state)
        return params, state, scores

    def build(args: tuple) -> Callable[..., Any]:
        signature = tf.nest.map_structure(_spec, list(args))
        return tf.function(step, input_signature=signature, autograph=False)

    compiled = _Lazy(build)

    def call(params: Any, state: tuple, inputs: dict[str, Any]) -> tuple[Any, tuple, Any]:
        inputs = {key: tf.convert_to_tensor(value) for key, value in inputs.items()}
        return compiled(tf.convert_to_tensor(params), tuple(state), inputs)

    return call


def compile_function(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` traced once per argument signature, the batch axis free."""

    def build(args: tuple) -> Callable[..., Any]:
        signature = tf.nest.map_structure(_spec, list(args))
        return tf.function(function, input_signature=signature, autograph=False)

    compiled = _Lazy(build)
    return lambda *args: compiled(*(tf.convert_to_tensor(a) for a in args))


def affine_resample(images: Any, matrices: Any, side: int, fill: float) -> Any:
    """TensorFlow's own projective-transform kernel: the same numbers as the generic gathers
    (tests/test_vis_parts.py compares them), about 5× faster forward and backward."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=tf.cast(matrices, tf.float32),
        output_shape=tf.constant([side, side], tf.int32),
        fill_value=tf.constant(fill, images.dtype),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def to_numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
