"""The objectives a render can maximise, and what each needs — the table, free of TensorFlow.

One row per objective: its name, a line for people, the layers it works on (``spatial`` feature
maps, ``dense`` class layers), and whether it reads a unit, a position and a vector. Front ends
(recipe validation, ``render --objective`` choices, ``GET /api/presets``) read this table before
any model loads; :mod:`wga.vis.objective` registers each row's scoring function under the same
name (a test checks that both sides list the same names).

Adding an objective: one row here, one ``@scores("name")`` function in :mod:`wga.vis.objective`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from wga.errors import InvalidInput, closest_names

LayerKind = Literal["spatial", "dense"]
Need = Literal["no", "optional", "required"]
AUTO = "auto"  # channel for feature maps, logit for Dense layers
COSINE_POWER = 2.0  # the direction objectives' default: the Activation Atlas article's dot × cos²


@dataclass(frozen=True)
class ObjectiveSpec:
    """What one objective needs from a recipe and a layer."""

    name: str
    description: str
    layers: frozenset[LayerKind]
    unit: bool = True  # reads the recipe's unit (False: the whole layer)
    position: Need = "no"  # a (y, x) position in the layer's feature map
    vector: Need = "no"  # a direction in the layer's channel space, by reference

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "layers": sorted(self.layers),
            "unit": self.unit,
            "position": self.position,
            "vector": self.vector,
        }


_SPATIAL: frozenset[LayerKind] = frozenset({"spatial"})
_DENSE: frozenset[LayerKind] = frozenset({"dense"})

OBJECTIVES: dict[str, ObjectiveSpec] = {
    spec.name: spec
    for spec in (
        ObjectiveSpec("channel", "spatial mean of the unit's channel (Lucid's channel)", _SPATIAL),
        ObjectiveSpec(
            "neuron",
            "the unit's channel at one position: the centre, or the given [y, x]",
            _SPATIAL,
            position="optional",
        ),
        ObjectiveSpec("logit", "a class unit of a Dense layer, before its softmax", _DENSE),
        ObjectiveSpec(
            "layer", "DeepDream: mean squared activation of the whole layer", _SPATIAL, unit=False
        ),
        ObjectiveSpec(
            "direction",
            "dot × cos^p with a direction in channel space, at the centre or the given [y, x] "
            "(the Activation Atlas's icons)",
            _SPATIAL,
            unit=False,
            position="optional",
            vector="required",
        ),
        ObjectiveSpec(
            "direction_map",
            "dot × cos^p with a direction in channel space, averaged over the feature map",
            _SPATIAL,
            unit=False,
            vector="required",
        ),
    )
}


def objective_names() -> tuple[str, ...]:
    """Every name a recipe may carry: ``auto`` first, then the table's rows."""
    return (AUTO, *OBJECTIVES)


def objective_spec(name: str) -> ObjectiveSpec | None:
    """The row for ``name`` (``None`` for ``auto``, which a layer resolves); InvalidInput if
    unknown."""
    if name == AUTO:
        return None
    try:
        return OBJECTIVES[name]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unknown objective {name!r}: {closest_names(str(name), list(objective_names()))}"
        ) from None


def check_needs(name: str, position: object, vector: object) -> None:
    """Raise InvalidInput when a recipe gives a position or vector that ``name`` does not read,
    or lacks one it requires."""
    spec = objective_spec(name)
    for field, given in (("position", position), ("vector", vector)):
        need: Need = "no" if spec is None else getattr(spec, field)
        if given is not None and need == "no":
            raise InvalidInput(
                f"objective {name!r} takes no {field}: leave it out, or choose an objective "
                f"that reads one ({', '.join(_reading(field)) or 'none yet'})"
            )
        if given is None and need == "required":
            raise InvalidInput(f"objective {name!r} needs a {field}: add one to the request")


def resolve_objective(name: str, spatial: bool) -> ObjectiveSpec:
    """The objective a layer gets: ``auto`` → channel for feature maps, logit for Dense layers;
    InvalidInput when the objective does not fit the layer."""
    spec = objective_spec(name)
    if spec is None:
        return OBJECTIVES["channel" if spatial else "logit"]
    kind: LayerKind = "spatial" if spatial else "dense"
    if kind not in spec.layers:
        fitting = [row.name for row in OBJECTIVES.values() if kind in row.layers]
        raise InvalidInput(
            f"{name} needs a {' or '.join(sorted(spec.layers))} layer; "
            f"use {', '.join(fitting)} for a {'spatial' if spatial else 'Dense'} layer"
        )
    return spec


def _reading(field: str) -> list[str]:
    return [row.name for row in OBJECTIVES.values() if getattr(row, field) != "no"]
