"""BatchNormalization folding (wga.vis.features): exact up to rounding, for every registry model.

Each registry architecture is built with random weights (``weights=None``: nothing to download)
and random BN statistics (Keras' fresh ones — mean 0, variance 1 — would make the fold trivial),
then cut at its last spatial layer, so every BN of the network is on the path. 96 px inputs keep
it cheap (InceptionV3 needs ≥ 75 px). The render test checks the images, not only activations.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from wga.models import BUILTIN_MODELS, LoadedModel
from wga.vis.features import feature_graph
from wga.vis.render import BatchRender, EngineOptions, Recipe

APPLICATIONS = [spec for spec in BUILTIN_MODELS if spec.source == "keras-applications"]


def random_model(spec, seed: int = 0) -> keras.Model:
    model = getattr(keras.applications, spec.application)(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.5, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.3, n))
    return model


def batchnorms(model: keras.Model) -> int:
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


@pytest.mark.slow
@pytest.mark.parametrize("spec", APPLICATIONS, ids=[spec.name for spec in APPLICATIONS])
def test_folded_graph_gives_the_same_activations_for_every_registry_model(spec):
    loaded = LoadedModel(spec, random_model(spec), "random-weights")
    layer = [info for info in loaded.layers() if info.spatial][-1].name
    plain = feature_graph(loaded, layer, fold=False).model
    folded = feature_graph(loaded, layer, fold=True).model
    x = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 96, 96, 3)).astype("float32")
    expected, got = plain(x).numpy(), folded(x).numpy()
    assert np.abs(expected).max() > 0
    assert np.abs(got - expected).max() / np.abs(expected).max() <= 1e-4
    before, after = batchnorms(plain), batchnorms(folded)
    assert after <= before
    if spec.name != "densenet121":  # DenseNet's BNs after concatenations cannot fold
        assert before == 0 or after == 0, (before, after)


def hed_with_batchnorm(hed: LoadedModel, seed: int = 0) -> LoadedModel:
    """vgg16-hed with a BN between each convolution and its ReLU, close to the identity.

    Renders on random-weight networks are chaotic (Adam's first steps move every Fourier
    coefficient by ± the rate, so a coefficient whose gradient is ~0 flips on a rounding
    difference, and random InceptionV3 amplifies that to tens of levels in 8 steps), so the
    image test needs trained convolutions: HED's, with BNs whose statistics are random but whose
    affine map stays near the identity (scale 0.8…1.2, shift ±0.1 of the channel's spread).
    """
    rng = np.random.default_rng(seed)
    source = hed.spatial_model()
    inputs = keras.Input((None, None, 3))
    x = inputs
    assign = []
    for layer in source.layers[1:]:
        if isinstance(layer, keras.layers.Conv2D):
            config = {**layer.get_config(), "activation": "linear"}
            conv = keras.layers.Conv2D.from_config(config)
            bn = keras.layers.BatchNormalization(name=f"{layer.name}_bn")
            x = keras.layers.Activation("relu", name=f"{layer.name}_relu")(bn(conv(x)))
            assign.append((conv, bn, layer))
        else:
            x = type(layer).from_config(layer.get_config())(x)
    model = keras.Model(inputs, x)
    for conv, bn, original in assign:
        conv.set_weights(original.get_weights())
        n = conv.filters
        mean, variance = rng.normal(0.0, 1.0, n), rng.uniform(0.5, 4.0, n)
        spread = np.sqrt(variance + bn.epsilon)
        factor = rng.uniform(0.8, 1.2, n)
        bn.set_weights([spread * factor, mean * factor + rng.normal(0, 0.1, n), mean, variance])
    return LoadedModel(hed.spec, model, "hed-with-bn")


@pytest.mark.parametrize(("preset", "steps"), [("pixel", 8), ("lucid", 4)])
def test_folded_render_gives_the_same_images(hed, preset, steps):
    with_bn = hed_with_batchnorm(hed)
    # two wrappers of one Keras model: separate graph and step caches (keyed by the wrapper)
    plain = LoadedModel(with_bn.spec, with_bn.model, "plain")
    layer = "block3_conv3_relu"
    assert batchnorms(feature_graph(plain, layer, fold=False).model) == 7
    assert batchnorms(feature_graph(with_bn, layer, fold=True).model) == 0
    # units 1, 4, 7 are dead here: their images come from the warm-up's redirected gradients,
    # where any rounding difference decides; the eight below are alive
    units = [0, 2, 3, 5, 8, 9, 10, 11]
    recipes = [
        Recipe("vgg16-hed", layer, unit, size=64, preset=preset, steps=steps, seed=unit)
        for unit in units
    ]
    before = BatchRender(plain, recipes, options=EngineOptions(fold_batchnorm=False))
    before.run(before.total_steps)
    after = BatchRender(with_bn, recipes)
    after.run(after.total_steps)
    expected, got = before.images().astype(int), after.images().astype(int)
    difference = np.abs(got - expected)
    if preset == "pixel":  # pixels: a rounding difference stays where it is (a handful of
        # pixels, where a gradient near 0 flips Adam's first, sign-like steps: measured 14 of
        # 98,304 values above 3 levels, mean 0.03)
        assert np.percentile(difference, 99.9) <= 3 and difference.mean() <= 0.1, difference.max()
    else:
        # Fourier coefficients: Adam's first steps move each by ± the rate, so one whose gradient
        # is ~0 flips on a rounding difference and the flip spreads over the whole image; a few
        # pixels move by more than a few levels, the images as a whole do not (measured at rate
        # 0.1: mean 0.46, 99th percentile 4 after 4 steps)
        assert difference.mean() <= 1.0 and np.percentile(difference, 99) <= 6, difference.max()
    np.testing.assert_allclose(after.scores, before.scores, rtol=0.05, atol=0.05)
    assert expected.std() > 5  # the images moved away from grey: the test can see a difference
