"""Composed objectives: the expression syntax, its canonical text, binding from the recipe, and
that the compiled step scores a weighted sum of terms. Backend-neutral (``backends`` marker)."""

from __future__ import annotations

import numpy as np
import pytest
from keras import ops

from wga.errors import InvalidInput, NotFound
from wga.vis.objective_table import OBJECTIVES, canonical_objective, parse_objective
from wga.vis.recipe import Recipe, recipes_from_request
from wga.vis.store import render_id

pytestmark = pytest.mark.backends
LAYER = "block3_conv3"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("channel", "channel"),
        (
            "channel(mixed5,3)-0.5*channel(mixed5, 7)",
            "channel(mixed5, 3) - 0.5 * channel(mixed5, 7)",
        ),
        ("channel + 0.05*tv - 1e2 * diversity", "channel + 0.05 * tv - 100 * diversity"),
        ("-(channel(a, 1) + channel(a, 1)) / 4", "-0.5 * channel(a, 1)"),
        ("neuron(unit=3, x=2, y=1)", "neuron(unit=3, y=1, x=2)"),
        ("channel('odd-name', 2)", "channel('odd-name', 2)"),
    ],
)
def test_expressions_parse_to_one_canonical_text(text, canonical):
    assert parse_objective(text).text() == canonical
    assert parse_objective(canonical) == parse_objective(text)  # the canonical text re-parses


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("channel * channel", "not multiplied"),
        ("chanel(a, 1)", "did you mean channel"),
        ("channel(a, b)", "unit must be an integer"),
        ("channel + 1", "constant term"),
        ("channel - channel", "cancel out"),
        ("__import__('os').system('x')", "unexpected"),
        ("channel(a, 1", r"expected \)"),
        ("tv(a)", "0 positional"),
        ("logit(l, 1, y=2, x=3)", "takes no y"),
        ("neuron(y=2)", "both y= and x="),
        ("channel;", "unexpected ';'"),
        ("", "non-empty"),
        ("channel + " * 200 + "channel", "longer than"),
    ],
)
def test_bad_expressions_are_refused_with_what_is_wrong(text, message):
    with pytest.raises(InvalidInput, match=message):
        parse_objective(text)


def test_legacy_names_keep_their_text_and_their_render_ids():
    assert canonical_objective("channel") == "channel" and canonical_objective("auto") == "auto"
    import keras

    assert Recipe("vgg16-hed", LAYER, 3).backend == keras.backend.backend()  # the running one
    plain = Recipe("vgg16-hed", LAYER, 3, size=64, backend="tensorflow")
    # as before the backend field existed: TensorFlow leaves it out of the dict (and the id)
    assert "backend" not in plain.as_dict()
    tf_recipe = Recipe("vgg16-hed", LAYER, 3, size=64, backend="tensorflow")
    jax_recipe = Recipe("vgg16-hed", LAYER, 3, size=64, backend="jax")
    assert jax_recipe.as_dict()["backend"] == "jax"
    assert render_id(tf_recipe, "w") != render_id(jax_recipe, "w")  # caches never mix backends
    assert tf_recipe.batch_key() != jax_recipe.batch_key()
    with pytest.raises(InvalidInput, match="backend must be one of"):
        Recipe("vgg16-hed", LAYER, 3, backend="mxnet")


def test_a_request_carries_an_expression_and_it_is_stored_canonically():
    fields = {"model": "vgg16-hed", "layer": LAYER, "size": 64}
    (recipe,) = recipes_from_request(
        {**fields, "unit": 3, "objective": "channel-0.5*channel(unit=7)"}
    )
    assert recipe.objective == "channel - 0.5 * channel(unit=7)"
    spaced = recipes_from_request({**fields, "unit": 3, "objective": recipe.objective})[0]
    assert render_id(spaced, "w") == render_id(recipe, "w")
    with pytest.raises(InvalidInput, match="takes no position"):
        recipes_from_request({**fields, "unit": 3, "objective": "channel + tv", "position": [1, 1]})
    with pytest.raises(InvalidInput, match="needs a vector"):
        recipes_from_request({**fields, "unit": 3, "objective": "direction - 0.1 * tv"})


def test_arguments_left_out_come_from_the_recipe(hed):
    recipe = Recipe("vgg16-hed", LAYER, 3, size=64, objective="channel - 0.5 * channel(unit=7)")
    bound = recipe.bound_objective(hed)
    assert bound.text() == f"channel({LAYER}, 3) - 0.5 * channel({LAYER}, 7)"
    assert bound.structure() == (
        Recipe("vgg16-hed", LAYER, 9, objective=recipe.objective).bound_objective(hed).structure()
    )
    with pytest.raises(InvalidInput, match="out of range"):
        Recipe("vgg16-hed", LAYER, 3, objective="channel(unit=999)").bound_objective(hed)
    with pytest.raises(NotFound, match="no visualisable layer"):
        Recipe("vgg16-hed", LAYER, 3, objective="channel(no_such_layer, 1)").bound_objective(hed)


def test_the_step_scores_the_weighted_sum_of_its_terms(hed):
    """One forward pass of ``a - 0.5 b + 0.01 tv`` equals the terms scored one by one, for every
    element; several layers in one objective work (one cut with an output per layer)."""
    from wga.vis.render import BatchRender

    def scores(objective: str) -> np.ndarray:
        recipes = [
            Recipe("vgg16-hed", LAYER, u, size=64, seed=u, objective=objective) for u in (2, 5)
        ]
        batch = BatchRender(hed, recipes)
        chunk = batch.chunks[0]
        inputs = batch._step.inputs(chunk.seeds, 0, chunk.elements)
        # a textured image (the start noise is almost grey: most channels are 0 on it)
        shape = tuple(chunk.params.shape)
        params = ops.convert_to_tensor(np.random.default_rng(0).normal(0, 0.3, shape), "float32")
        _, per_element = batch._step.forward(params, inputs)
        return np.asarray(ops.convert_to_numpy(per_element))

    a, b = scores("channel"), scores("channel(unit=7)")
    tv = scores("channel(unit=7) + tv") - b
    together = scores("channel - 0.5 * channel(unit=7) + 0.01 * tv")
    np.testing.assert_allclose(together, a - 0.5 * b + 0.01 * tv, rtol=1e-4, atol=1e-4)
    assert not np.allclose(a, b)  # the units differ: the test can see a wrong term
    other = scores("channel(block2_conv2, 1)")
    both = scores("channel + channel(block2_conv2, 1)")
    np.testing.assert_allclose(both, a + other, rtol=1e-4, atol=1e-4)


def test_every_objective_has_a_row_and_the_syntax_names_them():
    from wga.vis.objective import SCORES

    assert set(SCORES) == set(OBJECTIVES)
    for name in OBJECTIVES:
        assert parse_objective(name).terms[0][1].name == name
