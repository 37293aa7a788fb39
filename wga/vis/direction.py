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

from typing import Any

from keras import ops

from wga.vis.objective_table import COSINE_POWER

COSINE_FLOOR = 0.1  # Lucid's atlas notebook: tf.maximum(0.1, cossim)
NORM_EPSILON = 1e-4  # Lucid: dot / (1e-4 + mag)


def at_positions(features: Any, positions: Any | None) -> Any:
    """The activation vector ``(B, C)`` of each element at its fractional ``(y, x)``
    (``None``: the centre, ``[H // 2, W // 2]``). The map's height and width are static."""
    height, width, channels = (int(d) for d in features.shape[1:])
    if positions is None:
        return features[:, height // 2, width // 2, :]
    size = ops.convert_to_tensor([height, width], "float32")
    cells = ops.cast(ops.floor(ops.cast(positions, "float32") * size), "int32")
    cells = ops.clip(cells, 0, ops.convert_to_tensor([height - 1, width - 1], "int32"))
    flat_index = cells[:, 0] * width + cells[:, 1]
    flat = ops.reshape(features, (-1, height * width, channels))
    return ops.take_along_axis(flat, flat_index[:, None, None], axis=1)[:, 0, :]


def crop_border(values: Any, border: int) -> Any:
    """``values`` ``(B, H, W, …)`` without ``border`` cells on each side (all of it when the map
    is smaller than twice the border: something rather than nothing)."""
    height, width = int(values.shape[1]), int(values.shape[2])
    if not border or height <= 2 * border or width <= 2 * border:
        return values
    return values[:, border : height - border, border : width - border]


def cosine_weighted_dot(activations: Any, vectors: Any, power: float = COSINE_POWER) -> Any:
    """``dot(a, v) · max(cos(a, v), 0.1)^power`` over the last axis, ``v`` of unit length.

    ``power`` 0 is the plain dot product (with a one-hot ``v``: the unit's activation).
    """
    dot = ops.sum(activations * vectors, axis=-1)
    if not power:
        return dot
    cosine = dot / (ops.norm(activations, axis=-1) + NORM_EPSILON)
    return dot * ops.power(ops.maximum(cosine, COSINE_FLOOR), power)


def direction_at(
    features: Any, vectors: Any, positions: Any | None, power: float = COSINE_POWER
) -> Any:
    """Each element's direction score at its position (Lucid's ``direction_neuron``)."""
    return cosine_weighted_dot(at_positions(features, positions), vectors, power)


def direction_map(features: Any, vectors: Any, power: float = COSINE_POWER, border: int = 0) -> Any:
    """Each element's direction score averaged over the feature map (less ``border``)."""
    per_position = cosine_weighted_dot(features, vectors[:, None, None, :], power)
    return ops.mean(crop_border(per_position, border), axis=(1, 2))


def neuron_at(features: Any, units: Any, positions: Any | None) -> Any:
    """Each element's unit at its position."""
    vectors = at_positions(features, positions)
    return ops.take_along_axis(vectors, ops.cast(units, "int32")[:, None], axis=1)[:, 0]
