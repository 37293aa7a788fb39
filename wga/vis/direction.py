"""Scores for directions in channel space and for positions in the feature map, per batch element.

The Activation Atlas renders an icon by maximising ``dot(a, v) · cos(a, v)^p`` for its cell's
mean activation ``v`` (``p`` = 2 in the article, 4 in Lucid's simple notebook): the dot product
alone is won by making the activation huge in any direction that is not orthogonal to ``v``; the
cosine factor makes it point along ``v``. As in Lucid, the cosine is floored at 0.1 so that a
start image pointing away from ``v`` still gets a gradient, and the directions arrive already
whitened and of unit length (:mod:`wga.vis.vectors`), so the step only takes dot products.

Each batch element has its own direction (``vectors`` ``(B, C)``) and its own position
(``positions`` ``(B, 2)``, fractions of the feature map's height and width): a batch of atlas
icons is one forward/backward pass. Positions are fractions rather than indices because a
multi-octave render sees the layer at several sizes; ``floor(0.5 · side)`` is ``side // 2``, so
(0.5, 0.5) is the neuron objective's centre at every size, and a cell ``(y, x)`` of an ``H × W``
map is ``((y + 0.5) / H, (x + 0.5) / W)``.
"""

from __future__ import annotations

import tensorflow as tf

from wga.vis.objective_table import COSINE_POWER

COSINE_FLOOR = 0.1  # Lucid's atlas notebook: tf.maximum(0.1, cossim)
NORM_EPSILON = 1e-4  # Lucid: dot / (1e-4 + mag)


def at_positions(features: tf.Tensor, positions: tf.Tensor | None) -> tf.Tensor:
    """The activation vector ``(B, C)`` of each element at its fractional ``(y, x)``
    (``None``: the centre, ``[H // 2, W // 2]``)."""
    shape = tf.shape(features)
    if positions is None:
        return features[:, shape[1] // 2, shape[2] // 2, :]
    size = tf.cast(shape[1:3], tf.float32)
    cells = tf.cast(tf.floor(positions * size), tf.int32)
    cells = tf.minimum(tf.maximum(cells, 0), shape[1:3] - 1)
    return tf.gather_nd(features, cells, batch_dims=1)


def crop_border(values: tf.Tensor, border: int) -> tf.Tensor:
    """``values`` ``(B, H, W, …)`` without ``border`` cells on each side (all of it when the map
    is smaller than twice the border: something rather than nothing)."""
    if not border:
        return values
    height, width = tf.shape(values)[1], tf.shape(values)[2]
    inner = values[:, border : height - border, border : width - border]
    return tf.cond(tf.size(inner) > 0, lambda: inner, lambda: values)


def cosine_weighted_dot(
    activations: tf.Tensor, vectors: tf.Tensor, power: float = COSINE_POWER
) -> tf.Tensor:
    """``dot(a, v) · max(cos(a, v), 0.1)^power`` over the last axis, ``v`` of unit length.

    ``power`` 0 is the plain dot product (with a one-hot ``v``: the unit's activation).
    """
    dot = tf.reduce_sum(activations * vectors, axis=-1)
    if not power:
        return dot
    cosine = dot / (tf.norm(activations, axis=-1) + NORM_EPSILON)
    return dot * tf.pow(tf.maximum(cosine, COSINE_FLOOR), power)


def direction_at(
    features: tf.Tensor,
    vectors: tf.Tensor,
    positions: tf.Tensor | None,
    power: float = COSINE_POWER,
) -> tf.Tensor:
    """Each element's direction score at its position (Lucid's ``direction_neuron``)."""
    return cosine_weighted_dot(at_positions(features, positions), vectors, power)


def direction_map(
    features: tf.Tensor, vectors: tf.Tensor, power: float = COSINE_POWER, border: int = 0
) -> tf.Tensor:
    """Each element's direction score averaged over the feature map (less ``border``)."""
    per_position = cosine_weighted_dot(features, vectors[:, tf.newaxis, tf.newaxis, :], power)
    return tf.reduce_mean(crop_border(per_position, border), axis=[1, 2])


def neuron_at(features: tf.Tensor, units: tf.Tensor, positions: tf.Tensor | None) -> tf.Tensor:
    """Each element's unit at its position."""
    return tf.gather(at_positions(features, positions), units, axis=1, batch_dims=1)
