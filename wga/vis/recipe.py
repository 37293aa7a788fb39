"""What one rendered image is: :class:`Recipe`, validated, hashable, JSON-able.

Kept free of TensorFlow so that front ends (CLI, REST API) can validate a request instantly,
before any model is loaded. :mod:`wga.vis.render` re-exports :class:`Recipe`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from wga.errors import InvalidInput
from wga.vis.presets import DEFAULT_PRESET, Preset, get_preset

if TYPE_CHECKING:
    from wga.models import LoadedModel
    from wga.vis.objective import ObjectiveKind

MIN_SIZE = 64
MAX_SIZE = 1024
MAX_STEPS = 10_000
MAX_SEED = 2**31 - 1
OBJECTIVES: tuple[str, ...] = ("auto", "channel", "neuron", "logit", "layer")


@dataclass(frozen=True)
class Recipe:
    """One image to render; everything that determines its pixels (hashable).

    ``objective``: ``auto`` (channel mean for feature maps, logit for Dense layers), ``channel``,
    ``neuron`` (centre position), ``logit`` or ``layer`` (DeepDream; ``unit`` is ignored).
    """

    model: str
    layer: str
    unit: int
    size: int = 224
    preset: str = DEFAULT_PRESET
    steps: int | None = None
    seed: int = 0
    objective: str = "auto"

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
        if self.objective not in OBJECTIVES:
            raise InvalidInput(
                f"unknown objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}"
            )
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
        return (self.model, self.layer, self.size, self.preset, self.total_steps, self.objective)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able; ``steps`` resolved, so recipes that render alike have equal dicts."""
        out = asdict(self)
        out["steps"] = self.total_steps
        out["unit"], out["size"], out["seed"] = int(self.unit), int(self.size), int(self.seed)
        return out

    def check(self, loaded: LoadedModel) -> ObjectiveKind:
        """Raise NotFound / InvalidInput unless the layer and unit exist; the objective used."""
        from wga.vis.objective import objective_kind

        info = loaded.check_unit(self.layer, self.unit)
        try:
            return objective_kind(self.objective, info.spatial)
        except ValueError as error:
            raise InvalidInput(f"layer {self.layer!r}: {error}") from None
