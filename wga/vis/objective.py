"""What a render maximises, per batch element, and the ReLU-gradient warm-up — on ``keras.ops``.

Every objective maps the layer's output ``features`` and a :class:`Target` (the per-element
``units``, and what else its row in :mod:`wga.vis.objective_table` asks for) to one score per
element, ``(B,)``; a recipe's objective is a weighted sum of such terms
(:class:`~wga.vis.objective_table.Objective`), and the step maximises the sum over the batch, so
element ``i``'s gradient depends only on its own score (``diversity`` excepted, on purpose). Each
is registered with ``@scores(name)`` under its row's name.

* ``channel`` — spatial mean of channel ``unit`` (Lucid's ``channel``); ``border`` excludes a
  margin, as the 2018 original did (2 px);
* ``neuron`` — channel ``unit`` at one position, the centre by default (Lucid's ``neuron``);
* ``direction`` / ``direction_map`` — ``dot(a, v) · cos(a, v)^p`` for each element's own
  direction ``v``, at its position or averaged over the map (the Activation Atlas's icons;
  :mod:`wga.vis.direction`);
* ``logit`` — unit ``unit`` of a Dense (class) layer, read BEFORE its softmax: maximising a
  probability rewards suppressing the other classes rather than showing this one;
* ``layer`` — DeepDream: mean squared activation of the whole layer (``unit`` is ignored);
* ``diversity`` — Lucid's penalty on similar Gram matrices, for several variations of one unit
  rendered together (it couples the batch on purpose);
* ``tv``, ``l1``, ``l2`` — regularisers on the image itself (Lucid's ``total_variation``, ``L1``
  and ``L2`` around mid grey), per element.

ReLU warm-up: Lucid redirects ReLU gradients during the first steps so that a unit that is dead
(negative everywhere) for the initial noise still receives a gradient that pushes it up. The
model is rebuilt with :class:`RedirectedReLU` layers in place of its ReLUs (the model surgery
decides which layers are ReLUs); whether they redirect is decided while the step is traced (a
thread-local switch), so the warm-up and the plain steps are two traces of one step function.
The redirected gradient is a ``keras.ops.custom_gradient``, so it exists on every backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

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
L1_CONSTANT = L2_CONSTANT = 0.5  # Lucid's L1/L2 regularisers measure the distance to mid grey
L2_EPSILON = 1e-6  # Lucid: sqrt(epsilon + sum((x - constant)^2))

_redirect = threading.local()


@contextmanager
def redirect_relu_gradients(on: bool) -> Iterator[None]:
    """While tracing inside this block, :class:`RedirectedReLU` layers redirect (``on``) or are
    plain ReLUs.

    Thread-local, so two threads tracing different steps never see each other's switch.
    """
    previous = getattr(_redirect, "on", False)
    _redirect.on = bool(on)
    try:
        yield
    finally:
        _redirect.on = previous


@ops.custom_gradient
def relu_with_redirect(x: Any) -> tuple[Any, Callable[..., Any]]:
    """ReLU whose gradient also reaches negative inputs that it would push up, for batch
    elements where the plain ReLU gradient is zero everywhere (Lucid's
    ``redirected_relu_grad``). The step differentiates the objective it MAXIMISES, so
    ``dy > 0`` means "make this input larger" (Lucid minimised a loss: signs flipped)."""
    y = ops.relu(x)

    def grad(*args: Any, upstream: Any = None) -> Any:
        dy = args[-1] if upstream is None else upstream  # PyTorch passes it by keyword
        negative = x < 0
        zeros = ops.zeros_like(dy)
        plain = ops.where(negative, zeros, dy)
        redirected = ops.where(negative & (dy < 0), zeros, dy)
        axes = tuple(range(1, len(x.shape)))
        alive = ops.any(ops.not_equal(plain, 0), axis=axes, keepdims=True)
        return ops.where(alive, plain, redirected)

    return y, grad


class RedirectedReLU(keras.layers.Layer):
    """A ReLU that redirects its gradient while :func:`redirect_relu_gradients` says so."""

    def call(self, inputs: Any) -> Any:
        if getattr(_redirect, "on", False):
            return relu_with_redirect(inputs)
        return ops.relu(inputs)

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
    exponent of the direction objectives; ``images``: ``(B, size, size, 3)`` the RGB images in
    [0, 1] before the transforms (for the regularisers that read the image).
    """

    units: Any = None
    border: int = 0
    positions: Any | None = None
    vectors: Any | None = None
    cos_power: float = COSINE_POWER
    images: Any | None = None


ScoreFunction = Callable[[Any, Target], Any]
SCORES: dict[str, ScoreFunction] = {}


def scores(name: str) -> Callable[[ScoreFunction], ScoreFunction]:
    """Register a scoring function for the row ``name`` of the objective table."""
    if name not in OBJECTIVES:
        raise KeyError(f"objective {name!r} has no row in wga.vis.objective_table.OBJECTIVES")

    def register(function: ScoreFunction) -> ScoreFunction:
        SCORES[name] = function
        return function

    return register


def _units(target: Target) -> Any:
    return ops.cast(target.units, "int32")[:, None]


@scores("logit")
def logit(features: Any, target: Target) -> Any:
    return ops.take_along_axis(features, _units(target), axis=1)[:, 0]


@scores("layer")
def layer(features: Any, target: Target) -> Any:
    return ops.mean(ops.square(features), axis=(1, 2, 3))


@scores("neuron")
def neuron(features: Any, target: Target) -> Any:
    return neuron_at(features, target.units, target.positions)


@scores("direction")
def direction(features: Any, target: Target) -> Any:
    return direction_at(features, target.vectors, target.positions, target.cos_power)


@scores("direction_map")
def direction_over_map(features: Any, target: Target) -> Any:
    return direction_map(features, target.vectors, target.cos_power, target.border)


@scores("channel")
def channel(features: Any, target: Target) -> Any:
    chosen = ops.take_along_axis(features, _units(target)[:, None, None, :], axis=3)[..., 0]
    return ops.mean(crop_border(chosen, target.border), axis=(1, 2))


@scores("diversity")
def diversity_term(features: Any, target: Target) -> Any:
    return diversity_per_element(features)


@scores("tv")
def total_variation(features: Any, target: Target) -> Any:
    images = target.images
    down = ops.abs(images[:, 1:, :, :] - images[:, :-1, :, :])
    across = ops.abs(images[:, :, 1:, :] - images[:, :, :-1, :])
    return ops.sum(down, axis=(1, 2, 3)) + ops.sum(across, axis=(1, 2, 3))


@scores("l1")
def l1(features: Any, target: Target) -> Any:
    return ops.mean(ops.abs(target.images - L1_CONSTANT), axis=(1, 2, 3))


@scores("l2")
def l2(features: Any, target: Target) -> Any:
    return ops.sqrt(L2_EPSILON + ops.mean(ops.square(target.images - L2_CONSTANT), axis=(1, 2, 3)))


def score(name: str, features: Any, units: Any, border: int = 0) -> Any:
    """One score per batch element: how strongly ``features`` show each element's unit."""
    return SCORES[name](features, Target(units, border))


def diversity_per_element(features: Any) -> Any:
    """Element ``i``'s share of Lucid's diversity: the cosine similarities of its Gram matrix
    with the others', summed, divided by the batch size (their sum is Lucid's ``diversity``)."""
    channels = int(features.shape[-1])
    flat = ops.reshape(features, (ops.shape(features)[0], -1, channels))
    grams = ops.matmul(ops.transpose(flat, (0, 2, 1)), flat)
    grams = ops.reshape(grams, (ops.shape(features)[0], channels * channels))
    grams = grams / ops.maximum(ops.norm(grams, axis=1, keepdims=True), 1e-10)
    similarity = ops.matmul(grams, ops.transpose(grams))
    own = ops.sum(grams * grams, axis=1)
    batch = ops.cast(ops.shape(features)[0], features.dtype)
    return (ops.sum(similarity, axis=1) - own) / batch


def diversity(features: Any) -> Any:
    """Lucid's diversity: mean cosine similarity between the elements' Gram matrices.

    Subtract it (times a weight) from the objective to push variations of one unit apart.
    """
    return ops.sum(diversity_per_element(features))
