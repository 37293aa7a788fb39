"""Golden outputs: a few tiny renders and a small probe index, stored under ``tests/data/golden``.

Refactorings of the engine, the model surgery or the probe must not change what users get. This
module computes a fixed set of outputs (``compute_renders``, ``compute_probe``) and compares them
with the stored ones with tolerances that hold across CPUs (``assert_images_close``: at most
``IMAGE_LEVELS`` levels apart; ``assert_topk_close``: identical image ids, values within
``VALUE_TOLERANCE``). The comparisons are functions so that a test can run them for another Keras
backend too.

The cases cover what the model surgery decides: a BatchNormalization folded into its convolution
(plain and depthwise), a ReLU layer, an ``Activation("relu")``, a ReLU built into a convolution,
leaky ReLUs (a ``ReLU(negative_slope=…)`` and a ``LeakyReLU``), a class layer with its softmax,
a fixed input size that the engine frees, and the offline VGG16 (HED).

Regenerate (only for a change of outputs that was meant, say why in the commit)::

    .venv/bin/python tests/golden.py --write
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
RENDERS_FILE = GOLDEN_DIR / "renders.npz"
PROBE_FILE = GOLDEN_DIR / "probe.npz"

IMAGE_LEVELS = 2  # largest difference of one pixel channel, in 0 … 255 levels
VALUE_TOLERANCE = 1e-4  # recorded activations, absolute (they are O(1))

TINY_SIDE = 40  # the tiny net's fixed input side: the engine rebuilds it with a free size
TINY_LAYERS = ("conv_relu", "relu", "act_relu", "leaky", "leaky_layer", "merge", "predictions")
PROBE_K = 3
PROBE_IMAGES = 6


def tiny_net() -> Any:
    """A small classifier with every kind of layer the surgery treats differently; its weights
    come from numpy (the same on every backend and every machine)."""
    import keras

    layers = keras.layers
    inputs = keras.Input((TINY_SIDE, TINY_SIDE, 3), name="image")
    a = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_relu")(inputs)
    b = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_bn")(a)
    b = layers.BatchNormalization(name="bn")(b)
    b = layers.ReLU(name="relu")(b)
    c = layers.Conv2D(12, 3, strides=2, padding="same", name="conv_act")(b)
    c = layers.Activation("relu", name="act_relu")(c)
    d = layers.DepthwiseConv2D(3, padding="same", name="depthwise")(c)
    d = layers.BatchNormalization(name="bn_depthwise")(d)
    d = layers.ReLU(negative_slope=0.1, name="leaky")(d)
    e = layers.Conv2D(12, 1, name="mix")(d)
    e = layers.LeakyReLU(negative_slope=0.2, name="leaky_layer")(e)
    f = layers.Concatenate(name="merge")([c, e])
    g = layers.GlobalAveragePooling2D(name="pool")(f)
    outputs = layers.Dense(5, activation="softmax", name="predictions")(g)
    model = keras.Model(inputs, outputs, name="tiny")
    rng = np.random.default_rng(2024)
    for weight in model.weights:
        shape, name = tuple(weight.shape), weight.path.rsplit("/", 1)[-1]
        if name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("beta", "moving_mean", "bias"):
            value = rng.normal(0.0, 0.1, shape)
        else:  # kernels: He-scaled normal over the fan-in
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            if "depthwise" in name:
                fan_in = int(np.prod(shape[:2]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        weight.assign(value.astype("float32"))
    return model


def tiny_loaded() -> Any:
    """The tiny net as a loaded model (a file model, ``tf`` preprocessing)."""
    from wga.models import LoadedModel, ModelSpec

    spec = ModelSpec("tiny", "tiny test net", "tf", TINY_SIDE, "file")
    return LoadedModel(spec, tiny_net(), fingerprint="tiny-golden")


def render_cases() -> dict[str, tuple[str, Any]]:
    """``{case: (model, recipe)}``: 64 px, few steps. Adam's first steps are nearly sign
    steps, so rounding differences between CPUs grow with each step: measured with oneDNN off
    against on, vgg16-hed differs by ≤ 1 level after 4 steps but by 3–4 after 8."""
    from wga.vis.recipe import Recipe

    def tiny(layer: str, unit: int, **options: Any) -> tuple[str, Any]:
        return "tiny", Recipe("tiny", layer, unit, size=64, steps=6, seed=3, **options)

    return {
        "tiny-relu-lucid": tiny("relu", 2),  # BN folded, ReLU layer redirected
        "tiny-leaky-lucid": tiny("leaky", 5),  # depthwise BN folded, leaky ReLU kept
        "tiny-predictions-logit": tiny("predictions", 1, preset="pixel"),  # softmax dropped
        "hed-block2_conv2-lucid": (
            "hed",
            Recipe("vgg16-hed", "block2_conv2", 7, size=64, steps=4, seed=1),
        ),
    }


def compute_renders(models: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each case rendered alone: ``{case: uint8 (64, 64, 3)}``; ``models``: tiny, hed."""
    from wga.vis.render import render

    return {
        case: render(models[model], [recipe])[0] for case, (model, recipe) in render_cases().items()
    }


def make_corpus(folder: Path) -> Path:
    """Six synthetic images of three classes and two sizes."""
    from wga.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(folder, per_class={"train": 2}, side=48, seed=11)


def compute_probe(loaded: Any, work: Path) -> dict[str, np.ndarray]:
    """The tiny net probed at :data:`TINY_LAYERS` over :func:`make_corpus`: the top (and, where
    recorded, bottom) k of every unit, as ``{"<layer>/<sign>_<field>": array}``."""
    from wga.corpus.corpus import open_corpus
    from wga.corpus.probe import run_probe

    corpus = open_corpus(make_corpus(work / "corpus"))
    index = run_probe(
        loaded, corpus, list(TINY_LAYERS), work / "index", k=PROBE_K, batch_size=4, progress=False
    )
    out: dict[str, np.ndarray] = {}
    state = np.load(index.root / "state.npz")
    for position, layer in enumerate(TINY_LAYERS):
        for sign in ("top", "bottom"):
            for field in ("values", "ids", "ys", "xs"):
                key = f"{sign}{position}_{field}"
                if key in state:
                    out[f"{layer}/{sign}_{field}"] = np.asarray(state[key])
    return out


def assert_images_close(
    actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], levels: int = IMAGE_LEVELS
) -> None:
    """Every expected image is there, same shape, and no channel is more than ``levels`` apart."""
    assert sorted(actual) == sorted(expected), "the set of golden renders changed"
    worst = {
        case: int(np.abs(actual[case].astype(int) - expected[case].astype(int)).max())
        for case in expected
        if actual[case].shape == expected[case].shape
    }
    shapes = {case for case in expected if actual[case].shape != expected[case].shape}
    assert not shapes, f"renders of another shape: {sorted(shapes)}"
    assert all(value <= levels for value in worst.values()), (
        f"renders differ from the golden ones by more than {levels} levels: {worst}"
    )


CROSS_BACKEND_MEAN_LEVELS = 4.0  # measured: JAX vs TensorFlow's golden hed render 2.2, tiny ≤ 0.01


def assert_images_close_across_backends(
    actual: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    mean_levels: float = CROSS_BACKEND_MEAN_LEVELS,
) -> None:
    """For renders made on another Keras backend than the golden ones: every image no more than
    ``mean_levels`` apart on average. Adam's first steps are nearly sign steps, so convolution
    rounding that differs between backends (oneDNN, XLA's Eigen) moves a few coefficients the
    other way: single pixels differ more than on one backend, whole images do not."""
    assert sorted(actual) == sorted(expected), "the set of golden renders changed"
    means = {
        case: float(np.abs(actual[case].astype(int) - expected[case].astype(int)).mean())
        for case in expected
    }
    assert all(value <= mean_levels for value in means.values()), (
        f"renders differ from the golden ones by more than {mean_levels} levels on average: {means}"
    )


def assert_topk_close(
    actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], tol: float = VALUE_TOLERANCE
) -> None:
    """The same layers and signs, identical image ids and positions, values within ``tol``."""
    assert sorted(actual) == sorted(expected), (
        f"recorded arrays differ: missing {sorted(set(expected) - set(actual))}, "
        f"new {sorted(set(actual) - set(expected))}"
    )
    for key, value in expected.items():
        if key.endswith("_values"):
            np.testing.assert_allclose(actual[key], value, rtol=0, atol=tol, err_msg=key)
        else:
            np.testing.assert_array_equal(actual[key], value, err_msg=key)


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


def write_golden(work: Path) -> None:
    """Compute and store the golden outputs (run on purpose, never by a test)."""
    from wga.models import ModelRegistry

    tiny = tiny_loaded()
    models = {"tiny": tiny, "hed": ModelRegistry(runs_dir=None).load("vgg16-hed")}
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(RENDERS_FILE, **compute_renders(models))
    np.savez_compressed(PROBE_FILE, **compute_probe(tiny, work))


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/golden.py --write  (rewrites tests/data/golden)")
    from wga.quiet import silence_tensorflow

    silence_tensorflow()
    with tempfile.TemporaryDirectory() as folder:
        write_golden(Path(folder))
    print(f"wrote {RENDERS_FILE} and {PROBE_FILE}")
