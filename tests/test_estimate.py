"""Render time estimates (wga.vis.estimate): measured steps → seconds a recipe will take."""

from __future__ import annotations

import pytest

from wga.vis.estimate import StepClock, estimate, layer_estimates, recipe_seconds
from wga.vis.presets import PRESETS
from wga.vis.recipe import Recipe


def test_estimate_scales_with_pixels_and_follows_the_octave_schedule():
    clock = StepClock()
    assert estimate("m", "l", [(128, 10)], clock) is None  # nothing measured: no guess
    clock.record("m", "l", side=100, units=1, seconds=0.5)
    assert clock.unit_step_seconds("m", "l", 200) == pytest.approx(2.0)  # 4× the pixels
    assert estimate("m", "l", [(100, 10), (200, 5)], clock) == pytest.approx(10 * 0.5 + 5 * 2.0)
    assert clock.unit_step_seconds("m", "other layer", 100) is None


def test_batched_steps_count_per_unit_and_alone_is_dearer():
    clock = StepClock()
    clock.record("m", "l", side=100, units=8, seconds=2.0)  # 0.25 s per unit in a batch
    assert clock.unit_step_seconds("m", "l", 100) == pytest.approx(0.5)  # × BATCH_TO_ALONE
    clock.record("m", "l", side=100, units=1, seconds=0.4)
    assert clock.unit_step_seconds("m", "l", 100) == pytest.approx(0.4)  # measured alone wins


def test_outliers_are_dropped_and_the_mean_moves_smoothly():
    clock = StepClock()
    clock.record("m", "l", side=100, units=1, seconds=1.0)
    clock.record("m", "l", side=100, units=1, seconds=60.0)  # a trace or a busy moment
    assert clock.unit_step_seconds("m", "l", 100) == pytest.approx(1.0)
    clock.record("m", "l", side=100, units=1, seconds=2.0)
    assert 1.0 < clock.unit_step_seconds("m", "l", 100) < 2.0


def test_layer_estimates_cover_every_preset_once_a_step_was_measured():
    clock = StepClock()
    assert layer_estimates("m", "l", clock) is None
    clock.record("m", "l", side=128, units=1, seconds=0.1)
    table = layer_estimates("m", "l", clock)
    assert set(table) == set(PRESETS)
    lucid = PRESETS["lucid"]
    expected = estimate("m", "l", lucid.schedule(512, None), clock)
    assert table["lucid"]["512"] == pytest.approx(expected, abs=0.05)
    assert table["preview"]["128"] < table["lucid"]["128"]


def test_a_render_records_its_steps_on_the_clock_it_was_handed(hed):
    from wga.vis.render import BatchRender

    clock = StepClock()
    recipe = Recipe("vgg16-hed", "block1_conv2", 3, size=64, steps=4)
    assert recipe_seconds(recipe, clock) is None
    BatchRender(hed, [recipe], clock=clock).run(4)
    seconds = recipe_seconds(recipe, clock)
    assert seconds is not None and seconds > 0
    BatchRender(hed, [recipe]).run(4)  # no clock: nothing recorded anywhere, no error
