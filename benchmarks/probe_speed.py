"""The probe's cost, side by side: its images/s against a bare ``model.predict`` over the same
feed, and its peak memory at 1,000 against 10,000 images; ``--backends`` compares the probe's
images/s across Keras backends (one child process each, alternating rounds).

1. **Speed.** The same synthetic corpus, the same feed (:func:`wga.corpus.feed.feed`), the same
   model truncated at the deepest recorded layer: ``model.predict`` (which only computes and
   drops the activations) vs :func:`wga.corpus.probe.run_probe` recording two layers (on-device
   reduction, top-k merge, maxima rows, checkpoint and statistics included). Rounds alternate so
   that machine load hits both; the best round of each is compared. Target: ≤ 15 % slower.
2. **Memory.** A probe in a fresh process over 1,000 and over 10,000 small images with a small
   saved model; the peak RSS of the pass (``VmHWM``, reset once the model is loaded, so
   TensorFlow's start-up does not hide it) must stay flat: the top-k
   state is ``k × C`` per layer, the maxima matrix is memory-mapped. Target: within 100 MB.

    PYTHONPATH=. python benchmarks/probe_speed.py [--images 96] [--rounds 2] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SPEED_LAYERS = ("block4_conv3", "block5_conv3")


def write_images(folder: Path, count: int, side: int, seed: int = 0) -> None:
    from wga.data.synthetic import SYNTHETIC_CLASSES, synthetic_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        kind = SYNTHETIC_CLASSES[index % len(SYNTHETIC_CLASSES)]
        Image.fromarray(synthetic_image(kind, rng, side)).save(
            folder / f"{index:05d}.jpg", quality=90
        )


def speed(images: int, rounds: int, batch: int) -> None:
    from wga.quiet import quiet_keras, silence_tensorflow

    silence_tensorflow()
    quiet_keras()
    import keras

    from wga.corpus.corpus import open_corpus
    from wga.corpus.feed import feed
    from wga.corpus.probe import feed_rule, run_probe
    from wga.models import ModelRegistry

    hed = ModelRegistry(None).load("vgg16-hed")
    rule = feed_rule(hed)
    bare = keras.Model(hed.model.inputs[0], hed.model.get_layer(SPEED_LAYERS[-1]).output)
    with tempfile.TemporaryDirectory() as temp:
        write_images(Path(temp) / "corpus", images, side=320)
        corpus = open_corpus(Path(temp) / "corpus")
        ids = np.arange(len(corpus))

        def predict() -> float:
            data = ((b["images"],) for b in feed(corpus, rule, ids, batch))
            started = time.perf_counter()
            bare.predict(data, verbose=0)
            return time.perf_counter() - started

        def probe(round_index: int) -> float:
            started = time.perf_counter()
            run_probe(
                hed, corpus, SPEED_LAYERS, Path(temp) / f"index{round_index}", batch_size=batch,
                progress=False,
            )  # fmt: skip
            return time.perf_counter() - started

        # Warm-up (tracing, first-touch of weights), not timed.
        small = ((b["images"],) for b in feed(corpus, rule, ids[:batch], batch))
        bare.predict(small, verbose=0)
        predict_times, probe_times = [], []
        for round_index in range(rounds):
            predict_times.append(predict())
            probe_times.append(probe(round_index))
            print(
                f"round {round_index + 1}: predict {images / predict_times[-1]:.2f} img/s, "
                f"probe {images / probe_times[-1]:.2f} img/s",
                flush=True,
            )
    best_predict, best_probe = images / min(predict_times), images / min(probe_times)
    print(
        f"\nspeed (vgg16-hed at {rule.side} px, {images} images, batch {batch}, layers "
        f"{','.join(SPEED_LAYERS)}):\n"
        f"  model.predict over the feed   {best_predict:7.2f} img/s\n"
        f"  probe (2 layers recorded)     {best_probe:7.2f} img/s\n"
        f"  probe is {100 * (best_predict / best_probe - 1):+.1f} % slower (target ≤ 15 %)"
    )


def probe_rate(images: int, batch: int) -> None:
    """One probe (after a warm-up probe) in this process; prints ``RATE img/s``."""
    from wga.quiet import quiet_keras

    quiet_keras()
    from wga.corpus.corpus import open_corpus
    from wga.corpus.probe import run_probe
    from wga.models import ModelRegistry

    hed = ModelRegistry(None).load("vgg16-hed")
    with tempfile.TemporaryDirectory() as temp:
        write_images(Path(temp) / "corpus", images, side=320)
        corpus = open_corpus(Path(temp) / "corpus")
        run_probe(hed, corpus, SPEED_LAYERS, Path(temp) / "warm", batch_size=batch, progress=False)
        started = time.perf_counter()
        run_probe(hed, corpus, SPEED_LAYERS, Path(temp) / "index", batch_size=batch, progress=False)
        print("RATE", images / (time.perf_counter() - started), flush=True)


def compare_backends(backends: list[str], images: int, rounds: int, batch: int) -> None:
    """The probe's steady images/s on each backend, rounds alternating, best round of each."""
    rates: dict[str, list[float]] = {name: [] for name in backends}
    for round_index in range(rounds):
        for name in backends:
            command = [sys.executable, __file__, "--probe-only", "--images", str(images)]
            command += ["--batch", str(batch)]
            env = {**os.environ, "KERAS_BACKEND": name, "PYTHONPATH": str(ROOT)}
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            line = next((x for x in result.stdout.splitlines() if x.startswith("RATE ")), None)
            if line is None:
                raise SystemExit(f"the probe on {name} failed:\n{result.stderr[-2000:]}")
            rates[name].append(float(line.split()[1]))
            print(f"round {round_index + 1}: {name} {rates[name][-1]:.2f} img/s", flush=True)
    base = max(rates[backends[0]])
    print(
        f"\nprobe (vgg16-hed, {images} images at 224 px, batch {batch}, {','.join(SPEED_LAYERS)}):"
    )
    for name in backends:
        print(
            f"  {name:10s} {max(rates[name]):7.2f} img/s   {max(rates[name]) / base:.2f}× {backends[0]}"
        )


def small_model(folder: Path) -> Path:
    """A small saved model (a fine-tuned-run folder): 3 convs at a 64 px input."""
    import keras

    folder.mkdir(parents=True, exist_ok=True)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    keras.Model(inputs, x).save(folder / "model.keras")
    (folder / "model.json").write_text(json.dumps({"preprocessing": "tf", "input_size": 64}))
    return folder / "model.keras"


CHILD = """
import sys
from pathlib import Path

from wga.corpus.corpus import open_corpus
from wga.corpus.probe import run_probe
from wga.models import ModelRegistry


def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024


model, corpus, out = sys.argv[1:4]
loaded = ModelRegistry(None).load(model)
images = open_corpus(corpus)
before = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the peak of the pass alone
run_probe(loaded, images, ["conv2", "conv3"], out, batch_size=64, progress=False)
print("RSS", status("VmHWM"), before, file=sys.stderr)
"""


def peak_rss(model: Path, corpus: Path, out: Path, count: int) -> tuple[float, float, float]:
    """(peak RSS during the pass, RSS before it — both MB —, seconds) of a probe in a fresh
    process over the first ``count`` images."""
    command = [sys.executable, "-c", CHILD, str(model), str(corpus), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"probe over {count} images failed:\n{result.stderr[-2000:]}")
    line = next(line for line in result.stderr.splitlines() if line.startswith("RSS "))
    peak, before = (float(v) for v in line.split()[1:])
    return peak, before, elapsed


def memory(counts: tuple[int, ...]) -> None:
    from wga.quiet import silence_tensorflow

    silence_tensorflow()
    with tempfile.TemporaryDirectory() as temp:
        base = Path(temp)
        model = small_model(base / "runs" / "small")
        results = []
        for count in counts:
            corpus = base / f"corpus{count}"
            write_images(corpus, count, side=48, seed=count)
            rss, before, elapsed = peak_rss(model, corpus, base / f"index{count}", count)
            results.append((count, rss, elapsed))
            print(
                f"{count:>6} images: peak RSS during the pass {rss:7.1f} MB "
                f"(model loaded: {before:.1f} MB; {elapsed:.0f} s in all)",
                flush=True,
            )
    growth = results[-1][1] - results[0][1]
    print(
        f"\nmemory (small model, 64 px, layers conv2,conv3): peak RSS of the pass grows by {growth:+.1f} MB "
        f"from {results[0][0]:,} to {results[-1][0]:,} images (target: within 100 MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=96, help="images in the speed comparison")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--memory-counts", default="1000,10000")
    parser.add_argument(
        "--backends", help="e.g. tensorflow,jax: the probe's images/s on each, side by side"
    )
    parser.add_argument("--probe-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backends:
        compare_backends(args.backends.split(","), args.images, args.rounds, args.batch)
        return
    if args.probe_only:
        probe_rate(args.images, args.batch)
        return
    if not args.skip_speed:
        speed(args.images, args.rounds, args.batch)
    if not args.skip_memory:
        memory(tuple(int(n) for n in args.memory_counts.split(",")))


if __name__ == "__main__":
    main()
