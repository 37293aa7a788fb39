"""The corpus feed without TensorFlow against today's tf.data feed, side by side in one run.

Both read the same synthetic corpus of WGA-like JPEGs (about 1200 px on the longer side, mixed
aspect ratios) by the same rule (:mod:`wga.corpus.feed`) and yield the same batches:

* ``tf.data`` — the feed as it was before the backends port (``Dataset.map`` over a
  ``tf.numpy_function`` decode, ``AUTOTUNE`` parallel calls, TensorFlow preprocessing and
  padding, ``prefetch(AUTOTUNE)``), kept here as the baseline;
* ``threads`` — :func:`wga.corpus.feed.feed`: Pillow decode and numpy preprocessing in a thread
  pool, ``prefetch`` batches ahead, numpy out.

Measured twice: the feed alone (images/s drained as fast as it goes), and the feed under a model
(vgg16-hed to ``block4_conv3`` on each batch, as the probe does), where decode overlaps compute.
Rounds alternate so machine load hits both; the best round of each is compared. It also checks
that both give bit-identical images for every preprocessing mode (the index must not move).

    PYTHONPATH=. python benchmarks/feed_speed.py [--images 64] [--rounds 3] [--batch 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_corpus(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` JPEGs about WGA's size (1200 px longer side), with varied aspect ratios."""
    from wga.data.synthetic import SYNTHETIC_CLASSES, synthetic_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        kind = SYNTHETIC_CLASSES[index % len(SYNTHETIC_CLASSES)]
        square = synthetic_image(kind, rng, 1200)
        short = int(rng.integers(700, 1200))
        image = square[:short] if index % 2 else square[:, :short]
        Image.fromarray(image).save(folder / f"{index:05d}.jpg", quality=90)


def tf_data_feed(corpus: Any, rule: Any, ids: np.ndarray, batch_size: int) -> Iterator[dict]:
    """The feed before the port: tf.data over a numpy_function decode (the baseline)."""
    import tensorflow as tf

    from wga.corpus.feed import load_resized
    from wga.models import preprocess

    root, files, side = corpus.root, corpus.files(), rule.side

    def decode(image_id: np.ndarray) -> tuple:
        try:
            array, size = load_resized(root / files[int(image_id)], side)
        except Exception as error:
            empty = np.zeros((1, 1, 3), np.float32)
            zero = np.zeros(2, np.int32)
            return empty, zero, zero, False, str(error).encode()
        shape = np.asarray(array.shape[:2], np.int32)
        return array, shape, np.asarray(size, np.int32), True, b""

    def load(image_id: Any) -> dict:
        image, shape, size, ok, error = tf.numpy_function(
            decode, [image_id], [tf.float32, tf.int32, tf.int32, tf.bool, tf.string]
        )
        image = tf.ensure_shape(image, [None, None, 3])
        model_input = preprocess(image, rule.preprocessing)
        model_input = tf.where(ok, model_input, tf.zeros_like(model_input))
        padded = tf.image.pad_to_bounding_box(model_input, 0, 0, side, side)
        return {
            "ids": tf.cast(image_id, tf.int64),
            "images": tf.ensure_shape(padded, [side, side, 3]),
            "shapes": tf.ensure_shape(shape, [2]),
            "sizes": tf.ensure_shape(size, [2]),
            "ok": tf.ensure_shape(ok, []),
            "error": tf.ensure_shape(error, []),
        }

    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(ids, np.int64))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    for batch in dataset:
        yield {key: value.numpy() for key, value in batch.items()}


def threads_feed(corpus: Any, rule: Any, ids: np.ndarray, batch_size: int) -> Iterator[dict]:
    from wga.corpus.feed import feed

    return feed(corpus, rule, ids, batch_size)


FEEDS = {"tf.data": tf_data_feed, "threads": threads_feed}


def identical(corpus: Any, ids: np.ndarray) -> list[str]:
    """Per preprocessing mode, whether both feeds give the same bytes."""
    from wga.corpus.feed import FeedRule

    lines = []
    for mode in ("caffe", "tf", "torch", "raw"):
        rule = FeedRule(224, mode)
        old = list(tf_data_feed(corpus, rule, ids, 8))
        new = list(threads_feed(corpus, rule, ids, 8))
        same = all(
            np.array_equal(a[key], b[key])
            for a, b in zip(old, new, strict=True)
            for key in ("ids", "images", "shapes", "sizes", "ok")
        )
        lines.append(f"  {mode:6s} {'bit-identical' if same else 'DIFFERENT'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", type=int, default=299, help="feed side (299 = InceptionV3)")
    args = parser.parse_args()

    from wga.quiet import quiet_keras, silence_tensorflow

    silence_tensorflow()
    quiet_keras()
    import keras

    from wga.corpus.corpus import open_corpus
    from wga.corpus.feed import FeedRule, default_workers
    from wga.models import ModelRegistry

    hed = ModelRegistry(None).load("vgg16-hed")
    model = keras.Model(hed.model.inputs[0], hed.model.get_layer("block4_conv3").output)
    with tempfile.TemporaryDirectory() as temp:
        write_corpus(Path(temp) / "corpus", args.images)
        corpus = open_corpus(Path(temp) / "corpus")
        ids = np.arange(len(corpus))
        rule = FeedRule(args.side, "caffe")
        print("same bytes out (all modes, 224 px):")
        print("\n".join(identical(corpus, ids[:16])))
        model(np.zeros((args.batch, args.side, args.side, 3), np.float32))  # warm-up
        alone: dict[str, list[float]] = {name: [] for name in FEEDS}
        under: dict[str, list[float]] = {name: [] for name in FEEDS}
        for round_index in range(args.rounds):
            for name, make in FEEDS.items():
                started = time.perf_counter()
                for _ in make(corpus, rule, ids, args.batch):
                    pass
                alone[name].append(len(ids) / (time.perf_counter() - started))
                started = time.perf_counter()
                for batch in make(corpus, rule, ids, args.batch):
                    np.asarray(model(batch["images"], training=False))
                under[name].append(len(ids) / (time.perf_counter() - started))
            print(
                f"round {round_index + 1}: "
                + ", ".join(
                    f"{n} {alone[n][-1]:.1f} img/s alone, {under[n][-1]:.1f} under the model"
                    for n in FEEDS
                ),
                flush=True,
            )
    best = {n: (max(alone[n]), max(under[n])) for n in FEEDS}
    print(
        f"\nfeed ({args.images} JPEGs ~1200 px → {args.side} px, batch {args.batch}, "
        f"{default_workers()} decode threads; model: vgg16-hed to block4_conv3, "
        f"backend {keras.backend.backend()}):"
    )
    for name, (a, u) in best.items():
        print(f"  {name:8s} {a:7.1f} img/s alone   {u:7.1f} img/s under the model")
    ratio_alone = best["threads"][0] / best["tf.data"][0]
    ratio_under = best["threads"][1] / best["tf.data"][1]
    print(f"  threads / tf.data: {ratio_alone:.2f}× alone, {ratio_under:.2f}× under the model")


if __name__ == "__main__":
    main()
