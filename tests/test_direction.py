"""Direction objectives' math and the content-addressed vector store (no model, fast)."""

from __future__ import annotations

import numpy as np
import pytest
from keras import ops

from wga.errors import InvalidInput, NotFound
from wga.vis.direction import (
    COSINE_FLOOR,
    at_positions,
    cosine_weighted_dot,
    direction_at,
    direction_map,
    neuron_at,
)
from wga.vis.vectors import VectorStore, as_direction, vector_hash, whiten, whitening_matrix

pytestmark = pytest.mark.backends  # the objectives run on keras.ops: TensorFlow and JAX
tensor, numpy_of = ops.convert_to_tensor, ops.convert_to_numpy


def numpy_score(acts: np.ndarray, vector: np.ndarray, power: float) -> np.ndarray:
    unit = vector / np.linalg.norm(vector)
    dot = acts @ unit
    cos = dot / (np.linalg.norm(acts, axis=-1) + 1e-4)
    return dot * np.maximum(cos, COSINE_FLOOR) ** power


@pytest.fixture
def features() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 2, (3, 6, 5, 4)).astype("float32")


def test_cosine_weighted_dot_matches_numpy_and_rewards_pointing_along_v():
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(10, 8)).astype("float32")
    vector = rng.normal(size=8).astype("float32")
    unit = vector / np.linalg.norm(vector)
    got = numpy_of(cosine_weighted_dot(tensor(acts), tensor(unit), 2.0))
    np.testing.assert_allclose(got, numpy_score(acts, vector, 2.0), rtol=1e-5, atol=1e-6)
    # same dot product, but one points along v: the cosine factor prefers it
    along = 2.0 * unit
    sideways = along + 5.0 * np.linalg.svd(unit[None])[2][1]  # + an orthogonal component
    both = cosine_weighted_dot(tensor(np.stack([along, sideways])), tensor(unit), 2.0)
    assert both[0] > both[1]


def test_one_hot_direction_with_power_zero_is_the_channel_and_the_neuron(features):
    batch, height, width, channels = features.shape
    units = np.array([0, 3, 2])
    vectors = np.eye(channels, dtype="float32")[units]
    whole = numpy_of(direction_map(tensor(features), tensor(vectors), power=0.0))
    expected_mean = features[np.arange(batch), :, :, units].mean(axis=(1, 2))
    np.testing.assert_allclose(whole, expected_mean, rtol=1e-6)
    border = numpy_of(direction_map(tensor(features), tensor(vectors), 0.0, border=1))
    inner = features[:, 1:-1, 1:-1]
    expected_inner = inner[np.arange(batch), :, :, units].mean(axis=(1, 2))
    np.testing.assert_allclose(border, expected_inner, rtol=1e-6)
    centre = np.full((batch, 2), 0.5, "float32")
    at = direction_at(tensor(features), tensor(vectors), tensor(centre), 0.0)
    expected = features[np.arange(batch), height // 2, width // 2, units]
    np.testing.assert_allclose(numpy_of(at), expected)
    neuron = neuron_at(tensor(features), tensor(np.asarray(units, np.int32)), tensor(centre))
    np.testing.assert_allclose(numpy_of(neuron), expected)


def test_each_element_reads_its_own_position(features):
    positions = np.array([[0.0, 0.0], [0.99, 0.99], [(2 + 0.5) / 6, (1 + 0.5) / 5]], "float32")
    got = numpy_of(at_positions(tensor(features), tensor(positions)))
    np.testing.assert_array_equal(got[0], features[0, 0, 0])
    np.testing.assert_array_equal(got[1], features[1, 5, 4])
    np.testing.assert_array_equal(got[2], features[2, 2, 1])


def test_whitening_divides_out_correlations():
    rng = np.random.default_rng(2)
    mixing = np.array([[1.0, 0.9, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 1.0]])
    samples = rng.normal(size=(5000, 3)) @ mixing
    matrix = whitening_matrix(samples)
    correlation = samples.T @ samples / len(samples)
    np.testing.assert_allclose(matrix @ correlation, np.eye(3), atol=0.02)
    direction = whiten(np.array([1.0, 1.0, 0.0]), matrix)
    assert abs(np.linalg.norm(direction) - 1.0) < 1e-6
    # a dead unit (all zeros) leaves the matrix finite
    dead = np.concatenate([samples, np.zeros((len(samples), 1))], axis=1)
    assert np.all(np.isfinite(whitening_matrix(dead)))


def test_vector_store_is_content_addressed(tmp_path):
    store = VectorStore(tmp_path / "vectors")
    vector = np.array([0.5, -1.0, 2.0])
    reference = store.put(vector)
    assert reference == vector_hash(vector) == store.put([0.5, -1.0, 2.0])
    assert reference in store and len(list(store.directory.glob("*.npy"))) == 1
    np.testing.assert_array_equal(store.get(reference), vector.astype("float32"))
    assert store.put([0.5, -1.0, 2.001]) != reference
    np.save(tmp_path / "v.npy", vector.reshape(1, 3))
    assert store.load_file(tmp_path / "v.npy") == reference
    copy = VectorStore(tmp_path / "other")
    assert copy.import_from(store) == 2 and copy.import_from(store) == 0
    with pytest.raises(NotFound, match="send it inline"):
        store.get("0" * 64)
    for bad in ([], [[1.0, 2.0], [3.0, 4.0]], [0.0, 0.0], [1.0, float("nan")], "abc"):
        with pytest.raises(InvalidInput):
            as_direction(bad)
    with pytest.raises(InvalidInput, match="hex"):
        store.get("../etc/passwd")


def test_render_cli_takes_a_direction_or_units_never_both(tmp_path, capsys):
    from wga.cli import main

    np.save(tmp_path / "v.npy", np.ones(3, "float32"))
    base = ["render", "--model", "vgg16-hed", "--layer", "block1_conv1", "--out", str(tmp_path)]
    assert main([*base, "--units", "0", "--direction", str(tmp_path / "v.npy")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(base) == 2
    assert "--direction FILE.npy" in capsys.readouterr().err
    assert main([*base, "--units", "0", "--position", "3;4"]) == 2
    assert "Y,X" in capsys.readouterr().err
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    assert main([*base, "--direction", str(tmp_path / "bad.npy")]) == 2
    assert "cannot read the direction file" in capsys.readouterr().err


def test_positions_are_fractions_of_the_layers_map_at_the_recipes_size(hed, tmp_path):
    from wga.vis.recipe import Recipe
    from wga.vis.step import element_inputs

    def element_positions(loaded, recipes):
        objectives = [recipe.bound_objective(loaded) for recipe in recipes]
        return element_inputs(loaded, objectives, recipes[0].size)["positions0"]

    def element_vectors(loaded, recipes, store):
        objectives = [recipe.bound_objective(loaded) for recipe in recipes]
        return element_inputs(loaded, objectives, recipes[0].size, store)["vectors0"]

    at = Recipe("vgg16-hed", "block2_conv2", 5, size=64, objective="neuron", position=(2, 30))
    centre = Recipe("vgg16-hed", "block2_conv2", 5, size=64, objective="neuron")
    positions = element_positions(hed, [at, centre])  # block2_conv2: 32 × 32 at 64 px
    np.testing.assert_allclose(positions, [[2.5 / 32, 30.5 / 32], [0.5, 0.5]])
    outside = Recipe("vgg16-hed", "block2_conv2", 5, size=64, objective="neuron", position=(0, 32))
    with pytest.raises(InvalidInput, match="outside"):
        element_positions(hed, [outside])
    store = VectorStore(tmp_path)
    wrong = store.put(np.ones(3))
    recipe = Recipe("vgg16-hed", "block2_conv2", 0, size=64, objective="direction", vector=wrong)
    with pytest.raises(InvalidInput, match="128 channels"):
        element_vectors(hed, [recipe], store)
    right = Recipe(
        "vgg16-hed", "block2_conv2", 0, objective="direction", vector=store.put(np.ones(128))
    )
    np.testing.assert_allclose(np.linalg.norm(element_vectors(hed, [right], store), axis=1), 1.0)
