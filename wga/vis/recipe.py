"""What one rendered image is: :class:`Recipe`, validated, hashable, JSON-able.

Kept free of Keras so that front ends (CLI, REST API) can validate a request instantly, before
any model is loaded; the objectives (names or composed expressions) come from the Keras-free
:mod:`wga.vis.objective_table`. :mod:`wga.vis.render` re-exports :class:`Recipe`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from wga.errors import InvalidInput
from wga.vis.backends import BACKENDS, DEFAULT_BACKEND, backend_name
from wga.vis.objective_table import (
    AUTO,
    OBJECTIVES,
    Call,
    Objective,
    canonical_objective,
    check_needs,
    parse_objective,
    resolve_objective,
)
from wga.vis.presets import DEFAULT_PRESET, Preset, get_preset
from wga.vis.vectors import check_hash

if TYPE_CHECKING:
    from wga.models import LoadedModel

MIN_SIZE = 64
MAX_SIZE = 1024
MAX_STEPS = 10_000
MAX_SEED = 2**31 - 1
DEFAULT_SIZE = 224
REQUEST_FIELDS = (
    "model",
    "layer",
    "unit",
    "size",
    "preset",
    "steps",
    "seed",
    "objective",
    "position",
    "vector",
    "cos_power",
)
MAX_COS_POWER = 16.0


@dataclass(frozen=True)
class Recipe:
    """One image to render; everything that determines its pixels (hashable).

    ``objective``: ``auto`` (channel mean for feature maps, logit for Dense layers) or a row of
    :data:`wga.vis.objective_table.OBJECTIVES`. ``position`` (``(y, x)`` in the layer's feature
    map at this size) and ``vector`` (the sha256 of a direction in channel space, kept in a
    :class:`~wga.vis.vectors.VectorStore`) are for the objectives that read them, and
    ``cos_power`` (default 2) for the direction objectives. All three are part of the recipe's
    identity but not of its batch key: every batch element has its own position and vector.
    ``objective`` may also be a composed expression (``channel(mixed5, 3) - 0.5 *
    channel(mixed5, 7)``, see :func:`~wga.vis.objective_table.parse_objective`): it is kept in
    canonical form, and the fields above fill the arguments its terms leave out.

    ``backend``: the Keras backend that renders it (default: this process's), part of the
    identity — a cache never mixes backends; left out of :meth:`as_dict` when it is
    ``tensorflow``, so render ids made before the field existed stay valid.
    """

    model: str
    layer: str
    unit: int
    size: int = DEFAULT_SIZE
    preset: str = DEFAULT_PRESET
    steps: int | None = None
    seed: int = 0
    objective: str = AUTO
    position: tuple[int, int] | None = None
    vector: str | None = None
    cos_power: float | None = None
    backend: str = field(default_factory=backend_name)

    def __post_init__(self) -> None:
        for name, hint in (
            ("model", "a registry name or the path of a .keras file"),
            ("layer", "a layer name, see GET /api/models/:model/layers"),
            ("preset", "a preset name, see GET /api/presets"),
            ("objective", "auto or an objective name, see GET /api/presets"),
        ):
            check_string(name, getattr(self, name), hint)
        check_integer("unit", self.unit, 0, None)
        check_integer("size", self.size, MIN_SIZE, MAX_SIZE)
        check_integer("seed", self.seed, 0, MAX_SEED)
        if self.steps is not None:
            check_integer("steps", self.steps, 1, MAX_STEPS)
        object.__setattr__(self, "objective", canonical_objective(self.objective))
        if self.backend not in BACKENDS:
            raise InvalidInput(
                f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.position is not None:
            object.__setattr__(self, "position", _position(self.position))
        if self.vector is not None:
            check_hash(self.vector)
        check_needs(self.objective, self.position, self.vector)
        if self.cos_power is not None:
            object.__setattr__(self, "cos_power", _cos_power(self.cos_power, self.objective))
        get_preset(self.preset)  # raises InvalidInput with suggestions

    @property
    def preset_spec(self) -> Preset:
        return get_preset(self.preset)

    @property
    def total_steps(self) -> int:
        """Steps over all octaves, the preset's default resolved."""
        return self.preset_spec.resolve_steps(self.size, self.steps)

    def batch_key(self) -> tuple:
        """Recipes with equal keys render together: one compiled step, one batch."""
        return (
            self.model,
            self.layer,
            self.size,
            self.preset,
            self.total_steps,
            self.objective,
            self.cos_power,
            self.backend,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able; ``steps`` resolved, so recipes that render alike have equal dicts.

        ``position``, ``vector`` and ``cos_power`` appear only when given, so the content ids
        of recipes without them stay what they were before the fields existed.
        """
        out = asdict(self)
        out["steps"] = self.total_steps
        out["unit"], out["size"], out["seed"] = int(self.unit), int(self.size), int(self.seed)
        for optional in ("position", "vector", "cos_power"):
            if out[optional] is None:
                del out[optional]
        if self.backend == DEFAULT_BACKEND:
            del out["backend"]
        if self.position is not None:
            out["position"] = list(self.position)
        return out

    def bound_objective(self, loaded: LoadedModel) -> Objective:
        """The objective with every argument filled (``auto`` resolved by the layer's kind, the
        recipe's layer, unit, position, vector where a term leaves them out); NotFound /
        InvalidInput unless every layer and unit exists and every term fits its layer."""
        info = loaded.check_unit(self.layer, self.unit)
        if self.objective == AUTO or self.objective in OBJECTIVES:
            try:
                name = resolve_objective(self.objective, info.spatial).name
            except InvalidInput as error:
                raise InvalidInput(f"layer {self.layer!r}: {error}") from None
            objective = Objective(((1.0, Call(name)),))
        else:
            objective = parse_objective(self.objective)
        bound = objective.bind(self.layer, self.unit, self.position, self.vector, self.cos_power)
        bound.check_layers(lambda layer: loaded.layer(layer).spatial)
        for _, call in bound.terms:
            if call.unit is not None and call.layer is not None:
                loaded.check_unit(call.layer, call.unit)
        return bound

    def check(self, loaded: LoadedModel) -> str:
        """Raise NotFound / InvalidInput unless the objective fits ``loaded``; the objective's
        text, ``auto`` resolved (what a PNG's metadata records)."""
        bound = self.bound_objective(loaded)
        if self.objective == AUTO or self.objective in OBJECTIVES:
            return bound.terms[0][1].name
        return self.objective


def recipe_file_name(recipe: Recipe, *, full: bool = False) -> str:
    """``<layer>-<unit>.png`` (``wga render``'s contract; ``<layer>-direction-<hash>.png`` for a
    direction), or with preset, size and seed (``full``) to tell apart the recipes of one figure;
    a layer name's path separators and other odd characters become ``_``."""
    layer = re.sub(r"[^A-Za-z0-9_.+=-]", "_", recipe.layer)
    if recipe.vector is not None and not full:
        return f"{layer}-direction-{recipe.vector[:12]}.png"
    if full:
        return f"{layer}-{recipe.unit}-{recipe.preset}-{recipe.size}px-seed{recipe.seed}.png"
    return f"{layer}-{recipe.unit}.png"


def recipes_from_request(
    fields: Mapping[str, Any], units: Sequence[Any] | None = None
) -> list[Recipe]:
    """The one path from a render request to recipes, for the REST API and the CLI alike.

    ``fields`` as a request gives them (a JSON body, or the CLI's options): ``model`` and
    ``layer`` required; ``size``, ``preset``, ``steps``, ``seed``, ``objective``, ``position``,
    ``vector`` optional (a field left out takes its default; an explicit ``null`` is only
    allowed where the default is ``null``); ``unit`` required unless ``units`` lists them. Every
    value is checked here (types, ranges, preset, objective and what it needs), before any model
    loads; :func:`check_recipes` then checks them against the loaded model.
    """
    given = {name: fields[name] for name in REQUEST_FIELDS if name in fields}
    for name in ("model", "layer"):
        if given.get(name) is None:
            raise InvalidInput(f"missing field {name!r}: it is required")
    if units is None:
        if given.get("unit") is None:
            raise InvalidInput("missing field 'unit': it is required (an integer ≥ 0)")
        units = [given["unit"]]
    given.pop("unit", None)
    return [Recipe(unit=unit, **given) for unit in units]


def check_recipes(recipes: Sequence[Recipe], loaded: LoadedModel) -> str:
    """Raise NotFound / InvalidInput unless every recipe's layer, unit and objective fit
    ``loaded``; the objective they resolve to (one for recipes of one batch key)."""
    kinds = {recipe.check(loaded) for recipe in recipes}
    if len(kinds) > 1:
        raise InvalidInput(f"recipes of one request resolve to objectives {sorted(kinds)}")
    structures = {recipe.bound_objective(loaded).structure() for recipe in recipes}
    if len(structures) > 1:
        raise InvalidInput("recipes of one request must share their objective's form")
    return kinds.pop()


def check_integer(name: str, value: Any, low: int, high: int | None) -> int:
    """``value`` if it is an integer in ``low … high`` (``None``: no upper bound)."""
    bounds = f"from {low} to {high}" if high is not None else f"from {low} up"
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInput(f"{name} must be an integer {bounds}, got {_shown(value)}")
    if value < low or (high is not None and value > high):
        raise InvalidInput(f"{name} must be {bounds}, got {value}")
    return int(value)


def check_string(name: str, value: Any, hint: str) -> str:
    """``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name} must be a non-empty string ({hint}), got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A value and its type as JSON names them, for messages about a request's fields."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    kind = {str: "string", float: "number", bool: "boolean", list: "list", dict: "object"}
    return (
        f"{text[:80]} ({'null' if value is None else kind.get(type(value), type(value).__name__)})"
    )


def _cos_power(value: Any, objective: str) -> float:
    """The cosine exponent of a direction objective: a number from 0 to MAX_COS_POWER."""
    if objective == AUTO or not parse_objective(objective).reads("vector"):
        raise InvalidInput(
            f"cos_power is for the direction objectives only, not {objective!r}: leave it out"
        )
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not 0 <= float(value) <= MAX_COS_POWER
    ):
        raise InvalidInput(f"cos_power must be a number from 0 to {MAX_COS_POWER:g}, got {value!r}")
    return float(value)


def _position(value: Any) -> tuple[int, int]:
    """``(y, x)``, two integers ≥ 0, from a tuple or a JSON list."""
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)
        and min(value) >= 0
    ):
        return (int(value[0]), int(value[1]))
    raise InvalidInput(f"position must be [y, x], two integers ≥ 0, got {value!r}")
