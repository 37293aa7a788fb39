"""The pieces of the engine, each on its own: parameterisations, transforms, objectives, presets,
PNG metadata. Fast: no real model needed."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from wga.errors import InvalidInput
from wga.vis.hooks import HOOKS, hooks_for
from wga.vis.objective import SCORES, Target, _relu_with_redirect, diversity, score
from wga.vis.objective_table import OBJECTIVES, ObjectiveSpec, objective_names, resolve_objective
from wga.vis.optim import OPTIMISERS, optimiser
from wga.vis.param import ImageParam, normalized_color_matrix, resize_params
from wga.vis.png import read_png_metadata, save_png
from wga.vis.presets import PRESETS, get_preset
from wga.vis.recipe import recipes_from_request
from wga.vis.render import Recipe
from wga.vis.transform import TransformStack, median_filter


def test_fourier_images_lie_in_unit_range_and_start_near_grey():
    param = ImageParam("fourier", 64)
    images = param.to_rgb(tf.constant(param.init(np.array([0, 1]))))
    assert images.shape == (2, 64, 64, 3)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
    assert abs(float(tf.reduce_mean(images)) - 0.5) < 0.05


def test_initial_noise_depends_on_the_elements_own_seed_only():
    param = ImageParam("fourier", 32)
    together = param.init(np.array([7, 3, 7]))
    alone = param.init(np.array([3]))
    np.testing.assert_array_equal(together[1], alone[0])
    np.testing.assert_array_equal(together[0], together[2])
    assert not np.allclose(together[0], together[1])


def test_imagenet_colour_matrix_is_normalised_by_its_largest_column():
    matrix = normalized_color_matrix(None)
    assert np.isclose(np.linalg.norm(matrix, axis=0).max(), 1.0)


def test_fourier_octave_upsampling_keeps_the_image():
    small, large = ImageParam("fourier", 32), ImageParam("fourier", 64)
    rng = np.random.default_rng(0)
    params = rng.normal(0, 0.5, small.shape(2)).astype("float32")
    params[:, :, 16, :, :] = 0  # no energy at Nyquist, where up-sampling is ambiguous
    params[:, :, :, 16, :] = 0
    before = small.to_rgb(tf.constant(params))
    after = large.to_rgb(tf.constant(resize_params(small, params, large)))
    # band-limited ×2 up-sampling keeps every original sample at the even pixels
    np.testing.assert_allclose(after[:, ::2, ::2].numpy(), before.numpy(), atol=1e-4)


def test_transform_keeps_the_image_when_all_randomness_is_off():
    stack = TransformStack(64, scales=(1.0,), angles=(0.0,), strength=0.0)
    images = tf.random.uniform((2, 64, 64, 3))
    out = stack(images, tf.constant([1, 2], tf.int64), tf.constant(5, tf.int64))
    np.testing.assert_allclose(out.numpy(), images.numpy(), atol=1e-5)


def test_transform_pads_grey_and_each_element_follows_its_own_seed():
    stack = TransformStack(128)
    assert (stack.pad, stack.jitter_first, stack.jitter_last) == (12, 8, 4)  # Lucid at 128 px
    images = tf.random.uniform((3, 128, 128, 3))
    step = tf.constant(9, tf.int64)
    batch = stack(images, tf.constant([5, 6, 5], tf.int64), step)
    alone = stack(images[1:2], tf.constant([6], tf.int64), step)
    assert batch.shape == (3, stack.output_size, stack.output_size, 3)
    np.testing.assert_allclose(batch[1].numpy(), alone[0].numpy(), atol=1e-6)
    matrices = stack.matrices(tf.constant([5, 6, 5], tf.int64), step).numpy()
    np.testing.assert_array_equal(matrices[0], matrices[2])
    assert not np.array_equal(matrices[0], matrices[1])
    corner = stack(tf.zeros((1, 128, 128, 3)), tf.constant([0], tf.int64), step)[0, 0, 0]
    np.testing.assert_allclose(corner.numpy(), 0.5)  # the padded border is mid grey


def test_transform_is_differentiable_with_respect_to_the_image():
    stack = TransformStack(64)
    images = tf.random.uniform((1, 64, 64, 3))
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(stack(images, tf.constant([0], tf.int64), tf.constant(0, tf.int64)))
    assert float(tf.reduce_sum(tf.abs(tape.gradient(total, images)))) > 0


def test_median_filter_removes_salt_noise():
    image = np.full((1, 16, 16, 3), 0.25, dtype="float32")
    image[0, 8, 8, :] = 1.0
    out = median_filter(tf.constant(image), 5).numpy()
    np.testing.assert_allclose(out, 0.25)


def test_objectives_score_each_element_on_its_own_unit():
    features = np.zeros((2, 6, 6, 4), dtype="float32")
    features[0, :, :, 1] = 2.0
    features[1, 3, 3, 2] = 36.0
    features[1, 0, 0, 2] = 100.0  # in the border
    units = tf.constant([1, 2])
    channel = score("channel", tf.constant(features), units).numpy()
    np.testing.assert_allclose(channel, [2.0, 136.0 / 36])
    bordered = score("channel", tf.constant(features), units, border=2).numpy()
    np.testing.assert_allclose(bordered, [2.0, 36.0 / 4])
    neuron = score("neuron", tf.constant(features), units).numpy()
    np.testing.assert_allclose(neuron, [2.0, 36.0])
    logits = score("logit", tf.constant([[1.0, 5.0], [3.0, -2.0]]), tf.constant([1, 0])).numpy()
    np.testing.assert_allclose(logits, [5.0, 3.0])


def test_every_objective_in_the_table_has_a_scoring_function_and_no_other_does():
    assert set(SCORES) == set(OBJECTIVES)
    assert objective_names()[0] == "auto"
    features = tf.random.uniform((2, 5, 5, 4))
    vectors = tf.math.l2_normalize(tf.random.uniform((2, 4)), axis=1)
    positions = tf.constant([[0.5, 0.5], [0.1, 0.9]])
    for name, spec in OBJECTIVES.items():
        if "spatial" in spec.layers:
            target = Target(tf.constant([0, 3]), 0, positions, vectors)
            assert SCORES[name](features, target).shape == (2,)


def test_auto_resolves_by_layer_kind_and_an_objective_that_misfits_its_layer_is_refused():
    assert resolve_objective("auto", spatial=True).name == "channel"
    assert resolve_objective("auto", spatial=False).name == "logit"
    with pytest.raises(InvalidInput, match="needs a dense layer"):
        resolve_objective("logit", spatial=True)
    with pytest.raises(InvalidInput, match="needs a spatial layer"):
        resolve_objective("neuron", spatial=False)
    with pytest.raises(InvalidInput, match="did you mean channel"):
        Recipe("vgg16-hed", "block1_conv1", 0, objective="chanel")


def test_recipe_carries_a_position_and_vector_only_for_objectives_that_read_them(monkeypatch):
    plain = Recipe("vgg16-hed", "block3_conv3", 1, size=96)
    assert "position" not in plain.as_dict() and "vector" not in plain.as_dict()
    with pytest.raises(InvalidInput, match="takes no position"):
        Recipe("vgg16-hed", "block3_conv3", 1, position=(2, 3))
    spec = ObjectiveSpec("probe", "a test row", frozenset({"spatial"}), position="required")
    monkeypatch.setitem(OBJECTIVES, "probe", spec)
    with pytest.raises(InvalidInput, match="needs a position"):
        Recipe("vgg16-hed", "block3_conv3", 1, objective="probe")
    with pytest.raises(InvalidInput, match="position must be"):
        Recipe("vgg16-hed", "block3_conv3", 1, objective="probe", position=(2, -1))
    at = Recipe("vgg16-hed", "block3_conv3", 1, size=96, objective="probe", position=[2, 3])
    elsewhere = Recipe("vgg16-hed", "block3_conv3", 1, size=96, objective="probe", position=(3, 2))
    assert at.position == (2, 3) and at.as_dict()["position"] == [2, 3]
    # one batch, one trace: each element has its own position (and vector)
    assert at.batch_key() == elsewhere.batch_key() and hash(at) != hash(elsewhere)
    assert at.as_dict() != elsewhere.as_dict()


def test_diversity_is_high_for_equal_images_and_lower_for_different_ones():
    rng = np.random.default_rng(0)
    same = np.repeat(rng.uniform(size=(1, 5, 5, 8)), 3, axis=0).astype("float32")
    different = rng.uniform(size=(3, 5, 5, 8)).astype("float32") ** 4
    assert float(diversity(tf.constant(same))) == pytest.approx(2.0, abs=1e-4)
    assert float(diversity(tf.constant(different))) < float(diversity(tf.constant(same)))


def test_redirected_relu_lets_a_dead_unit_receive_an_upward_gradient_during_warm_up():
    x = tf.constant([[-1.0, -2.0], [3.0, -1.0]])  # row 0: dead; row 1: alive
    for switch, expected in ((True, [[1.0, 1.0], [1.0, 0.0]]), (False, [[0, 0], [1.0, 0.0]])):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(_relu_with_redirect(x, tf.constant(switch)))
        np.testing.assert_allclose(tape.gradient(total, x).numpy(), expected)
    with tf.GradientTape() as tape:  # a gradient that would push a dead input lower stays off
        tape.watch(x)
        total = -tf.reduce_sum(_relu_with_redirect(x, tf.constant(True)))
    np.testing.assert_allclose(tape.gradient(total, x).numpy()[0], [0.0, 0.0])


def test_offert2018_octaves_reproduce_the_papers_sizes_at_900_px():
    preset = PRESETS["offert2018"]
    assert preset.octave_sizes(900) == [174, 209, 251, 301, 361, 434, 520, 625, 750, 900]
    assert preset.resolve_steps(900, None) == 1000
    assert preset.octave_sizes(128) == [128]
    assert [steps for _, steps in preset.schedule(224, None)] == [100, 100]


def test_lucid_renders_large_images_in_octaves_with_most_steps_small():
    schedule = PRESETS["lucid"].schedule(1024, 512)
    assert [side for side, _ in schedule] == [256, 512, 1024]
    assert sum(steps for _, steps in schedule) == 512
    assert schedule[0][1] > schedule[1][1] > schedule[2][1]
    assert PRESETS["lucid"].schedule(128, None) == [(128, 192)]


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", 63), ("size", 1025), ("steps", 0), ("unit", -1), ("seed", -1), ("preset", "lucd")],
)
def test_recipe_rejects_bad_values_with_a_clear_message(field, value):
    with pytest.raises(InvalidInput) as error:
        Recipe(**{"model": "vgg16-hed", "layer": "block1_conv1", "unit": 0, field: value})
    assert field in str(error.value) or "did you mean" in str(error.value)


def test_recipe_batch_key_ignores_unit_and_seed_and_dict_resolves_steps():
    a = Recipe("vgg16-hed", "block3_conv3", 1, size=96, seed=3)
    b = Recipe("vgg16-hed", "block3_conv3", 7, size=96, seed=9, steps=192)
    assert a.batch_key() == b.batch_key()
    assert a.as_dict()["steps"] == 192
    assert Recipe("vgg16-hed", "block3_conv3", 1, size=128).batch_key() != a.batch_key()
    assert hash(a) != hash(b)
    assert get_preset("lucid").default_steps == 192


def test_png_round_trips_the_recipe_and_leaves_no_temporary_file(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    metadata = {"model": "vgg16-hed", "unit": 3, "size": 40, "octaves": [20, 40], "x": 1.5}
    path = tmp_path / "sub" / "a.png"
    save_png(path, image, metadata)
    assert read_png_metadata(path) == metadata
    from PIL import Image

    with Image.open(path) as reread:
        np.testing.assert_array_equal(np.asarray(reread), image)
        assert reread.text["model"] == "vgg16-hed" and reread.text["unit"] == "3"
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]


def test_png_refuses_a_float_image(tmp_path):
    with pytest.raises(InvalidInput):
        save_png(tmp_path / "a.png", np.zeros((4, 4, 3), dtype="float32"), {})
    assert not list(tmp_path.iterdir())


def test_large_canvases_are_cropped_at_random_to_bound_memory():
    stack = TransformStack(1024)
    assert stack.canvas_size > 1024 and stack.output_size == 768
    images = tf.random.uniform((1, 1024, 1024, 3))
    seeds = tf.constant([3], tf.int64)
    a = stack(images, seeds, tf.constant(1, tf.int64))
    b = stack(images, seeds, tf.constant(2, tf.int64))
    assert a.shape == (1, 768, 768, 3) and not np.allclose(a.numpy(), b.numpy())


def test_one_constructor_turns_a_request_into_recipes_with_defaults_and_clear_errors():
    fields = {"model": "vgg16-hed", "layer": "block3_conv3", "size": 96, "priority": 3}
    recipes = recipes_from_request(fields, [4, 2])
    assert [recipe.unit for recipe in recipes] == [4, 2]
    assert recipes[0] == Recipe("vgg16-hed", "block3_conv3", 4, size=96)
    with pytest.raises(InvalidInput, match="missing field 'unit'"):
        recipes_from_request(fields)
    with pytest.raises(InvalidInput, match="missing field 'layer'"):
        recipes_from_request({"model": "vgg16-hed", "unit": 1})
    with pytest.raises(InvalidInput, match=r'size must be an integer from 64 to 1024, got "big"'):
        recipes_from_request({**fields, "unit": 1, "size": "big"})
    with pytest.raises(InvalidInput, match=r"size must be an integer .* got null"):
        recipes_from_request({**fields, "unit": 1, "size": None})
    assert recipes_from_request({**fields, "unit": 1, "steps": None})[0].steps is None


def test_every_preset_names_an_optimiser_and_hooks_that_exist():
    for preset in PRESETS.values():
        assert preset.optimizer in OPTIMISERS
        assert all(type(h) in HOOKS.values() for h in hooks_for(preset))
    offert = [type(h).__name__ for h in hooks_for(PRESETS["offert2018"])]
    assert offert == ["DetailReinjection", "MedianFilter", "Autotone"]
    assert hooks_for(PRESETS["lucid"]) == []


def test_optimisers_ascend_the_gradient_and_carry_their_state():
    params, gradient = tf.zeros((1, 2)), tf.constant([[1.0, -2.0]])
    adam = optimiser("adam", 0.1)
    moved, state = adam.update(params, gradient, adam.init(params))
    np.testing.assert_allclose(moved.numpy(), [[0.1, -0.1]], rtol=1e-4)  # Adam's first step
    assert int(state[2]) == 1
    normalized = optimiser("normalized", 0.1)
    moved, state = normalized.update(params, gradient, normalized.init(params))
    np.testing.assert_allclose(moved.numpy(), [[0.1 / 1.5, -0.2 / 1.5]], rtol=1e-4)
    assert state == ()
