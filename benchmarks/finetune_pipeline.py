"""Training throughput: the tf.data pipeline (JPEG files → cache → augment) vs in-memory tensors.

Both train the same fine-tuning model (vgg16-hed + head, block5 and head trainable, SGD) for
the same number of steps; the in-memory run gets the images already decoded, centre-cropped and
preprocessed as one NumPy array, i.e. the cost of the input pipeline is zero there. The pipeline
should cost at most ~10 %: after the first epoch it only reads the cache, crops, flips and
jitters in parallel with the training step (prefetch).

    PYTHONPATH=. python benchmarks/finetune_pipeline.py [--images 128] [--size 96] [--rounds 3]

Rounds alternate pipeline and in-memory so that machine load hits both; the best round of each
is compared, by wall time and by CPU time (the latter is robust to other processes' load).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=128, help="training images in all")
    parser.add_argument("--size", type=int, default=96, help="input side, px")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from wga.quiet import silence_tensorflow

    silence_tensorflow()
    import keras
    import tensorflow as tf

    from wga.data.synthetic import make_synthetic_dataset
    from wga.models import ModelRegistry, preprocess
    from wga.train.finetune import build_model, freeze_index, set_phase, with_dtype_policy
    from wga.train.pipeline import load_images01, make_dataset, read_dataset

    with tempfile.TemporaryDirectory() as temp:
        per_class = max(1, args.images // 2)
        root = make_synthetic_dataset(
            Path(temp) / "ds",
            classes=("stripes", "checkerboard"),
            per_class={"train": per_class, "val": 1},
            side=int(args.size * 1.4),
        )
        dataset = read_dataset(root)
        paths, labels = dataset.files("train")
        count = len(paths)
        hed = ModelRegistry(None).load("vgg16-hed")
        model = build_model(with_dtype_policy(hed.model, "float32"), 2)
        set_phase(model, 2, freeze_index(model, "vgg16-hed", None))
        model.compile(keras.optimizers.SGD(1e-4, momentum=0.9), "categorical_crossentropy")
        initial = model.get_weights()

        pipeline = make_dataset(
            paths, labels, num_classes=2, size=args.size, batch_size=args.batch,
            preprocessing="caffe", training=True, cache=True,
        )  # fmt: skip
        images = preprocess(load_images01(paths, args.size), "caffe")
        x = np.asarray(images, dtype="float32")
        y = np.asarray(tf.one_hot(labels, 2))

        def fit_pipeline(epochs: int) -> None:
            model.fit(pipeline, epochs=epochs, verbose=0, shuffle=False)

        def fit_memory(epochs: int) -> None:
            model.fit(x, y, batch_size=args.batch, epochs=epochs, verbose=0, shuffle=True)

        # Warm up both: traces the step, fills the pipeline's cache (decode happens once a run).
        fit_pipeline(1)
        fit_memory(1)
        rates: dict[str, list[float]] = {"pipeline": [], "memory": []}
        cpu_rates: dict[str, list[float]] = {"pipeline": [], "memory": []}
        for _ in range(args.rounds):
            for name, fit in (("pipeline", fit_pipeline), ("memory", fit_memory)):
                model.set_weights(initial)
                started, cpu_started = time.perf_counter(), time.process_time()
                fit(args.epochs)
                rates[name].append(count * args.epochs / (time.perf_counter() - started))
                cpu_rates[name].append(count * args.epochs / (time.process_time() - cpu_started))

    best_pipeline, best_memory = max(rates["pipeline"]), max(rates["memory"])
    print(f"images {count}, size {args.size} px, batch {args.batch}, {args.epochs} epochs a round")
    print(
        f"tf.data pipeline : {best_pipeline:8.1f} images/s  (rounds: "
        f"{', '.join(f'{r:.1f}' for r in rates['pipeline'])})"
    )
    print(
        f"in-memory tensors: {best_memory:8.1f} images/s  (rounds: "
        f"{', '.join(f'{r:.1f}' for r in rates['memory'])})"
    )
    ratio = best_pipeline / best_memory
    print(f"ratio pipeline/in-memory: {ratio:.3f}  (pipeline cost {100 * (1 - ratio):+.1f} %)")
    # On a shared machine wall time follows the neighbours' load; CPU time is the work done
    # (this process's threads, the pipeline's included), the fairer comparison there.
    cpu_pipeline, cpu_memory = max(cpu_rates["pipeline"]), max(cpu_rates["memory"])
    cpu_ratio = cpu_pipeline / cpu_memory
    print(
        f"per CPU-second: pipeline {cpu_pipeline:.2f}, in-memory {cpu_memory:.2f} images; "
        f"ratio {cpu_ratio:.3f} (pipeline cost {100 * (1 - cpu_ratio):+.1f} %)"
    )


if __name__ == "__main__":
    main()
