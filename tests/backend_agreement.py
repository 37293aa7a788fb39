"""Render a few recipes on the running Keras backend and save images and activations (``.npz``).

Run as ``KERAS_BACKEND=jax python tests/backend_agreement.py OUT.npz`` by
``tests/test_backends.py``, which compares backends: one Keras backend per process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

LAYER = "block3_conv3"
UNITS = (0, 2, 5, 9)
STEPS = 32
SIZE = 64


def render_here() -> dict[str, np.ndarray]:
    """The recipes rendered on this process's backend; ``activation`` is each image's channel
    mean, measured on the rendered uint8 image (the same measure for every backend)."""
    from keras import ops

    from wga.models import ModelRegistry, preprocess
    from wga.vis.features import feature_graph
    from wga.vis.render import Recipe, render

    hed = ModelRegistry(runs_dir=None).load("vgg16-hed")
    recipes = [Recipe("vgg16-hed", LAYER, u, size=SIZE, steps=STEPS, seed=u) for u in UNITS]
    images = render(hed, recipes)
    inputs = preprocess(ops.convert_to_tensor(images.astype("float32") / 255.0), "caffe")
    features = np.asarray(ops.convert_to_numpy(feature_graph(hed, LAYER).model(inputs)))
    means = features.mean(axis=(1, 2))  # (images, channels)
    return {"images": images, "means": means, "units": np.asarray(UNITS)}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    np.savez(sys.argv[1], **render_here())
