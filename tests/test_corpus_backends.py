"""The corpus side on every Keras backend: a probe without TensorFlow, the same index on TensorFlow
and JAX, Grad-CAM by each backend's autodiff."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
LAYERS = "block1_conv2,block3_pool,block4_conv3"  # pre-activation (bottom), pooled, deep

# Run `python -m wga …` in a process where TensorFlow is not there for anyone: `import tensorflow`
# raises ModuleNotFoundError and importlib.util.find_spec("tensorflow") answers None, exactly as
# on a machine without it (PyTorch's dynamo and wga's backend check both ask find_spec).
WITHOUT_TENSORFLOW = """
import runpy, sys

sys.modules["tensorflow"] = None
sys.argv = ["wga", *sys.argv[1:]]
runpy.run_module("wga", run_name="__main__", alter_sys=True)
"""

needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install 'wga[jax]')"
)


def wga(
    *args: str, backend: str, tensorflow: bool = True, timeout: float = 600, status: int = 0
) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "wga", *args]
    if not tensorflow:
        command = [sys.executable, "-c", WITHOUT_TENSORFLOW, *args]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == status, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(7)
    for index in range(7):
        height, width = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"art{index}.{'jpg' if index % 2 else 'png'}")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def probe(corpus: Path, out: Path, backend: str, tensorflow: bool = True, status: int = 0) -> Path:
    wga(
        *("--backend", backend, "probe", "--model", "vgg16-hed", "--corpus", str(corpus)),
        *("--layers", LAYERS, "--top", "4", "--batch", "3", "--out", str(out), "--no-progress"),
        backend="tensorflow",  # the flag wins over KERAS_BACKEND
        tensorflow=tensorflow,
        status=status,
    )
    return out


@pytest.fixture(scope="module")
def jax_index(corpus, tmp_path_factory) -> Path:
    return probe(corpus, tmp_path_factory.mktemp("jax") / "index", "jax", tensorflow=False)


@needs_jax
def test_probe_and_examples_run_on_jax_without_tensorflow(jax_index):
    result = wga(
        *("examples", "--index", str(jax_index), "--layer", "block1_conv2", "--unit", "5"),
        "--json",
        backend="jax",
        tensorflow=False,
    )
    document = json.loads(result.stdout)
    assert len(document["examples"]) == 4 and len(document["negatives"]) == 4
    assert all(example["file"].startswith("art") for example in document["examples"])
    description = json.loads((jax_index / "probe.json").read_text())
    assert description["skipped"]  # broken.jpg, listed
    assert description["backend"] == "jax"


@needs_jax
def test_render_and_atlas_run_on_jax_without_tensorflow(jax_index, tmp_path):
    renders = tmp_path / "renders"
    wga(
        *("--backend", "jax", "render", "--model", "vgg16-hed", "--layer", "block3_conv3"),
        *("--units", "1", "--size", "64", "--steps", "4", "--out", str(renders)),
        *("--no-progress", "--no-cache"),
        backend="tensorflow",
        tensorflow=False,
    )
    with Image.open(renders / "block3_conv3-1.png") as image:
        assert image.size == (64, 64)
        assert "jax" in json.dumps(image.text)  # the recipe in the PNG names its backend
    atlas = tmp_path / "atlas"
    wga(
        *("--backend", "jax", "atlas", "--index", str(jax_index), "--layer", "block1_conv2"),
        *("--grid", "2", "--icon", "64", "--steps", "4", "--per-image", "8", "--no-whiten"),
        *("--out", str(atlas), "--no-progress"),
        backend="tensorflow",
        tensorflow=False,
    )
    document = json.loads((atlas / "atlas.json").read_text())
    assert document["backend"] == "jax" and document["cells"]
    assert (atlas / "atlas.png").is_file()


@needs_jax
def test_the_backend_flag_checks_the_backend_and_finetune_names_its_extra(tmp_path):
    # TensorFlow "not installed" (the import blocker): the error names the extra and the way out.
    refused = wga("--backend", "tensorflow", "models", backend="jax", tensorflow=False, status=2)
    assert "pip install 'wga[tensorflow]'" in refused.stderr and "--backend jax" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    finetune = ["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    refused = wga("--backend", "jax", *finetune, backend="tensorflow", tensorflow=False, status=2)
    assert refused.stderr.strip().splitlines() == [
        "error: finetune needs TensorFlow (its input pipeline is tf.data), not 'jax': "
        "pip install 'wga[tensorflow]' and run it with --backend tensorflow"
    ]
    if importlib.util.find_spec("torch") is None:
        refused = wga("--backend", "torch", "models", backend="jax", status=2)
        assert "pip install 'wga[torch]'" in refused.stderr


@needs_jax
def test_an_index_resumes_only_on_the_backend_that_made_it(hed, corpus, jax_index):
    from wga.corpus.corpus import open_corpus
    from wga.corpus.probe import run_probe
    from wga.errors import InvalidInput

    with pytest.raises(InvalidInput, match="made on the jax backend: resume it with --backend jax"):
        run_probe(hed, open_corpus(corpus), LAYERS.split(","), jax_index, k=4, batch_size=3)


needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="PyTorch is not installed (pip install 'wga[torch]'; make test does not install it)",
)


@pytest.mark.parametrize(
    "backend", [pytest.param("jax", marks=needs_jax), pytest.param("torch", marks=needs_torch)]
)
def test_tensorflow_and_other_backends_give_the_same_index(
    corpus, jax_index, tmp_path_factory, backend
):
    from wga.corpus.index import ProbeIndex

    tf_folder = tmp_path_factory.getbasetemp() / "tf-index"
    if not tf_folder.exists():
        probe(corpus, tf_folder, "tensorflow")
    tf_index = ProbeIndex.open(tf_folder)
    if backend == "jax":
        other = ProbeIndex.open(jax_index)
    else:
        other = ProbeIndex.open(
            probe(corpus, tmp_path_factory.mktemp(backend) / "i", backend, False)
        )
    assert tf_index.description["backend"] == "tensorflow"
    assert other.description["backend"] == backend
    for layer in LAYERS.split(","):
        for negatives in (False, True):
            ours, theirs = tf_index.top(layer, negatives), other.top(layer, negatives)
            if ours is None:
                assert theirs is None
                continue
            np.testing.assert_array_equal(ours.ids, theirs.ids)  # the same top-k artworks
            scale = max(1.0, float(np.abs(ours.values).max()))
            np.testing.assert_allclose(ours.values, theirs.values, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(
            tf_index.maxima(layer).astype(np.float32),
            other.maxima(layer).astype(np.float32),
            rtol=2e-3,  # float16 storage: one step of rounding may differ
            atol=1e-3,
        )


@pytest.mark.backends
def test_grad_cam_is_the_closed_form_of_a_pooled_dense_head(tmp_path, corpus):
    """conv → global average pool → Dense: ∂logit/∂A_c is kernel[c, u] / (H·W) at every position,
    so Grad-CAM is ReLU(Σ_c kernel[c, u] · A_c / (H·W)), whatever the backend's autodiff."""
    import keras
    from keras import ops

    from wga.corpus.corpus import open_corpus
    from wga.corpus.probe import run_probe
    from wga.corpus.views import grad_cam, model_input
    from wga.models import ModelRegistry

    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, 3))
    maps = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv")(
        inputs
    )
    pooled = keras.layers.GlobalAveragePooling2D()(maps)
    logits = keras.layers.Dense(3, activation="softmax", name="predictions")(pooled)
    keras.Model(inputs, logits).save(run / "model.keras")
    (run / "model.json").write_text(json.dumps({"preprocessing": "tf", "input_size": 64}))
    loaded = ModelRegistry(None).load(str(run / "model.keras"))
    index = run_probe(
        loaded, open_corpus(corpus), ["predictions"], tmp_path / "index", k=2, progress=False
    )
    kernel = loaded.model.get_layer("predictions").get_weights()[0]
    body = keras.Model(loaded.model.inputs[0], loaded.model.get_layer("conv").output)
    for unit in range(3):
        for image_id in (0, 3):
            cam = grad_cam(loaded, index, "predictions", unit, image_id)
            batch, shape, _ = model_input(open_corpus(corpus).path(image_id), index_rule(index))
            features = ops.convert_to_numpy(body(batch))[0]
            height, width = features.shape[:2]
            expected = np.maximum(features @ kernel[:, unit] / (height * width), 0)
            rows, cols = cam.shape
            assert (rows, cols) == (-(-shape[0] * height // 64), -(-shape[1] * width // 64))
            np.testing.assert_allclose(cam, expected[:rows, :cols], rtol=1e-4, atol=1e-6)


def index_rule(index):
    from wga.corpus.feed import FeedRule

    return FeedRule(index.side, index.description["feed"]["preprocessing"])


@needs_jax
@pytest.mark.gateway
def test_serve_renders_on_jax_without_tensorflow(tmp_path):
    """`wga --backend jax serve` with TensorFlow absent from the server *and* its kernel (a
    sitecustomize on PYTHONPATH, which the gateway passes on): status names the backend, a
    render is made."""
    import requests
    from serving import kill_tree, serve_environment

    from wga.serve.gateway import free_port

    blocker = tmp_path / "no-tensorflow"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text('import sys\nsys.modules["tensorflow"] = None\n')
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = serve_environment(KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env["PYTHONPATH"]])
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "wga", "--backend", "jax", "serve", "--port", str(port)],
            cwd=home, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        status = None
        while status is None and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                response = requests.get(url + "/api/status", timeout=10)
                status = response.json() if response.ok else None
            except requests.RequestException:
                time.sleep(0.5)
        assert status is not None, log.read_text()[-3000:]
        assert status["backend"] == "jax"
        body = {"model": "vgg16-hed", "layer": "block3_conv3", "unit": 2, "size": 64, "steps": 4}
        render = requests.post(url + "/api/renders", json=body, timeout=60).json()
        while (view := requests.get(f"{url}/api/renders/{render['id']}", timeout=60).json())[
            "status"
        ] in ("queued", "running") and time.monotonic() < deadline + 300:
            time.sleep(1)
        assert view["status"] == "done", (view, log.read_text()[-3000:])
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            kill_tree(server.pid)
            server.wait(30)
