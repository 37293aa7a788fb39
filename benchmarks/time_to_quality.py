"""Time to a good image: activation against time, per preset and octave schedule.

A step is only worth its cost if the image gets better. For a few live units of vgg16-hed at
224 px, this renders

* the reference: ``lucid`` at full size for 512 steps (Lucid's default), with checkpoints — the
  curve of "lucid with N steps" for every N on the way (Adam with a constant rate: a shorter
  render is the same trajectory, stopped earlier);
* two-octave schedules: ``S1`` steps at half size (a quarter of the pixels: about a quarter of
  the cost), then full size with checkpoints — the curve of "S1 + N" schedules;
* the ``preview`` preset as it is now, at the explorer's preview size, for the record.

At each checkpoint it measures, on the image itself (uint8, no transforms, as a user sees it),
the activation of each image's own unit as a fraction of the reference's final (512-step) one,
and the selectivity (own unit over the best other unit of the batch). Time is the process CPU
time and wall time spent in steps only (checkpoints excluded), per unit.

    PYTHONPATH=. python benchmarks/time_to_quality.py                 # ~15 min on 2 idle cores
    PYTHONPATH=. python benchmarks/time_to_quality.py --units 2 --reference-steps 256   # quicker
    PYTHONPATH=. python benchmarks/time_to_quality.py --crop --size 128 --reference-steps 128

``--crop`` instead compares the same lucid render with Lucid's padding seen by the model
(``EngineOptions(crop_padding=False)``, before) and cropped away (now): activation, selectivity and CPU time.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

LIVE_UNITS = {"block4_conv2": [0, 4, 7, 11, 1, 2, 3, 5], "block3_conv3": [2, 3, 5, 11, 0, 1, 4, 6]}


def activations(loaded, layer: str, images: np.ndarray, units: list[int]) -> np.ndarray:
    """``(images, units)`` channel means of ``layer`` on uint8 images (no transforms)."""
    import tensorflow as tf

    from wga.models import preprocess
    from wga.vis.features import feature_graph

    x = preprocess(tf.constant(images, tf.float32) / 255.0, loaded.spec.preprocessing)
    means = tf.reduce_mean(feature_graph(loaded, layer).model(x), axis=[1, 2]).numpy()
    return means[:, units]


class Trial:
    """One schedule, stepped to checkpoints; time spent in steps only."""

    def __init__(self, loaded, layer, units, size, preset, schedule=None, options=None) -> None:
        from wga.vis.presets import PRESETS
        from wga.vis.render import DEFAULT_OPTIONS, BatchRender, Recipe

        PRESETS[preset.name] = preset
        total = sum(steps for _, steps in schedule) if schedule else preset.default_steps
        recipes = [
            Recipe(loaded.name, layer, unit, size=size, preset=preset.name, steps=total, seed=unit)
            for unit in units
        ]
        self.batch = BatchRender(loaded, recipes, options=options or DEFAULT_OPTIONS)
        if schedule:  # fixed steps per octave (BatchRender was built with the same first side)
            assert self.batch.schedule[0][0] == schedule[0][0]
            self.batch.schedule = list(schedule)
            self.batch.total_steps = total
        self.loaded, self.layer, self.units = loaded, layer, units
        self.cpu = self.wall = 0.0

    def run_to(self, steps: int) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.batch.run(steps - self.batch.steps_done)
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu

    def measure(self) -> tuple[np.ndarray, np.ndarray]:
        images = self.batch.images()
        matrix = activations(self.loaded, self.layer, images, self.units)
        own = np.diag(matrix)
        others = np.where(np.eye(len(self.units), dtype=bool), -np.inf, matrix).max(axis=1)
        return own, images.reshape(len(images), -1).std(axis=1), others


def compare_crop(loaded, layer: str, units: list[int], size: int, steps: int) -> None:
    from wga.models import LoadedModel
    from wga.vis.presets import PRESETS
    from wga.vis.render import EngineOptions

    lucid = replace(PRESETS["lucid"], name="ttq-crop", default_steps=steps)
    results = {}
    for label, crop in (("padding seen", False), ("padding cropped", True)):
        wrapper = LoadedModel(loaded.spec, loaded.model, loaded.fingerprint)  # own step cache
        options = EngineOptions(crop_padding=crop)
        trial = Trial(wrapper, layer, units, size, lucid, options=options)
        trial.run_to(steps)
        own, spread, others = trial.measure()
        results[label] = own
        n = len(units)
        base = results["padding seen"]
        print(
            f"{label:<30} {steps:>6} {trial.cpu / n:10.1f} {trial.wall / n:11.1f} "
            f"{np.mean(own / base):9.2f} {np.min(own / base):6.2f} "
            f"{np.mean(own > 1.5 * others):7.0%} {spread.mean():8.1f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", default="block4_conv2", choices=list(LIVE_UNITS))
    parser.add_argument("--units", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reference-steps", type=int, default=512)
    parser.add_argument("--first-octave", default="128", help="comma list of S1 values")
    parser.add_argument("--full-steps", type=int, default=128, help="full-size steps after S1")
    parser.add_argument("--every", type=int, default=32, help="checkpoint spacing")
    parser.add_argument("--crop", action="store_true", help="padding seen vs cropped away")
    parser.add_argument("--rates", default="", help="comma list: lucid at these Adam rates")
    args = parser.parse_args()

    from wga.quiet import quiet_keras, silence_tensorflow

    silence_tensorflow()
    quiet_keras()
    from wga.models import ModelRegistry
    from wga.vis.presets import PRESETS, DoublingOctaves

    loaded = ModelRegistry(None).load("vgg16-hed")
    units = LIVE_UNITS[args.layer][: args.units]
    size, half = args.size, args.size // 2
    lucid = replace(PRESETS["lucid"], learning_rate=0.05)  # octave and crop trials: Lucid's rate
    print(
        f"time to quality — vgg16-hed {args.layer}, units {units}, {size} px, "
        f"{os.cpu_count()} CPUs (shared); time per unit = batch time / {len(units)}"
    )
    header = (
        f"{'schedule':<30} {'steps':>6} {'cpu s/unit':>10} {'wall s/unit':>11} "
        f"{'act ÷ ref':>9} {'worst':>6} {'select.':>7} {'pixel sd':>8}"
    )
    print(header)
    print("-" * len(header))

    def report(name: str, trial: Trial, steps: int, reference: np.ndarray | None) -> np.ndarray:
        own, spread, others = trial.measure()
        base = own if reference is None else reference
        fraction = own / np.maximum(base, 1e-6)
        n = len(units)
        selective = np.mean(own > 1.5 * others)
        print(
            f"{name:<30} {steps:>6} {trial.cpu / n:10.1f} {trial.wall / n:11.1f} "
            f"{fraction.mean():9.2f} {fraction.min():6.2f} {selective:7.0%} {spread.mean():8.1f}",
            flush=True,
        )
        return own

    if args.crop:
        compare_crop(loaded, args.layer, units, size, args.reference_steps)
        return
    # the reference first: its checkpoints are "lucid with N steps", its end is the yardstick
    single = replace(  # Lucid's own rate
        lucid, name="ttq-single", default_steps=args.reference_steps, learning_rate=0.05
    )
    trial = Trial(loaded, args.layer, units, size, single)
    marks = list(range(args.every, args.reference_steps + 1, args.every))
    snapshots = []
    for mark in marks:
        trial.run_to(mark)
        snapshots.append((mark, trial.cpu, trial.wall, *trial.measure()))
    reference = snapshots[-1][3]
    for mark, cpu, wall, own, spread, others in snapshots:
        fraction = own / np.maximum(reference, 1e-6)
        selective = np.mean(own > 1.5 * others)
        n = len(units)
        print(
            f"{'lucid ' + str(size) + ' px':<30} {mark:>6} {cpu / n:10.1f} {wall / n:11.1f} "
            f"{fraction.mean():9.2f} {fraction.min():6.2f} {selective:7.0%} {spread.mean():8.1f}",
            flush=True,
        )
    for rate in [float(r) for r in filter(None, args.rates.split(","))]:
        faster = replace(lucid, name="ttq-rate", default_steps=args.full_steps, learning_rate=rate)
        trial = Trial(loaded, args.layer, units, size, faster)
        for mark in range(args.every, args.full_steps + 1, args.every):
            trial.run_to(mark)
            report(f"lucid {size} px, rate {rate}", trial, mark, reference)
    for first in [int(s) for s in filter(None, args.first_octave.split(","))]:
        schedule = [(half, first), (size, args.full_steps)]
        name = f"{half}→{size} px, {first} at {half}"
        steps = first + args.full_steps
        two = replace(lucid, name="ttq-two", default_steps=steps, octaves=DoublingOctaves(half))
        trial = Trial(loaded, args.layer, units, size, two, schedule)
        trial.run_to(first)
        report(name + " (half only)", trial, first, reference)
        for mark in range(args.every // 2, args.full_steps + 1, args.every // 2):
            trial.run_to(first + mark)
            report(name, trial, first + mark, reference)


if __name__ == "__main__":
    main()
