"""How long a render will take here, from the steps measured on this machine.

Every step a :class:`~wga.vis.render.BatchRender` takes is timed (wall clock: what a user waits
for) and, when the batch was handed a :class:`StepClock` (the render queue owns one; its API
asks it), recorded per (model, layer) as seconds per unit-step per megapixel the image has — a
step's cost grows with the pixels. Units rendered alone and units sharing a batch are kept apart:
a batch shares the fixed costs, so a unit costs less there (about half, measured on 2 cores).

:func:`estimate` turns that into the seconds a recipe will take: the preset's octave schedule
(steps per side), each octave's pixels, the rate. ``None`` until this layer has run a step on
this clock (the grid's previews usually have, by the time a unit is opened); never a guess
from another machine. Steps that trace (the first of an octave, the first after the warm-up) and
outliers are not recorded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wga.vis.presets import PRESETS

if TYPE_CHECKING:
    from wga.vis.recipe import Recipe

SMOOTHING = 0.2  # weight of a new sample in the running mean
BATCH_TO_ALONE = 2.0  # unit-step cost alone ÷ in a batch when only batches were measured
OUTLIER = 4.0  # a sample this many times the running mean (a trace, a busy moment) is dropped


@dataclass
class _Rate:
    alone: float | None = None  # seconds per unit-step per megapixel, batch of one
    batched: float | None = None  # the same, per unit, in batches of several


class StepClock:
    """Running means of the measured step cost; thread-safe (workers record, the API reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rates: dict[tuple[str, str], _Rate] = {}

    def record(self, model: str, layer: str, side: int, units: int, seconds: float) -> None:
        """One step of ``units`` images of ``side`` px took ``seconds`` (wall)."""
        if units < 1 or side < 1 or not seconds > 0:
            return
        sample = seconds / units / (side * side / 1e6)
        field = "alone" if units == 1 else "batched"
        with self._lock:
            rate = self._rates.setdefault((model, layer), _Rate())
            current = getattr(rate, field)
            if current is None:
                setattr(rate, field, sample)
            elif sample <= OUTLIER * current:
                setattr(rate, field, (1 - SMOOTHING) * current + SMOOTHING * sample)

    def unit_step_seconds(self, model: str, layer: str, side: int) -> float | None:
        """Seconds one unit rendered alone needs for one step at ``side`` px, or ``None``."""
        with self._lock:
            rate = self._rates.get((model, layer))
            if rate is None:
                return None
            per_megapixel = rate.alone
            if per_megapixel is None and rate.batched is not None:
                per_megapixel = rate.batched * BATCH_TO_ALONE
        if per_megapixel is None:
            return None
        return per_megapixel * side * side / 1e6

    def clear(self) -> None:
        with self._lock:
            self._rates.clear()


def estimate(
    model: str, layer: str, schedule: list[tuple[int, int]], clock: StepClock
) -> float | None:
    """Seconds a one-unit render with ``schedule`` (``(side, steps)`` per octave) will take."""
    total = 0.0
    for side, steps in schedule:
        seconds = clock.unit_step_seconds(model, layer, side)
        if seconds is None:
            return None
        total += seconds * steps
    return total


def recipe_seconds(recipe: Recipe, clock: StepClock) -> float | None:
    """Seconds ``recipe`` will take rendered alone (its preset's schedule), or ``None``."""
    schedule = recipe.preset_spec.schedule(recipe.size, recipe.steps)
    return estimate(recipe.model, recipe.layer, schedule, clock)


ESTIMATE_SIZES = (64, 96, 128, 192, 256, 384, 512, 768, 1024)  # the sizes the page offers


def layer_estimates(model: str, layer: str, clock: StepClock) -> dict[str, dict[str, float]] | None:
    """``{preset: {size: seconds}}`` for one unit of ``layer`` with each preset's default steps,
    or ``None`` before any step of this layer was measured (``GET /api/models/:model/layers``)."""
    if clock.unit_step_seconds(model, layer, 128) is None:
        return None
    out: dict[str, dict[str, float]] = {}
    for name, preset in PRESETS.items():
        sizes = {}
        for size in ESTIMATE_SIZES:
            seconds = estimate(model, layer, preset.schedule(size, None), clock)
            if seconds is not None:
                sizes[str(size)] = round(seconds, 1)
        out[name] = sizes
    return out
