"""The model registry: names, availability offline, layers, preprocessing, file models."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from wga.errors import InvalidInput, NotFound
from wga.models import BUILTIN_MODELS, ModelRegistry, preprocess


def test_registry_lists_every_design_model():
    names = [spec.name for spec in BUILTIN_MODELS]
    for expected in (
        "inceptionv3",
        "vgg16",
        "vgg19",
        "resnet50",
        "xception",
        "mobilenetv2",
        "densenet121",
        "efficientnetb0",
        "vgg16-hed",
    ):
        assert expected in names


def test_offline_model_is_available_and_imagenet_answers_quickly(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty weights cache
    started = time.monotonic()
    hed = registry.availability("vgg16-hed")
    inception = registry.availability("inceptionv3")
    assert time.monotonic() - started < 10
    assert hed.available
    assert inception.reason  # available (online) or a reason that says what to do
    if not inception.available:
        assert "inception_v3_weights" in inception.reason and "vgg16-hed" in inception.reason


def test_unknown_model_suggests_close_names(registry):
    with pytest.raises(NotFound, match=r"did you mean .*vgg16"):
        registry.spec("vgg61")


def test_hed_model_has_trained_vgg16_conv_layers(hed):
    names = [info.name for info in hed.layers()]
    assert names[0] == "block1_conv1" and "block5_conv3" in names
    assert hed.layer("block4_conv3").units == 512
    kernel = hed.model.get_layer("block1_conv1").get_weights()[0]
    assert float(np.abs(kernel).mean()) > 1e-3  # trained weights, not zeros
    assert len(hed.fingerprint) == 16


def test_unknown_layer_and_unit_out_of_range_say_what_to_do(hed):
    with pytest.raises(NotFound, match="block5_conv3"):
        hed.layer("block5_conv33")
    with pytest.raises(InvalidInput, match="0 … 63"):
        hed.check_unit("block1_conv1", 64)


def test_hed_activations_respond_to_structure(hed):
    """A trained edge detector answers an edge far more than a flat grey image."""
    flat = np.full((1, 64, 64, 3), 0.5, dtype="float32")
    edge = flat.copy()
    edge[:, :, 32:, :] = 1.0
    import keras

    probe = keras.Model(hed.model.inputs, hed.model.get_layer("block3_conv3").output)
    flat_response = float(np.abs(probe(preprocess(flat, "caffe"))).mean())
    edge_response = float(np.abs(probe(preprocess(edge, "caffe"))).mean())
    assert edge_response > flat_response * 1.2


@pytest.mark.parametrize(
    ("mode", "white"),
    [("tf", [1, 1, 1]), ("raw", [255, 255, 255]), ("caffe", [151.061, 138.221, 131.32])],
)
def test_preprocess_maps_white_to_each_models_range(mode, white):
    out = np.asarray(preprocess(np.ones((1, 1, 1, 3), dtype="float32"), mode))
    np.testing.assert_allclose(out[0, 0, 0], white, rtol=1e-4)


def test_run_folder_is_a_model_with_its_preprocessing_and_classes(tmp_path):
    import keras

    run = tmp_path / "runs" / "portraits"
    run.mkdir(parents=True)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    keras.Model(inputs, outputs).save(run / "model.keras")
    (run / "model.json").write_text(
        json.dumps({"base_model": "vgg16-hed", "preprocessing": "caffe", "input_size": 224})
    )
    (run / "classes.json").write_text(json.dumps(["portrait", "landscape", "still-life"]))

    registry = ModelRegistry(tmp_path / "runs")
    assert "portraits" in registry.names()
    loaded = registry.load("portraits")
    assert loaded.spec.preprocessing == "caffe"
    assert loaded.class_names == ["portrait", "landscape", "still-life"]
    assert loaded.class_layer().name == "predictions"
    assert registry.load(str(run)).fingerprint == loaded.fingerprint


@pytest.mark.slow
def test_free_size_inception_keeps_the_weights_of_auto_named_layers():
    """A second InceptionV3 in one process gets other layer names (conv2d_94 …); the free-size
    variant must still receive every weight of the loaded model."""
    import keras

    from wga.models import LoadedModel

    spec = next(spec for spec in BUILTIN_MODELS if spec.name == "inceptionv3")
    full = keras.applications.InceptionV3(weights=None, include_top=True)
    free = LoadedModel(spec, full, "test").spatial_model()
    assert free is not None and free.inputs[0].shape[1] is None
    convs = [layer for layer in free.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and convs[0].name != "conv2d"  # the names really differ
    for layer, original in zip(free.layers, full.layers, strict=False):
        for mine, theirs in zip(layer.get_weights(), original.get_weights(), strict=True):
            np.testing.assert_array_equal(mine, theirs)
