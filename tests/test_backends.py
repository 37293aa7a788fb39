"""Same recipe, same images on every Keras backend: TensorFlow in this process against JAX (and
PyTorch, where installed) in a subprocess — one backend per process, as Keras wants.

Measured (64 px, 32 steps, vgg16-hed ``block3_conv3``, 4 units): JAX's images are 3.0 levels
apart from TensorFlow's on average (Adam's first, nearly sign-like steps turn convolution
rounding — oneDNN against XLA's Eigen — into different pixels), PyTorch's 1.1 (oneDNN on both);
the activations agree within 2.1 % for the units that fire and every image's strongest channel
is the same. The bounds below leave room for other CPUs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from backend_agreement import render_here

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parent / "backend_agreement.py"
FIRING = 1.0  # channel mean above which a unit counts as firing (others are ~0 everywhere)


@pytest.fixture(scope="module")
def here() -> dict[str, np.ndarray]:
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("compares other backends against TensorFlow: runs in the TensorFlow pass")
    return render_here()


def rendered_on(backend: str, tmp_path: Path) -> dict[str, np.ndarray]:
    out = tmp_path / f"{backend}.npz"
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, str(SCRIPT), str(out)], env=env, check=True, timeout=900)
    with np.load(out) as arrays:
        return {key: arrays[key] for key in arrays.files}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_recipe_renders_alike_on_every_backend(here, backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install 'wga[{backend}]')")
    there = rendered_on(backend, tmp_path)
    units = here["units"]
    difference = np.abs(here["images"].astype(int) - there["images"].astype(int))
    assert difference.mean() <= 5.0, difference.mean()
    ours, theirs = (r["means"][np.arange(len(units)), units] for r in (here, there))
    firing = ours > FIRING
    assert firing.sum() >= 2  # the test can see a difference
    np.testing.assert_allclose(theirs[firing], ours[firing], rtol=0.04)
    # the same selectivity: each image's strongest channel is the same on both
    np.testing.assert_array_equal(there["means"].argmax(axis=1), here["means"].argmax(axis=1))
