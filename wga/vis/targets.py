"""The per-element inputs of a render step besides the unit: positions and direction vectors.

A recipe names a position as a cell ``(y, x)`` of the layer's feature map at the recipe's size,
and a direction by its hash; the compiled step takes both per batch element, as fractions of the
map (so every octave of a multi-scale render reads the same place) and as unit vectors (so the
step only takes dot products). Resolved once per batch, on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from wga.errors import InvalidInput
from wga.vis.features import feature_graph
from wga.vis.objective_table import objective_spec
from wga.vis.vectors import VectorStore, check_direction, unit

if TYPE_CHECKING:
    from wga.models import LoadedModel
    from wga.vis.recipe import Recipe

CENTRE = (0.5, 0.5)  # floor(0.5 · side) = side // 2: the neuron objective's centre at any size


def map_shape(loaded: LoadedModel, layer: str, size: int) -> tuple[int, int]:
    """The layer's feature map (height, width) for a ``size`` px render."""
    graph = feature_graph(loaded, layer)
    side = graph.fixed_size or size
    shape = graph.model.compute_output_shape((1, side, side, 3))
    return int(shape[1]), int(shape[2])


def element_positions(loaded: LoadedModel, recipes: Sequence[Recipe]) -> np.ndarray:
    """``(B, 2)`` float32: each recipe's position as fractions of the map (the centre if none)."""
    out = np.tile(np.asarray(CENTRE, "float32"), (len(recipes), 1))
    shape: tuple[int, int] | None = None
    for index, recipe in enumerate(recipes):
        if recipe.position is None:
            continue
        if shape is None:
            shape = map_shape(loaded, recipe.layer, recipe.size)
        y, x = recipe.position
        height, width = shape
        if not (y < height and x < width):
            raise InvalidInput(
                f"position [{y}, {x}] is outside layer {recipe.layer!r}'s feature map, which is "
                f"{height} × {width} at {recipe.size} px: give y < {height} and x < {width}"
            )
        out[index] = ((y + 0.5) / height, (x + 0.5) / width)
    return out


def element_vectors(
    loaded: LoadedModel, recipes: Sequence[Recipe], store: VectorStore | None = None
) -> np.ndarray:
    """``(B, C)`` float32 unit directions of the recipes (``(B, 1)`` zeros when their objective
    reads none); InvalidInput if a direction's length is not the layer's channel count."""
    spec = objective_spec(recipes[0].objective) if recipes else None
    if spec is None or spec.vector == "no":
        return np.zeros((len(recipes), 1), "float32")
    store = store or VectorStore()
    channels = loaded.layer(recipes[0].layer).units
    rows = [unit(check_direction(store, recipe.vector or "", channels)) for recipe in recipes]
    return np.stack(rows).astype("float32")
