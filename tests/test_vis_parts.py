"""The pieces of the engine, each on its own: parameterisations, transforms, objectives, presets,
PNG metadata. Fast: no real model needed. Written on ``keras.ops`` and numpy, so they run on
every Keras backend (the ``backends`` marker: CI runs them on TensorFlow and JAX)."""

from __future__ import annotations

import numpy as np
import pytest
from keras import ops

from wga.corpus.inference import value_and_gradient
from wga.errors import InvalidInput
from wga.vis.hooks import HOOKS, hooks_for
from wga.vis.objective import (
    SCORES,
    Target,
    diversity,
    redirect_relu_gradients,
    relu_with_redirect,
    score,
)
from wga.vis.objective_table import OBJECTIVES, ObjectiveSpec, objective_names, resolve_objective
from wga.vis.optim import OPTIMISERS, optimiser
from wga.vis.param import ImageParam, normalized_color_matrix, resize_params
from wga.vis.png import read_png_metadata, save_png
from wga.vis.presets import PRESETS, get_preset
from wga.vis.recipe import recipes_from_request
from wga.vis.render import Recipe
from wga.vis.transform import TransformStack, median_filter, uniform_integers

pytestmark = pytest.mark.backends


def tensor(values) -> object:
    return ops.convert_to_tensor(np.asarray(values, dtype="float32"))


def numpy(value) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(value))


def test_fourier_images_lie_in_unit_range_and_start_near_grey():
    param = ImageParam("fourier", 64)
    images = numpy(param.to_rgb(tensor(param.init(np.array([0, 1])))))
    assert images.shape == (2, 64, 64, 3)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert abs(images.mean() - 0.5) < 0.05


def test_the_fourier_image_is_numpys_inverse_real_fft():
    from wga.vis.param import irfft2d

    rng = np.random.default_rng(0)
    for side in (32, 33):
        real, imag = rng.normal(size=(2, 2, 3, side, side // 2 + 1)).astype("float32")
        expected = np.fft.irfft2(real + 1j * imag, s=(side, side))
        got = numpy(irfft2d(tensor(real), tensor(imag), side))
        np.testing.assert_allclose(got, expected, atol=1e-5)


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
    before = numpy(small.to_rgb(tensor(params)))
    after = numpy(large.to_rgb(tensor(resize_params(small, params, large))))
    # band-limited ×2 up-sampling keeps every original sample at the even pixels
    np.testing.assert_allclose(after[:, ::2, ::2], before, atol=1e-4)


def test_transform_keeps_the_image_when_all_randomness_is_off():
    stack = TransformStack(64, scales=(1.0,), angles=(0.0,), strength=0.0)
    images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype("float32")
    out = stack(tensor(images), tensor(stack.matrices(np.array([1, 2]), 5)))
    np.testing.assert_allclose(numpy(out), images, atol=1e-5)


def test_transform_pads_grey_and_each_element_follows_its_own_seed():
    stack = TransformStack(128)
    assert (stack.pad, stack.jitter_first, stack.jitter_last) == (12, 8, 4)  # Lucid at 128 px
    images = tensor(np.random.default_rng(1).uniform(size=(3, 128, 128, 3)))
    matrices = stack.matrices(np.array([5, 6, 5]), 9)
    batch = numpy(stack(images, tensor(matrices)))
    alone = numpy(stack(images[1:2], tensor(stack.matrices(np.array([6]), 9))))
    assert batch.shape == (3, stack.output_size, stack.output_size, 3)
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-6)
    np.testing.assert_array_equal(matrices[0], matrices[2])
    assert not np.array_equal(matrices[0], matrices[1])
    corner = numpy(stack(tensor(np.zeros((1, 128, 128, 3))), tensor(stack.matrices([0], 9))))
    np.testing.assert_allclose(corner[0, 0, 0], 0.5)  # the padded border is mid grey


def test_transform_randomness_is_a_pure_function_of_seed_step_and_stream():
    seeds = np.array([0, 1, 2**31 - 1, 7])
    first = uniform_integers(seeds, 3, 0, 9)
    np.testing.assert_array_equal(first, uniform_integers(seeds, 3, 0, 9))
    np.testing.assert_array_equal(first[1:2], uniform_integers(seeds[1:2], 3, 0, 9))
    assert first.min() >= 0 and first.max() < 9
    draws = uniform_integers(np.arange(4000), 0, 1, 4)
    assert np.all(np.abs(np.bincount(draws, minlength=4) - 1000) < 120)  # about uniform
    assert not np.array_equal(first, uniform_integers(seeds, 4, 0, 9))


def test_the_resample_is_tensorflows_kernel_in_value_and_gradient():
    """The generic gathers against TensorFlow's own projective transform (TF's fast path):
    the same values, and the same (inverse-resampling) gradient."""
    tf = pytest.importorskip("tensorflow")
    from wga.vis.transform import _bilinear, affine_resample

    stack = TransformStack(64, max_output=None)
    images = np.random.default_rng(2).uniform(size=(3, 64, 64, 3)).astype("float32")
    matrices = stack.matrices(np.array([1, 2, 3]), 4)
    side = stack.output_size
    kernel = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=matrices,
        output_shape=[side, side],
        fill_value=0.5,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    np.testing.assert_allclose(
        numpy(_bilinear(tensor(images), tensor(matrices), side, side, 0.5)),
        kernel.numpy(),
        atol=1e-5,
    )
    weights = np.random.default_rng(3).normal(size=(3, side, side, 3)).astype("float32")
    with tf.GradientTape() as tape:
        x = tf.constant(images)
        tape.watch(x)
        total = tf.reduce_sum(
            tf.raw_ops.ImageProjectiveTransformV3(
                images=x,
                transforms=matrices,
                output_shape=[side, side],
                fill_value=0.5,
                interpolation="BILINEAR",
                fill_mode="CONSTANT",
            )
            * weights
        )
    expected = tape.gradient(total, x).numpy()
    _, gradient = value_and_gradient(
        lambda x: ops.sum(affine_resample(x, tensor(matrices), side, 0.5) * tensor(weights)),
        images,
    )
    np.testing.assert_allclose(gradient, expected, atol=1e-4)


def test_transform_is_differentiable_with_respect_to_the_image():
    stack = TransformStack(64)
    images = np.random.default_rng(4).uniform(size=(1, 64, 64, 3)).astype("float32")
    matrices = tensor(stack.matrices([0], 0))
    _, gradient = value_and_gradient(lambda x: ops.sum(stack(x, matrices)), images)
    assert np.abs(gradient).sum() > 0


def test_median_filter_removes_salt_noise():
    image = np.full((1, 16, 16, 3), 0.25, dtype="float32")
    image[0, 8, 8, :] = 1.0
    np.testing.assert_allclose(median_filter(image, 5), 0.25)
    ramp = np.arange(16, dtype="float32")[None, :, None, None] * np.ones((1, 16, 16, 1))
    filtered = median_filter(ramp, 5)
    np.testing.assert_allclose(filtered[:, 2:-2], ramp[:, 2:-2])  # a ramp's median is itself
    np.testing.assert_allclose(filtered[0, 0, :, 0], 1.0)  # edges mirrored: 2, 1, [0], 1, 2


def test_objectives_score_each_element_on_its_own_unit():
    features = np.zeros((2, 6, 6, 4), dtype="float32")
    features[0, :, :, 1] = 2.0
    features[1, 3, 3, 2] = 36.0
    features[1, 0, 0, 2] = 100.0  # in the border
    units = ops.convert_to_tensor(np.array([1, 2], "int32"))
    channel = numpy(score("channel", tensor(features), units))
    np.testing.assert_allclose(channel, [2.0, 136.0 / 36], rtol=1e-6)
    bordered = numpy(score("channel", tensor(features), units, border=2))
    np.testing.assert_allclose(bordered, [2.0, 36.0 / 4])
    neuron = numpy(score("neuron", tensor(features), units))
    np.testing.assert_allclose(neuron, [2.0, 36.0])
    classes = ops.convert_to_tensor(np.array([1, 0], "int32"))
    logits = numpy(score("logit", tensor([[1.0, 5.0], [3.0, -2.0]]), classes))
    np.testing.assert_allclose(logits, [5.0, 3.0])


def test_image_regularisers_score_each_element():
    grey = np.full((1, 8, 8, 3), 0.5, "float32")
    stripes = grey.copy()
    stripes[0, :, ::2] = 1.0
    images = tensor(np.concatenate([grey, stripes]))
    target = Target(images=images)
    tv = numpy(SCORES["tv"](None, target))
    assert tv[0] == 0 and tv[1] == pytest.approx(8 * 7 * 3 * 0.5)
    l1 = numpy(SCORES["l1"](None, target))
    np.testing.assert_allclose(l1, [0.0, 0.25], atol=1e-6)
    l2 = numpy(SCORES["l2"](None, target))
    np.testing.assert_allclose(l2, [1e-3, np.sqrt(1e-6 + 0.125)], rtol=1e-3)


def test_every_objective_in_the_table_has_a_scoring_function_and_no_other_does():
    assert set(SCORES) == set(OBJECTIVES)
    assert objective_names()[0] == "auto"
    rng = np.random.default_rng(5)
    features = tensor(rng.uniform(size=(2, 5, 5, 4)))
    vectors = rng.uniform(size=(2, 4))
    vectors = tensor(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    positions = tensor([[0.5, 0.5], [0.1, 0.9]])
    images = tensor(rng.uniform(size=(2, 8, 8, 3)))
    units = ops.convert_to_tensor(np.array([0, 3], "int32"))
    for name, spec in OBJECTIVES.items():
        if "spatial" in spec.layers or not spec.layers:
            target = Target(units, 0, positions, vectors, images=images)
            assert tuple(SCORES[name](features, target).shape) == (2,), name


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
    assert float(numpy(diversity(tensor(same)))) == pytest.approx(2.0, abs=1e-4)
    assert float(numpy(diversity(tensor(different)))) < float(numpy(diversity(tensor(same))))


def test_redirected_relu_lets_a_dead_unit_receive_an_upward_gradient_during_warm_up():
    x = np.array([[-1.0, -2.0], [3.0, -1.0]], "float32")  # row 0: dead; row 1: alive
    _, gradient = value_and_gradient(lambda v: ops.sum(relu_with_redirect(v)), x)
    np.testing.assert_allclose(gradient, [[1.0, 1.0], [1.0, 0.0]])
    _, gradient = value_and_gradient(lambda v: ops.sum(ops.relu(v)), x)
    np.testing.assert_allclose(gradient, [[0, 0], [1.0, 0.0]])
    # a gradient that would push a dead input lower stays off
    _, gradient = value_and_gradient(lambda v: -ops.sum(relu_with_redirect(v)), x)
    np.testing.assert_allclose(gradient[0], [0.0, 0.0])


def test_the_redirected_relu_layer_redirects_only_inside_the_switch():
    from wga.vis.objective import RedirectedReLU

    layer = RedirectedReLU()
    x = np.array([[-1.0, -2.0]], "float32")
    _, plain = value_and_gradient(lambda v: ops.sum(layer(v)), x)
    with redirect_relu_gradients(True):
        _, warm = value_and_gradient(lambda v: ops.sum(layer(v)), x)
    np.testing.assert_allclose(plain, [[0.0, 0.0]])
    np.testing.assert_allclose(warm, [[1.0, 1.0]])


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
    images = tensor(np.random.default_rng(6).uniform(size=(1, 1024, 1024, 3)))
    a = numpy(stack(images, tensor(stack.matrices([3], 1))))
    b = numpy(stack(images, tensor(stack.matrices([3], 2))))
    assert a.shape == (1, 768, 768, 3) and not np.allclose(a, b)


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
    params, gradient = tensor(np.zeros((1, 2))), tensor([[1.0, -2.0]])
    adam = optimiser("adam", 0.1)
    moved, state = adam.update(params, gradient, adam.init(params))
    np.testing.assert_allclose(numpy(moved), [[0.1, -0.1]], rtol=1e-4)  # Adam's first step
    assert int(numpy(state[2])) == 1
    normalized = optimiser("normalized", 0.1)
    moved, state = normalized.update(params, gradient, normalized.init(params))
    np.testing.assert_allclose(numpy(moved), [[0.1 / 1.5, -0.2 / 1.5]], rtol=1e-4)
    assert state == ()
