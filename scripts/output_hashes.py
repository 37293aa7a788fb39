"""Hashes of what users get — images, a probe index, an atlas — to prove a refactoring changed none.

Run before and after a change, on the same machine, and compare the two JSON files::

    .venv/bin/python scripts/output_hashes.py --out before.json
    ... change ...
    .venv/bin/python scripts/output_hashes.py --out after.json --compare before.json

Renders are hashed as decoded pixels (uint8 arrays), never as PNG bytes (a PNG's text chunks may
legitimately gain fields); index and atlas arrays as their raw bytes with dtype and shape; JSON
files with time stamps and the work folder's path taken out. The set covers vgg16-hed (layers,
objectives, presets: lucid, preview, offert2018, pixel; a batch, variations, a direction), the
tiny test net of ``tests/golden.py`` (BN folding, ReLU layers, leaky ReLUs, a class layer, a
fixed input size), a random-weight MobileNetV2 (depthwise BN folding, ReLU6), the engine's
speed switches off, a probe index of both nets, the artwork views, and a tiny atlas.

Exact equality holds on one machine (same CPU, same libraries); across machines use the
tolerant golden test (``tests/test_golden.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny net of the golden test

TIME_KEYS = {"created", "finished", "started", "updated", "seconds", "elapsed", "wga"}


def array_hash(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def json_hash(document: Any, work: Path) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in TIME_KEYS}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str):
            return value.replace(str(work.resolve()), "<work>").replace(str(work), "<work>")
        return value

    text = json.dumps(clean(document), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def render_switched(loaded: Any, recipes: list, *, fold: bool, crop: bool) -> np.ndarray:
    """A render with the engine's speed switches set: explicit options where the engine takes
    them, else the environment variables the engine read before they became values."""
    from wga.vis import render as engine

    options_type = getattr(engine, "EngineOptions", None)
    if options_type is not None:
        options = options_type(fold_batchnorm=fold, crop_padding=crop)
        return engine.render(loaded, recipes, options=options)
    with environment(WGA_FOLD_BN="1" if fold else "0", WGA_CROP_PAD="1" if crop else "0"):
        return engine.render(loaded, recipes)


def render_hashes(hed: Any, tiny: Any, mobilenet: Any, vectors: Any) -> dict[str, str]:
    from wga.vis.render import BatchRender, Recipe, render, render_variations

    out: dict[str, str] = {}

    def put(name: str, images: np.ndarray) -> None:
        for position, image in enumerate(images):
            out[f"render/{name}/{position}"] = array_hash(image)

    h = "vgg16-hed"
    put("hed-b3c3-lucid", render(hed, [Recipe(h, "block3_conv3", 5, size=64, steps=16)]))
    put(
        "hed-b4c1-preview",
        render(hed, [Recipe(h, "block4_conv1", 3, size=64, steps=12, preset="preview")]),
    )
    put(
        "hed-b2c2-offert2018",
        render(hed, [Recipe(h, "block2_conv2", 9, size=96, steps=10, preset="offert2018")]),
    )
    put(
        "hed-b1c2-pixel",
        render(hed, [Recipe(h, "block1_conv2", 4, size=64, steps=8, preset="pixel", seed=2)]),
    )
    put(
        "hed-b3c1-batch",
        render(hed, [Recipe(h, "block3_conv1", unit, size=64, steps=8) for unit in (0, 7, 30)]),
    )
    put(
        "hed-b3c2-neuron",
        render(
            hed,
            [Recipe(h, "block3_conv2", 11, size=64, steps=8, objective="neuron", position=(3, 5))],
        ),
    )
    put(
        "hed-pool-octaves",
        render(hed, [Recipe(h, "block2_pool", 1, size=320, steps=4, seed=4)]),
    )
    put(
        "hed-b3c3-variations",
        render_variations(hed, Recipe(h, "block3_conv3", 2, size=64, steps=8), 2),
    )
    direction = vectors.put(np.random.default_rng(5).normal(size=128))
    recipe = Recipe(h, "block2_conv2", 0, size=64, steps=8, objective="direction", vector=direction)
    batch = BatchRender(hed, [recipe], vectors=vectors)
    batch.run(batch.total_steps)
    put("hed-b2c2-direction", batch.images())
    put(
        "hed-b3c3-crop-off",
        render_switched(
            hed, [Recipe(h, "block3_conv3", 5, size=64, steps=16)], fold=True, crop=False
        ),
    )

    for layer, unit, preset in (
        ("relu", 2, "lucid"),
        ("act_relu", 4, "lucid"),
        ("conv_relu", 1, "lucid"),
        ("leaky", 5, "lucid"),
        ("leaky_layer", 3, "lucid"),
        ("merge", 13, "preview"),
        ("predictions", 1, "pixel"),
        ("predictions", 4, "lucid"),
    ):
        recipe = Recipe("tiny", layer, unit, size=64, steps=8, seed=3, preset=preset)
        put(f"tiny-{layer}-{unit}-{preset}", render(tiny, [recipe]))
    for fold, crop in ((False, True), (False, False)):
        recipe = Recipe("tiny", "relu", 2, size=64, steps=8, seed=3)
        put(
            f"tiny-relu-fold{int(fold)}-crop{int(crop)}",
            render_switched(tiny, [recipe], fold=fold, crop=crop),
        )

    m = "mobilenetv2"
    put(
        "mobilenet-b3-relu6",
        render(mobilenet, [Recipe(m, "block_3_expand_relu", 2, size=64, steps=6)]),
    )
    put(
        "mobilenet-b3-project",
        render(mobilenet, [Recipe(m, "block_3_project", 5, size=64, steps=6)]),
    )
    put(
        "mobilenet-b3-fold-off",
        render_switched(
            mobilenet,
            [Recipe(m, "block_3_expand_relu", 2, size=64, steps=6)],
            fold=False,
            crop=True,
        ),
    )
    return out


def graph_hashes(hed: Any, tiny: Any, mobilenet: Any) -> dict[str, str]:
    """The engine's truncated, re-wired graphs (BN folded or not) on a fixed input: the forward
    values and the gradient of their sum with redirected ReLUs (the warm-up), exact floats."""
    import tensorflow as tf

    from wga.vis.features import feature_graph
    from wga.vis.objective import redirect_relu_gradients

    out: dict[str, str] = {}
    x = tf.constant(np.random.default_rng(9).uniform(-1, 1, (2, 64, 64, 3)).astype("float32"))
    cases = [("hed", hed, layer) for layer in ("block1_conv2", "block3_conv3", "block4_pool")]
    cases += [("tiny", tiny, layer) for layer in ("relu", "act_relu", "leaky", "predictions")]
    cases += [("mobilenet", mobilenet, "block_3_expand_relu")]
    for name, loaded, layer in cases:
        for fold in (True, False):
            model = feature_graph(loaded, layer, fold).model
            with tf.GradientTape() as tape:
                tape.watch(x)
                with redirect_relu_gradients(tf.constant(True)):
                    y = model(x, training=False)
                total = tf.reduce_sum(y)
            key = f"graph/{name}/{layer}/fold{int(fold)}"
            out[f"{key}/forward"] = array_hash(y.numpy())
            out[f"{key}/warm-gradient"] = array_hash(tape.gradient(total, x).numpy())
    return out


def folder_hashes(prefix: str, folder: Path, work: Path) -> dict[str, str]:
    """Every array (``.npy``/``.npz``), JSON file and PNG's pixels under ``folder``."""
    from PIL import Image

    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if not path.is_file() or relative.startswith("cache/"):
            continue
        key = f"{prefix}/{relative}"
        if path.suffix == ".npy":
            out[key] = array_hash(np.load(path))
        elif path.suffix == ".npz":
            with np.load(path) as arrays:
                for name in sorted(arrays.files):
                    out[f"{key}:{name}"] = array_hash(arrays[name])
        elif path.suffix == ".json":
            out[key] = json_hash(json.loads(path.read_text()), work)
        elif path.suffix == ".png":
            with Image.open(path) as image:
                out[key] = array_hash(np.asarray(image.convert("RGB")))
    return out


def probe_and_atlas_hashes(hed: Any, tiny: Any, work: Path) -> dict[str, str]:
    from PIL import Image

    from wga.corpus import views
    from wga.corpus.atlas import AtlasOptions, build_atlas
    from wga.corpus.corpus import open_corpus
    from wga.corpus.probe import run_probe
    from wga.data.synthetic import make_synthetic_dataset
    from wga.vis.render import BatchRender, group_by_batch
    from wga.vis.vectors import VectorStore

    out: dict[str, str] = {}
    corpus_dir = make_synthetic_dataset(work / "corpus", per_class={"train": 8}, side=64, seed=1)
    corpus = open_corpus(corpus_dir)
    layers = ["block1_conv2", "block2_pool", "block2_conv2", "block3_conv1"]
    hed_index = run_probe(
        hed, corpus, layers, work / "hed-index", k=3, batch_size=8, progress=False
    )
    tiny_layers = ["conv_relu", "relu", "act_relu", "leaky", "leaky_layer", "merge", "predictions"]
    tiny_index = run_probe(
        tiny, corpus, tiny_layers, work / "tiny-index", k=3, batch_size=5, progress=False
    )
    for image_id in (0, 13):
        for layer, unit in (("block1_conv2", 3), ("block3_conv1", 40)):
            heat = views.activation_map(hed, hed_index, layer, unit, image_id)
            out[f"view/hed/{layer}/{unit}/{image_id}"] = array_hash(heat)
        for layer, unit in (("relu", 2), ("leaky", 5), ("predictions", 1)):
            heat = views.activation_map(tiny, tiny_index, layer, unit, image_id)
            out[f"view/tiny/{layer}/{unit}/{image_id}"] = array_hash(heat)
        cam = views.grad_cam(tiny, tiny_index, "predictions", 3, image_id)
        out[f"view/tiny/grad-cam/3/{image_id}"] = array_hash(cam)

    atlas_dir = work / "atlas"

    def renderer(recipes: list) -> list[str | None]:
        icons = atlas_dir / "icons"
        icons.mkdir(parents=True, exist_ok=True)
        store = VectorStore(atlas_dir / "vectors")
        names: dict[Any, str] = {}
        for group in group_by_batch(recipes):
            batch = BatchRender(hed, group, vectors=store)
            batch.run(batch.total_steps)
            for position, image in enumerate(batch.images()):
                name = f"icons/{len(names):03d}.png"
                Image.fromarray(image).save(atlas_dir / name)
                names[group[position]] = name
        return [names[recipe] for recipe in recipes]

    options = AtlasOptions(layer="block2_conv2", grid=2, icon=64, steps=8, seed=5, per_image=8)
    build_atlas(hed_index, hed, options, atlas_dir, renderer=renderer, progress=False)
    out.update(folder_hashes("index/hed", hed_index.root, work))
    out.update(folder_hashes("index/tiny", tiny_index.root, work))
    out.update(folder_hashes("atlas", atlas_dir, work))
    return out


def load_models() -> tuple[Any, Any, Any]:
    import keras
    from golden import tiny_loaded

    from wga.models import BUILTIN_MODELS, LoadedModel, ModelRegistry

    hed = ModelRegistry(runs_dir=None).load("vgg16-hed")
    keras.utils.set_random_seed(0)
    spec = next(spec for spec in BUILTIN_MODELS if spec.name == "mobilenetv2")
    mobilenet = LoadedModel(spec, keras.applications.MobileNetV2(weights=None), "random-mobilenet")
    return hed, tiny_loaded(), mobilenet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    parser.add_argument("--compare", type=Path, help="a JSON of an earlier run: list differences")
    args = parser.parse_args()

    from wga.quiet import silence_tensorflow

    silence_tensorflow()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        hed, tiny, mobilenet = load_models()
        from wga.vis.vectors import VectorStore

        hashes = graph_hashes(hed, tiny, mobilenet)
        hashes.update(render_hashes(hed, tiny, mobilenet, VectorStore(work / "vectors")))
        hashes.update(probe_and_atlas_hashes(hed, tiny, work))
    args.out.write_text(json.dumps(dict(sorted(hashes.items())), indent=1) + "\n")
    print(f"{len(hashes)} hashes in {time.perf_counter() - started:.0f} s → {args.out}")
    if args.compare:
        before = json.loads(args.compare.read_text())
        changed = sorted(k for k in before.keys() & hashes.keys() if before[k] != hashes[k])
        gone, new = sorted(before.keys() - hashes.keys()), sorted(hashes.keys() - before.keys())
        for title, keys in (("changed", changed), ("missing", gone), ("new", new)):
            print(f"{title}: {len(keys)}")
            for key in keys:
                print(f"  {key}")
        return 1 if changed or gone or new else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
