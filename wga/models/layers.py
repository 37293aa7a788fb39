"""Which layers of a model are worth visualising, with their unit counts and kinds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import keras

# Layer types whose outputs are feature maps worth rendering. Normalisation, padding, dropout and
# reshaping layers repeat their input's units and would only clutter the layer list.
_CONV_TYPES = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose"}
_MERGE_TYPES = {"Concatenate", "Add", "Multiply", "Average", "Maximum"}
_ACTIVATION_TYPES = {"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU"}


@dataclass(frozen=True)
class LayerInfo:
    """A layer that can be visualised: ``units`` channels (or classes, for the class layer)."""

    name: str
    units: int
    kind: Literal["conv", "activation", "merge", "pool", "dense", "class"]
    type: str
    spatial: bool  # False for Dense layers: their units have no position

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "units": self.units,
            "kind": self.kind,
            "type": self.type,
            "spatial": self.spatial,
        }


def list_layers(model: keras.Model) -> list[LayerInfo]:
    """The layers of ``model`` worth rendering; the last Dense layer is the class layer."""
    infos: list[LayerInfo] = []
    dense_indices: list[int] = []
    for layer in model.layers:
        type_name = type(layer).__name__
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            continue  # nested models or layers with several outputs
        if type_name == "InputLayer" or not shape or shape[-1] is None:
            continue
        units = int(shape[-1])
        if len(shape) == 4:
            if type_name in _CONV_TYPES:
                kind = "conv"
            elif type_name in _MERGE_TYPES:
                kind = "merge"
            elif type_name in _ACTIVATION_TYPES:
                kind = "activation"
            elif "Pooling2D" in type_name and "Global" not in type_name:
                kind = "pool"
            else:
                continue
            infos.append(LayerInfo(layer.name, units, kind, type_name, spatial=True))
        elif len(shape) == 2 and type_name == "Dense":
            dense_indices.append(len(infos))
            infos.append(LayerInfo(layer.name, units, "dense", type_name, spatial=False))
    if dense_indices:
        last = infos[dense_indices[-1]]
        infos[dense_indices[-1]] = LayerInfo(last.name, last.units, "class", last.type, False)
    return infos
