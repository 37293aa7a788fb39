"""Model surgery (wga.models.surgery): one ReLU rule for the engine and the probe, taps that give
the values they name, BN folding, cuts and free input sizes — on the tiny net of the golden test."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from golden import TINY_SIDE, tiny_loaded

from wga.corpus.probe import build_probe_model
from wga.models.surgery import (
    cut,
    free_input_size_copy,
    has_builtin_relu,
    is_relu,
    rewire,
)
from wga.vis.features import feature_graph
from wga.vis.objective import RedirectedReLU

layers = keras.layers


pytestmark = pytest.mark.backends  # run again on JAX by make test


@pytest.fixture(scope="module")
def tiny():
    return tiny_loaded()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(4).uniform(-1, 1, (2, TINY_SIDE, TINY_SIDE, 3)).astype("float32")


@pytest.mark.parametrize(
    ("layer", "relu", "builtin"),
    [
        (layers.ReLU(), True, False),
        (layers.Activation("relu"), True, False),
        (layers.Conv2D(2, 1, activation="relu"), False, True),
        (layers.Dense(2, activation="relu"), False, True),
        (layers.ReLU(negative_slope=0.1), False, False),  # leaky
        (layers.LeakyReLU(negative_slope=0.2), False, False),
        (layers.ReLU(threshold=0.5), False, False),
        (layers.ReLU(max_value=6.0), False, False),  # ReLU6 (MobileNetV2)
        (layers.Activation("leaky_relu"), False, False),
        (layers.Activation("relu6"), False, False),
        (layers.Conv2D(2, 1, activation="leaky_relu"), False, False),
        (layers.Conv2D(2, 1), False, False),
        (layers.Dense(2, activation="softmax"), False, False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, layers.Layer) else str(value),
)
def test_a_relu_is_exactly_max_x_0(layer, relu, builtin):
    assert is_relu(layer) is relu
    assert has_builtin_relu(layer) is builtin


def test_the_engine_and_the_probe_agree_on_which_layers_are_relus(tiny):
    """A layer's ReLU is redirected in renders exactly when the probe records its pre-activation
    (and bottom-k); leaky ReLUs are neither."""
    graph = feature_graph(tiny, "merge", fold=False).model
    redirected = {
        layer.name.removesuffix("_redirected")
        for layer in graph.layers
        if isinstance(layer, RedirectedReLU)
    }
    assert redirected == {"conv_relu", "relu", "act_relu"}
    kept = {layer.name for layer in graph.layers}
    assert {"leaky", "leaky_layer"} <= kept  # their own forward and gradient
    names = ["conv_relu", "relu", "act_relu", "leaky", "leaky_layer", "merge", "predictions"]
    _, plan = build_probe_model(tiny, names)
    values = {p.name: p.values for p in plan}
    assert values == {
        "conv_relu": "pre-activation",
        "relu": "pre-activation",
        "act_relu": "pre-activation",
        "leaky": "output",
        "leaky_layer": "output",
        "merge": "output",
        "predictions": "logits",
    }
    for name in names[:-1]:
        assert (name in redirected) == (values[name] == "pre-activation"), name
    assert {p.name for p in plan if p.bottom} == {"conv_relu", "relu", "act_relu", "predictions"}


def test_taps_give_the_values_they_name(tiny, images):
    model = tiny.model
    taps = {"conv_relu": "preactivation", "relu": "preactivation", "leaky": "output"}
    rewired = rewire(model, taps=taps, logits=["predictions"])
    values = cut(rewired.model, [rewired.taps[name] for name in taps] + rewired.model.outputs)
    conv_pre, relu_pre, leaky_out, logits = (np.asarray(v) for v in values(images))
    original = cut(model, ["conv_relu", "bn", "leaky"])(images)
    conv_out, bn_out, leaky_expected = (np.asarray(v) for v in original)
    assert conv_pre.min() < 0  # really before the ReLU
    np.testing.assert_allclose(np.maximum(conv_pre, 0), conv_out, atol=1e-5)
    np.testing.assert_allclose(relu_pre, bn_out, atol=1e-5)  # a ReLU layer's input
    np.testing.assert_allclose(leaky_out, leaky_expected, atol=1e-5)
    probabilities = np.asarray(keras.ops.softmax(logits))
    np.testing.assert_allclose(probabilities, np.asarray(model(images)), atol=1e-5)
    # every weight shared: only the split layers got (copied) twins
    assert rewired.model.get_layer("conv_bn") is model.get_layer("conv_bn")
    assert rewired.model.get_layer("conv_relu_linear") is not model.get_layer("conv_relu")


def test_relus_are_replaced_by_what_the_caller_builds(tiny, images):
    built = []

    def relu(name):
        built.append(name)
        return layers.Activation("relu", name=f"{name}_mine")

    rewired = rewire(tiny.model, relu=relu)
    assert sorted(built) == ["act_relu", "conv_relu", "relu"]
    np.testing.assert_allclose(
        np.asarray(rewired.model(images)), np.asarray(tiny.model(images)), atol=1e-5
    )


def test_batchnorm_folds_into_its_convolution_unless_tapped(tiny, images):
    model = tiny.model

    def batchnorms(graph):
        return sorted(la.name for la in graph.layers if isinstance(la, layers.BatchNormalization))

    folded = rewire(model, fold_batchnorm=True).model
    assert batchnorms(folded) == []
    expected = np.asarray(model(images))
    np.testing.assert_allclose(np.asarray(folded(images)), expected, rtol=1e-4, atol=1e-6)
    kept = rewire(model, fold_batchnorm=True, taps={"conv_bn": "output"}).model
    assert batchnorms(kept) == ["bn"]  # the convolution's own output is wanted
    with pytest.raises(ValueError, match="no layers"):
        rewire(model, taps={"nowhere": "output"})


def test_a_fixed_input_size_is_freed_with_the_same_weights(tiny, images):
    free = free_input_size_copy(tiny.model)
    assert tuple(free.inputs[0].shape)[1:3] == (None, None)
    np.testing.assert_allclose(np.asarray(free(images)), np.asarray(tiny.model(images)), atol=1e-6)
    assert np.asarray(free(np.zeros((1, 64, 48, 3), "float32"))).shape == (1, 5)
    assert free_input_size_copy(free) is free
