"""Steady-state render speed on each Keras backend, side by side in one run.

Each backend runs in its own process (Keras picks one backend per process); the processes warm
up (ReLU warm-up, tracing), then take turns: in every round each runs the same number of plain
steps while the others wait, so all see the same machine load, and the median over rounds is
reported. Unit-steps/s = batch × steps / seconds, through ``BatchRender.run`` (what a render
pays, host work included).

Cases (issue 19): InceptionV3 (random weights: speed does not depend on them) ``mixed5``
128 px × 8, and vgg16-hed ``block4_conv2`` 96 px × 8.

    .venv/bin/python benchmarks/backends.py                      # tensorflow, jax, torch if there
    .venv/bin/python benchmarks/backends.py --baseline /tmp/old  # + the engine of another checkout
    .venv/bin/python benchmarks/backends.py --variants           # + other forms (JAX donation…)
    .venv/bin/python benchmarks/backends.py --bare               # + each backend's bare gradient

``--baseline DIR``: a checkout of wga (``git worktree add /tmp/old REF``) whose engine runs on
TensorFlow beside the others, for "no slower than before".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "inceptionv3-mixed5": ("inceptionv3-random", "mixed5", 128, 8),
    "hed-block4_conv2": ("vgg16-hed", "block4_conv2", 96, 8),
}


@dataclass
class Worker:
    label: str
    backend: str
    env: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # a wga checkout to import instead of this one

    def start(self, case: str) -> subprocess.Popen:
        env = {**os.environ, "KERAS_BACKEND": self.backend, "TF_CPP_MIN_LOG_LEVEL": "3", **self.env}
        if self.path is not None:
            env["PYTHONPATH"] = f"{self.path}{os.pathsep}{env.get('PYTHONPATH', '')}"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", case]
        return subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )


def worker(case: str) -> None:
    """Warm up, say ``ready``, then answer ``run N`` with the seconds N steps took."""
    model, layer, size, batch = CASES[case]
    from render_speed import load  # the same two models as the other render benchmarks

    from wga.vis.render import BatchRender, Recipe

    loaded = load(model)
    if os.environ.get("WGA_BENCH_BARE"):
        step = bare_gradient(loaded.model, layer, size, batch)
        step(), step()  # traced and compiled

        def run(steps: int) -> None:
            for _ in range(steps):
                step()

    else:
        recipes = [
            Recipe(model, layer, unit, size=size, steps=10_000, seed=unit) for unit in range(batch)
        ]
        render = BatchRender(loaded, recipes)
        render.run(render.preset.warmup_steps + 2)  # the warm-up and both traces
        run = render.run
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] != "run":
            break
        started = time.perf_counter()
        run(int(words[1]))
        print(f"{time.perf_counter() - started:.6f}", flush=True)


def bare_gradient(model, layer: str, size: int, batch: int):
    """The model's own gradient (sum of the layer's mean activations with respect to a fixed
    input), compiled the backend's usual way: what no engine can beat on that backend."""
    import keras
    import numpy as np
    from keras import ops

    cut = keras.Model(model.input, model.get_layer(layer).output)
    images = np.random.default_rng(0).random((batch, size, size, 3), np.float32)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        trainable = [v.value for v in cut.trainable_variables]
        fixed = [v.value for v in cut.non_trainable_variables]

        def loss(x, trainable, fixed):
            out, _ = cut.stateless_call(trainable, fixed, x, training=False)
            return ops.sum(ops.mean(out, axis=(1, 2)))

        step = jax.jit(jax.value_and_grad(loss))
        return lambda: step(images, trainable, fixed)[1].block_until_ready()
    if backend == "torch":
        import torch

        def torch_step():
            x = torch.tensor(images, requires_grad=True)
            ops.sum(ops.mean(cut(x, training=False), axis=(1, 2))).backward()
            return x.grad

        return torch_step
    import tensorflow as tf

    constant = tf.constant(images)

    @tf.function
    def tf_step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_sum(tf.reduce_mean(cut(x, training=False), axis=(1, 2)))
        return tape.gradient(value, x)

    return lambda: tf_step(constant).numpy()


def measure(case: str, workers: list[Worker], rounds: int, steps: int) -> dict[str, float]:
    """Median unit-steps/s of each worker on ``case``, its turns interleaved with the others'."""
    batch = CASES[case][3]
    processes = {}
    for w in workers:  # one at a time: start-up (imports, tracing) is not what is measured
        process = w.start(case)
        if process.stdout is None or process.stdout.readline().strip() != "ready":
            raise SystemExit(f"{w.label}: the worker did not start")
        processes[w.label] = process
    rates: dict[str, list[float]] = {label: [] for label in processes}
    for _ in range(rounds):
        for label, process in processes.items():
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(f"run {steps}\n")
            process.stdin.flush()
            rates[label].append(batch * steps / float(process.stdout.readline()))
    for process in processes.values():
        assert process.stdin is not None
        process.stdin.write("quit\n")
        process.stdin.flush()
        process.wait(timeout=120)
    return {label: statistics.median(values) for label, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES)
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="steps per turn")
    parser.add_argument(
        "--baseline", type=Path, help="a wga checkout: its engine on TensorFlow too"
    )
    parser.add_argument("--variants", action="store_true", help="also the forms not chosen")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="also each backend's bare model gradient (no engine): the ceiling on that backend",
    )
    parser.add_argument("--skip", default="", help="comma list of backends to leave out (torch)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    workers = [Worker("tensorflow", "tensorflow")]
    if args.baseline:
        workers.append(Worker("tensorflow (baseline)", "tensorflow", path=args.baseline.resolve()))
    for backend in ("jax", "torch"):
        if importlib.util.find_spec(backend) is not None and backend not in args.skip.split(","):
            workers.append(Worker(backend, backend))
    if args.bare:
        for w in list(workers):
            if w.path is None and w.label == w.backend:
                workers.append(
                    Worker(f"{w.backend} (bare gradient)", w.backend, {"WGA_BENCH_BARE": "1"})
                )
    if args.variants:
        workers.append(Worker("jax (donated buffers)", "jax", {"WGA_JAX_DONATE": "1"}))
        for label, flag in (  # XLA:CPU's oneDNN paths (TensorFlow's CPU kernels are oneDNN's)
            ("jax (oneDNN graph)", "--xla_cpu_use_onednn=true"),
            ("jax (oneDNN calls)", "--xla_cpu_experimental_onednn_custom_call=true"),
        ):
            workers.append(Worker(label, "jax", {"XLA_FLAGS": flag}))
    figures: dict[str, dict[str, float]] = {}
    for case in args.cases.split(","):
        rates = measure(case, workers, args.rounds, args.steps)
        reference = rates["tensorflow"]
        figures[case] = rates
        print(
            f"\n{case} (unit-steps/s, median of {args.rounds} interleaved turns of {args.steps} steps)"
        )
        for label, rate in rates.items():
            print(f"  {label:26s} {rate:8.2f}   {rate / reference:5.2f}× tensorflow")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.path.append(str(ROOT))  # after PYTHONPATH: a --baseline checkout comes first
    main()
