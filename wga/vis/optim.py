"""Optimisers of the compiled render step: one protocol, a state tuple, traced inside the step
(``keras.ops``: the same update on TensorFlow, JAX and PyTorch).

An optimiser turns a gradient (of the objective being MAXIMISED) into new parameters. Its state
is a tuple of tensors that the compiled step takes and returns, so the Python loop outside can
park a render and resume it, and an octave change can start afresh (:meth:`Optimiser.init`).

* :class:`Adam` — Lucid's ``tf.train.AdamOptimizer`` update, written out (state ``m, v, t``);
* :class:`NormalizedGradient` — the 2018 original's ``x += rate · g / (mean|g| + ε)`` (no state).

Adding one: a class with ``init`` and ``update``, and its name in
:data:`OPTIMISERS` (a preset names it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from keras import ops

ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8  # tf.train.AdamOptimizer defaults (Lucid)
NORMALIZED_GRADIENT_EPSILON = 1e-7  # explain.ipynb: grads /= mean(|grads|) + 1e-7

State = tuple[Any, ...]


class Optimiser(Protocol):
    """What the compiled step needs of an optimiser."""

    learning_rate: float

    def init(self, params: Any) -> State:
        """A fresh state for ``params`` (a render's start, or a new octave)."""
        ...

    def update(self, params: Any, gradient: Any, state: State) -> tuple[Any, State]:
        """One ascent step: the new parameters and state (traced inside the compiled step)."""
        ...


@dataclass(frozen=True)
class Adam:
    learning_rate: float

    def init(self, params: Any) -> State:
        # the step count as float32: exact up to 2**24 steps, one dtype on every backend
        return (ops.zeros_like(params), ops.zeros_like(params), ops.zeros((), "float32"))

    def update(self, params: Any, gradient: Any, state: State) -> tuple[Any, State]:
        m, v, t = state
        t = t + 1.0
        step = t
        m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * gradient
        v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * ops.square(gradient)
        m_hat = m / (1 - ops.power(ADAM_BETA1, step))
        v_hat = v / (1 - ops.power(ADAM_BETA2, step))
        params = params + self.learning_rate * m_hat / (ops.sqrt(v_hat) + ADAM_EPSILON)
        return params, (m, v, t)


@dataclass(frozen=True)
class NormalizedGradient:
    learning_rate: float

    def init(self, params: Any) -> State:
        return ()

    def update(self, params: Any, gradient: Any, state: State) -> tuple[Any, State]:
        axes = list(range(1, len(params.shape)))
        mean = ops.mean(ops.abs(gradient), axis=axes, keepdims=True)
        return params + self.learning_rate * gradient / (mean + NORMALIZED_GRADIENT_EPSILON), ()


OPTIMISERS: dict[str, type[Adam] | type[NormalizedGradient]] = {
    "adam": Adam,
    "normalized": NormalizedGradient,
}


def optimiser(name: str, learning_rate: float) -> Optimiser:
    """The optimiser a preset names."""
    return OPTIMISERS[name](learning_rate)
