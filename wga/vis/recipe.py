"""What one rendered image is: :class:`Recipe`, validated, hashable, JSON-able.

Kept free of TensorFlow so that front ends (CLI, REST API) can validate a request instantly,
before any model is loaded; the objectives come from the tf-free
:mod:`wga.vis.objective_table`. :mod:`wga.vis.render` re-exports :class:`Recipe`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from wga.errors import InvalidInput
from wga.vis.objective_table import AUTO, check_needs, objective_spec, resolve_objective
from wga.vis.presets import DEFAULT_PRESET, Preset, get_preset

if TYPE_CHECKING:
    from wga.models import LoadedModel

MIN_SIZE = 64
MAX_SIZE = 1024
MAX_STEPS = 10_000
MAX_SEED = 2**31 - 1
MAX_VECTOR_REF = 200  # characters of a vector reference (a hash or a name)


@dataclass(frozen=True)
class Recipe:
    """One image to render; everything that determines its pixels (hashable).

    ``objective``: ``auto`` (channel mean for feature maps, logit for Dense layers) or a row of
    :data:`wga.vis.objective_table.OBJECTIVES`. ``position`` (``(y, x)`` in the layer's feature
    map) and ``vector`` (a reference to a direction in channel space) are for the objectives that
    read them; both are part of the recipe's identity and batch key.
    """

    model: str
    layer: str
    unit: int
    size: int = 224
    preset: str = DEFAULT_PRESET
    steps: int | None = None
    seed: int = 0
    objective: str = AUTO
    position: tuple[int, int] | None = None
    vector: str | None = None

    def __post_init__(self) -> None:
        for name in ("unit", "size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise InvalidInput(f"{name} must be an integer, got {value!r}")
        if not isinstance(self.model, str) or not self.model:
            raise InvalidInput("model must be a registry name or the path of a .keras file")
        if not isinstance(self.layer, str) or not self.layer:
            raise InvalidInput("layer must be a layer name (GET /api/models/:model/layers)")
        if self.unit < 0:
            raise InvalidInput(f"unit must be ≥ 0, got {self.unit}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise InvalidInput(f"size must be {MIN_SIZE} … {MAX_SIZE} px, got {self.size}")
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidInput(f"seed must be 0 … {MAX_SEED}, got {self.seed}")
        if self.steps is not None and (
            isinstance(self.steps, bool)
            or not isinstance(self.steps, int | np.integer)
            or not 1 <= self.steps <= MAX_STEPS
        ):
            raise InvalidInput(f"steps must be 1 … {MAX_STEPS} (or omitted), got {self.steps!r}")
        objective_spec(self.objective)  # raises InvalidInput with suggestions
        if self.position is not None:
            object.__setattr__(self, "position", _position(self.position))
        if self.vector is not None and (
            not isinstance(self.vector, str) or not 0 < len(self.vector) <= MAX_VECTOR_REF
        ):
            raise InvalidInput(
                f"vector must be a reference (a name or hash of up to {MAX_VECTOR_REF} "
                f"characters), got {self.vector!r}"
            )
        check_needs(self.objective, self.position, self.vector)
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
            self.position,
            self.vector,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able; ``steps`` resolved, so recipes that render alike have equal dicts.

        ``position`` and ``vector`` appear only when given, so the content ids of recipes
        without them stay what they were before the fields existed.
        """
        out = asdict(self)
        out["steps"] = self.total_steps
        out["unit"], out["size"], out["seed"] = int(self.unit), int(self.size), int(self.seed)
        for optional in ("position", "vector"):
            if out[optional] is None:
                del out[optional]
        if self.position is not None:
            out["position"] = list(self.position)
        return out

    def check(self, loaded: LoadedModel) -> str:
        """Raise NotFound / InvalidInput unless the layer and unit exist and the objective fits
        the layer; the objective's name, ``auto`` resolved."""
        info = loaded.check_unit(self.layer, self.unit)
        try:
            return resolve_objective(self.objective, info.spatial).name
        except InvalidInput as error:
            raise InvalidInput(f"layer {self.layer!r}: {error}") from None


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
