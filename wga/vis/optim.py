"""Optimisers of the compiled render step: one protocol, a state tuple, traced inside the step.

An optimiser turns a gradient (of the objective being MAXIMISED) into new parameters. Its state
is a tuple of tensors that the compiled step takes and returns, so the Python loop outside can
park a render and resume it, and an octave change can start afresh (:meth:`Optimiser.init`).

* :class:`Adam` — Lucid's ``tf.train.AdamOptimizer`` update, written out (state ``m, v, t``);
* :class:`NormalizedGradient` — the 2018 original's ``x += rate · g / (mean|g| + ε)`` (no state).

Adding one: a class with ``state_spec``, ``init`` and ``update``, and its name in
:data:`OPTIMISERS` (a preset names it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import tensorflow as tf

ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8  # tf.train.AdamOptimizer defaults (Lucid)
NORMALIZED_GRADIENT_EPSILON = 1e-7  # explain.ipynb: grads /= mean(|grads|) + 1e-7

State = tuple[tf.Tensor, ...]


class Optimiser(Protocol):
    """What the compiled step needs of an optimiser."""

    learning_rate: float

    def state_spec(self, params: tf.TensorSpec) -> tuple[tf.TensorSpec, ...]:
        """The state's signature for parameters of signature ``params``."""
        ...

    def init(self, params: tf.Tensor) -> State:
        """A fresh state for ``params`` (a render's start, or a new octave)."""
        ...

    def update(
        self, params: tf.Tensor, gradient: tf.Tensor, state: State
    ) -> tuple[tf.Tensor, State]:
        """One ascent step: the new parameters and state (traced inside the compiled step)."""
        ...


@dataclass(frozen=True)
class Adam:
    learning_rate: float

    def state_spec(self, params: tf.TensorSpec) -> tuple[tf.TensorSpec, ...]:
        return (params, params, tf.TensorSpec([], tf.int64))

    def init(self, params: tf.Tensor) -> State:
        return (tf.zeros_like(params), tf.zeros_like(params), tf.constant(0, tf.int64))

    def update(
        self, params: tf.Tensor, gradient: tf.Tensor, state: State
    ) -> tuple[tf.Tensor, State]:
        m, v, t = state
        t = t + 1
        step = tf.cast(t, tf.float32)
        m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * gradient
        v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * tf.square(gradient)
        m_hat = m / (1 - ADAM_BETA1**step)
        v_hat = v / (1 - ADAM_BETA2**step)
        params = params + self.learning_rate * m_hat / (tf.sqrt(v_hat) + ADAM_EPSILON)
        return params, (m, v, t)


@dataclass(frozen=True)
class NormalizedGradient:
    learning_rate: float

    def state_spec(self, params: tf.TensorSpec) -> tuple[tf.TensorSpec, ...]:
        return ()

    def init(self, params: tf.Tensor) -> State:
        return ()

    def update(
        self, params: tf.Tensor, gradient: tf.Tensor, state: State
    ) -> tuple[tf.Tensor, State]:
        axes = list(range(1, len(params.shape)))
        mean = tf.reduce_mean(tf.abs(gradient), axis=axes, keepdims=True)
        return params + self.learning_rate * gradient / (mean + NORMALIZED_GRADIENT_EPSILON), ()


OPTIMISERS: dict[str, type[Adam] | type[NormalizedGradient]] = {
    "adam": Adam,
    "normalized": NormalizedGradient,
}


def optimiser(name: str, learning_rate: float) -> Optimiser:
    """The optimiser a preset names."""
    return OPTIMISERS[name](learning_rate)
