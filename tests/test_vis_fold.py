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
from wga.vis.render import Recipe, render

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


def test_folded_render_gives_the_same_images():
    spec = APPLICATIONS[0]  # InceptionV3: 94 BNs
    model = random_model(spec)
    # two wrappers of one Keras model: separate graph and step caches (keyed by the wrapper)
    plain, folded = LoadedModel(spec, model, "plain"), LoadedModel(spec, model, "folded")
    feature_graph(plain, "mixed2", fold=False)
    assert batchnorms(feature_graph(folded, "mixed2", fold=True).model) == 0
    recipes = [Recipe(spec.name, "mixed2", unit, size=96, steps=8, seed=unit) for unit in range(8)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WGA_FOLD_BN", "0")
        expected = render(plain, recipes).astype(int)
    got = render(folded, recipes).astype(int)
    assert np.abs(got - expected).max() <= 3
    assert expected.std() > 1  # the images moved away from grey: the test can see a difference
