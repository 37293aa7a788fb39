"""A layer's feature-map shape at a render size: what positions (cells ``(y, x)`` of the map at
the recipe's size) are fractions of. The per-element inputs themselves are built by
:func:`wga.vis.step.element_inputs` (as fractions, so every octave of a multi-scale render reads
the same place)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wga.vis.features import feature_graph

if TYPE_CHECKING:
    from wga.models import LoadedModel

CENTRE = (0.5, 0.5)  # floor(0.5 · side) = side // 2: the neuron objective's centre at any size


def map_shape(loaded: LoadedModel, layer: str, size: int) -> tuple[int, int]:
    """The layer's feature map (height, width) for a ``size`` px render."""
    graph = feature_graph(loaded, layer)
    side = graph.fixed_size or size
    shape = graph.model.compute_output_shape((1, side, side, 3))
    return int(shape[1]), int(shape[2])
