"""What a render maximises, per batch element, and the ReLU-gradient warm-up.

Every objective maps the layer's output ``features`` and a :class:`Target` (the per-element
``units``, and what else its row in :mod:`wga.vis.objective_table` asks for) to one score per
element, ``(B,)``; the step maximises their sum, so element ``i``'s gradient depends only on its
own score. Each is registered with ``@scores(name)`` under its row's name.

* ``channel`` — spatial mean of channel ``unit`` (Lucid's ``channel``); ``border`` excludes a
  margin, as the 2018 original did (2 px);
* ``neuron`` — channel ``unit`` at one position, the centre by default (Lucid's ``neuron``);
* ``direction`` / ``direction_map`` — ``dot(a, v) · cos(a, v)^p`` for each element's own
  direction ``v``, at its position or averaged over the map (the Activation Atlas's icons;
  :mod:`wga.vis.direction`);
* ``logit`` — unit ``unit`` of a Dense (class) layer, read BEFORE its softmax: maximising a
  probability rewards suppressing the other classes rather than showing this one;
* ``layer`` — DeepDream: mean squared activation of the whole layer (``unit`` is ignored);
* :func:`diversity` — Lucid's penalty on similar Gram matrices, for several variations of one
  unit rendered together (this one couples the batch on purpose).

ReLU warm-up: Lucid redirects ReLU gradients during the first steps so that a unit that is dead
(negative everywhere) for the initial noise still receives a gradient that pushes it up. Here the
model is rebuilt with :class:`RedirectedReLU` layers in place of its ReLUs (see
:mod:`wga.vis.features`); whether they redirect is decided while the step is traced (a
thread-local switch), so the warm-up and the plain steps are two traces of one step function.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import keras
import tensorflow as tf

from wga.vis.direction import (
    COSINE_POWER,
    crop_border,
    direction_at,
    direction_map,
    neuron_at,
)
from wga.vis.objective_table import OBJECTIVES

RELU_WARMUP_STEPS = 16  # Lucid render_vis: relu_gradient_override for the first 16 steps
DIVERSITY_WEIGHT = 100.0  # Lucid's tutorial: channel(...) - 1e2 * diversity(layer)

_redirect = threading.local()


@contextmanager
def redirect_relu_gradients(switch: tf.Tensor | None) -> Iterator[None]:
    """While tracing inside this block, :class:`RedirectedReLU` layers obey ``switch`` (a bool
    tensor; ``None``: plain ReLUs).

    Thread-local, so two threads tracing different steps never see each other's switch.
    """
    previous = getattr(_redirect, "switch", None)
    _redirect.switch = switch
    try:
        yield
    finally:
        _redirect.switch = previous


@tf.custom_gradient
def _relu_with_redirect(x: tf.Tensor, switch: tf.Tensor) -> tuple[tf.Tensor, object]:
    """ReLU whose gradient, when ``switch`` is on, also reaches negative inputs that it would
    push up, for batch elements where the plain ReLU gradient is zero everywhere (Lucid's
    ``redirected_relu_grad``). The step differentiates the objective it MAXIMISES, so
    ``dy > 0`` means "make this input larger" (Lucid minimised a loss: signs flipped)."""
    y = tf.nn.relu(x)

    def grad(dy: tf.Tensor) -> tuple[tf.Tensor, None]:
        negative = x < 0
        plain = tf.where(negative, tf.zeros_like(dy), dy)
        redirected = tf.where(negative & (dy < 0), tf.zeros_like(dy), dy)
        axes = list(range(1, len(x.shape)))
        alive = tf.reduce_any(tf.not_equal(plain, 0), axis=axes, keepdims=True)
        use_redirect = tf.logical_and(switch, tf.logical_not(alive))
        return tf.where(use_redirect, redirected, plain), None

    return y, grad


class RedirectedReLU(keras.layers.Layer):
    """A ReLU that redirects its gradient while :func:`redirect_relu_gradients` says so."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        switch = getattr(_redirect, "switch", None)
        if switch is None:
            return tf.nn.relu(inputs)
        return _relu_with_redirect(inputs, switch)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


@dataclass(frozen=True)
class Target:
    """What a scoring function reads besides the layer's output, per batch element.

    ``units``: ``(B,)`` int32, each element's unit; ``border``: pixels of the feature map a
    channel mean leaves out (the 2018 recipe's 2); ``positions``: ``(B, 2)`` float32, each
    element's ``(y, x)`` as fractions of the map's height and width (``None``: the centre, see
    :func:`wga.vis.direction.at_positions`); ``vectors``: ``(B, C)`` float32 unit directions in
    channel space, one per element (for the objectives whose row in
    :data:`~wga.vis.objective_table.OBJECTIVES` reads a vector); ``cos_power``: the cosine's
    exponent of the direction objectives.
    """

    units: tf.Tensor
    border: int = 0
    positions: tf.Tensor | None = None
    vectors: tf.Tensor | None = None
    cos_power: float = COSINE_POWER


ScoreFunction = Callable[[tf.Tensor, Target], tf.Tensor]
SCORES: dict[str, ScoreFunction] = {}


def scores(name: str) -> Callable[[ScoreFunction], ScoreFunction]:
    """Register a scoring function for the row ``name`` of the objective table."""
    if name not in OBJECTIVES:
        raise KeyError(f"objective {name!r} has no row in wga.vis.objective_table.OBJECTIVES")

    def register(function: ScoreFunction) -> ScoreFunction:
        SCORES[name] = function
        return function

    return register


@scores("logit")
def logit(features: tf.Tensor, target: Target) -> tf.Tensor:
    return tf.gather(features, target.units, axis=1, batch_dims=1)


@scores("layer")
def layer(features: tf.Tensor, target: Target) -> tf.Tensor:
    return tf.reduce_mean(tf.square(features), axis=[1, 2, 3])


@scores("neuron")
def neuron(features: tf.Tensor, target: Target) -> tf.Tensor:
    return neuron_at(features, target.units, target.positions)


@scores("direction")
def direction(features: tf.Tensor, target: Target) -> tf.Tensor:
    return direction_at(features, target.vectors, target.positions, target.cos_power)


@scores("direction_map")
def direction_over_map(features: tf.Tensor, target: Target) -> tf.Tensor:
    return direction_map(features, target.vectors, target.cos_power, target.border)


@scores("channel")
def channel(features: tf.Tensor, target: Target) -> tf.Tensor:
    channels = tf.transpose(features, [0, 3, 1, 2])  # (B, C, H, W)
    chosen = tf.gather(channels, target.units, axis=1, batch_dims=1)  # (B, H, W)
    return tf.reduce_mean(crop_border(chosen, target.border), axis=[1, 2])


def score(name: str, features: tf.Tensor, units: tf.Tensor, border: int = 0) -> tf.Tensor:
    """One score per batch element: how strongly ``features`` show each element's unit."""
    return SCORES[name](features, Target(units, border))


def diversity(features: tf.Tensor) -> tf.Tensor:
    """Lucid's diversity: mean cosine similarity between the elements' Gram matrices.

    Subtract it (times a weight) from the objective to push variations of one unit apart.
    """
    shape = tf.shape(features)
    flat = tf.reshape(features, [shape[0], -1, shape[-1]])
    grams = tf.matmul(flat, flat, transpose_a=True)
    grams = tf.reshape(grams, [shape[0], -1])
    grams = tf.math.l2_normalize(grams, axis=1, epsilon=1e-10)
    similarity = tf.matmul(grams, grams, transpose_b=True)
    batch = tf.cast(shape[0], features.dtype)
    off_diagonal = tf.reduce_sum(similarity) - tf.linalg.trace(similarity)
    return off_diagonal / batch
