"""How close a render step comes to what this CPU can do: achieved FLOP/s ÷ a large matmul's.

For each case (model, layer, size, 8 units) and each variant of the engine ("before": no
BatchNormalization folding, Lucid's padding seen by the model — the step as it was; "after":
today's defaults), it times the plain
(post warm-up) compiled step the way ``BatchRender`` runs it, in wall time and in process CPU
time, and divides the step's useful FLOPs by both. Useful FLOPs = 2 × the forward FLOPs of the
unfolded truncated model at the size the model sees (TF profiler's float-op count; forward plus
the gradient with respect to the input, which costs what the forward pass does — no weight
gradients are computed). Folding shows as speed, not as less work (the unfolded count is used);
the padding crop does less work (the model sees fewer pixels), so it shows in s/step. Right
before each variant, a 2048² float32 matmul is timed on the same threads:

    of peak (wall) = (step FLOPs / step wall s) ÷ (matmul FLOPs / matmul wall s)
    of peak (cpu)  = (step FLOPs / step CPU s)  ÷ (matmul FLOPs / matmul CPU s)

The CPU-time figure reads sanely on a machine that other processes share (their time is not
ours); the wall figure is what a user waits for. ``--sweep`` instead runs each thread / oneDNN
setting in a fresh process (they are fixed at TensorFlow's start) on two small cases. ``--xla``
compares, per model family, the truncated model's forward pass plus input gradient (8 images)
compiled by ``tf.function`` with and without ``jit_compile=True`` (the transforms' op,
ImageProjectiveTransformV3, has no XLA kernel, so the model part is what XLA could speed up).

    PYTHONPATH=. python benchmarks/render_roofline.py            # ~3 minutes on 2 busy cores
    PYTHONPATH=. python benchmarks/render_roofline.py --sweep    # threads and oneDNN, ~4 minutes
    PYTHONPATH=. python benchmarks/render_roofline.py --xla      # XLA per family, ~3 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# name → the engine's speed switches (wga.vis.render.EngineOptions fields)
VARIANTS: dict[str, dict[str, bool]] = {
    "before": {"fold_batchnorm": False, "crop_padding": False},
    "after": {},
}
SWEEP: list[tuple[str, dict[str, str]]] = [
    ("default (TF picks)", {}),
    ("intra 2, inter 1", {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}),
    ("intra 2, inter 2", {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "2"}),
    ("intra 1, inter 2", {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}),
    ("oneDNN off", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
]


@dataclass(frozen=True)
class Case:
    model: str  # a registry name, or "<application>-random" (Keras application, random weights)
    layer: str
    size: int
    batch: int = 8
    steps: int = 4


CASES = [
    Case("vgg16-hed", "block5_conv3", 224, steps=3),
    Case("inceptionv3-random", "mixed5", 128),
    Case("resnet50-random", "conv4_block6_out", 128),
]
SWEEP_CASES = [Case("inceptionv3-random", "mixed5", 128), Case("vgg16-hed", "block4_conv2", 96)]


def load(name: str):
    """A fresh LoadedModel wrapper (own graph and step caches) around a cached Keras model."""
    from wga.models import BUILTIN_MODELS, LoadedModel, ModelRegistry

    if name not in _models:
        if name.endswith("-random"):
            import keras

            base = name.removesuffix("-random")
            spec = next(spec for spec in BUILTIN_MODELS if spec.name == base)
            model = getattr(keras.applications, spec.application)(
                weights=None, include_top=False, input_shape=(None, None, 3)
            )
            _models[name] = LoadedModel(spec, model, "random-weights")
        else:
            _models[name] = ModelRegistry(None).load(name)
    first = _models[name]
    return LoadedModel(first.spec, first.model, first.fingerprint)


_models: dict[str, object] = {}


def useful_flops(case: Case, side: int) -> float:
    """2 × forward FLOPs of one image through the unfolded truncated model (TF profiler)."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    from wga.vis.features import feature_graph

    model = feature_graph(load(case.model), case.layer, fold=False).model
    concrete = tf.function(model).get_concrete_function(
        tf.TensorSpec([1, side, side, 3], tf.float32)
    )
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = model_analyzer.profile(graph=concrete.graph, options=options)
    return 2.0 * float(profile.total_float_ops)


def matmul_rate(n: int = 2048, repeats: int = 8) -> tuple[float, float]:
    """(FLOP per wall second, FLOP per CPU second) of an n×n float32 matmul."""
    import tensorflow as tf

    a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
    product = tf.function(lambda x, y: tf.matmul(x, y))
    product(a, b).numpy()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        product(a, b).numpy()
    flops = 2.0 * n**3 * repeats
    return flops / (time.perf_counter() - wall), flops / (time.process_time() - cpu)


def time_steps(case: Case, switches: dict[str, bool]) -> tuple[float, float, int]:
    """(wall s, CPU s) per plain step of 8 units, and the side the model sees."""
    from wga.vis.render import BatchRender, EngineOptions, Recipe

    loaded = load(case.model)
    recipes = [
        Recipe(loaded.name, case.layer, unit, size=case.size, steps=1000, seed=unit)
        for unit in range(case.batch)
    ]
    batch = BatchRender(loaded, recipes, options=EngineOptions(**switches))
    batch.steps_done = batch.preset.warmup_steps  # time the plain step, not the warm-up
    batch.run(1)  # traces it
    wall, cpu = time.perf_counter(), time.process_time()
    batch.run(case.steps)
    seen = batch._step.transforms.output_size if batch._step.transforms else case.size
    return (time.perf_counter() - wall) / case.steps, (time.process_time() - cpu) / case.steps, seen


def roofline(cases: list[Case], variants: dict[str, dict[str, bool]]) -> None:
    import tensorflow as tf

    print(f"render roofline — TensorFlow {tf.__version__}, {os.cpu_count()} CPUs (shared)")
    print("step: the plain compiled step of 8 units; of peak = step FLOP/s ÷ 2048² matmul FLOP/s")
    header = (
        f"{'case':<38} {'variant':<8} {'s/step':>7} {'cpu s':>7} {'GFLOP/s':>8} "
        f"{'matmul':>7} {'of peak':>8} {'(cpu)':>6}"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        first_wall = None
        for name, switches in variants.items():
            peak_wall, peak_cpu = matmul_rate()
            wall, cpu, seen = time_steps(case, switches)
            flops = useful_flops(case, seen) * case.batch
            label = f"{case.model} {case.layer} {case.size}px ×{case.batch}"
            speedup = "" if first_wall is None else f"  ×{first_wall / wall:.2f} vs first"
            first_wall = first_wall or wall
            print(
                f"{label:<38} {name:<8} {wall:7.2f} {cpu:7.2f} {flops / wall / 1e9:8.1f} "
                f"{peak_wall / 1e9:7.1f} {flops / wall / peak_wall:8.0%} "
                f"{flops / cpu / peak_cpu:6.0%}{speedup}",
                flush=True,
            )


def sweep_child(case_index: int) -> None:
    case = SWEEP_CASES[case_index]
    peak_wall, _ = matmul_rate()
    wall, cpu, _ = time_steps(case, {})
    print(json.dumps({"step_s": wall, "cpu_s": cpu, "matmul_gflops": peak_wall / 1e9}))


def sweep() -> None:
    print("thread and oneDNN settings, each in a fresh process (plain step of 8 units)")
    header = f"{'setting':<22} " + " ".join(f"{c.model[:12]} {c.layer:>12}" for c in SWEEP_CASES)
    print(header + "   (s/step, cpu s/step, matmul GFLOP/s)")
    for label, env in SWEEP:
        cells = []
        for index in range(len(SWEEP_CASES)):
            command = [sys.executable, __file__, "--sweep-child", str(index)]
            result = subprocess.run(
                command, capture_output=True, text=True, env={**os.environ, **env}, check=False
            )
            if result.returncode != 0:
                cells.append("failed: " + (result.stderr.strip().splitlines() or ["?"])[-1])
                continue
            out = json.loads(result.stdout.strip().splitlines()[-1])
            cells.append(f"{out['step_s']:6.2f} {out['cpu_s']:6.2f} {out['matmul_gflops']:6.1f}")
        print(f"{label:<22} " + "   ".join(cells), flush=True)


XLA_CASES = [
    Case("vgg16-hed", "block4_conv2", 96),
    Case("inceptionv3-random", "mixed5", 128),
    Case("resnet50-random", "conv4_block6_out", 128),
    Case("mobilenetv2-random", "block_13_expand_relu", 128),
]


def xla_compare(cases: list[Case]) -> None:
    import tensorflow as tf

    from wga.vis.features import feature_graph

    print("XLA: truncated model forward + input gradient, 8 images (s per call; trace in s)")
    print(f"{'case':<44} {'tf.function':>16} {'jit_compile':>16} {'×cpu':>6} {'×wall':>6}")
    for case in cases:
        model = feature_graph(load(case.model), case.layer).model
        images = tf.random.uniform((case.batch, case.size, case.size, 3))

        def step(x: tf.Tensor, model=model, units: int = case.batch) -> tf.Tensor:
            with tf.GradientTape() as tape:
                tape.watch(x)
                features = model(x, training=False)
                total = tf.reduce_sum(tf.reduce_mean(features, axis=[1, 2])[:, :units])
            return tape.gradient(total, x)

        timings = []
        for jit in (False, True):
            compiled = tf.function(step, jit_compile=jit)
            started = time.perf_counter()
            compiled(images).numpy()
            trace = time.perf_counter() - started
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(case.steps):
                compiled(images).numpy()
            timings.append(
                (
                    (time.perf_counter() - wall) / case.steps,
                    (time.process_time() - cpu) / case.steps,
                    trace,
                )
            )
        (wall0, cpu0, trace0), (wall1, cpu1, trace1) = timings
        label = f"{case.model} {case.layer} {case.size}px"
        print(
            f"{label:<44} {cpu0:6.3f}cpu {trace0:4.0f}s {cpu1:6.3f}cpu {trace1:4.0f}s "
            f"{cpu0 / cpu1:6.2f} {wall0 / wall1:6.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="thread / oneDNN settings")
    parser.add_argument("--sweep-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--xla", action="store_true", help="XLA per model family")
    parser.add_argument("--cases", help="comma list of case indices (default: all)")
    args = parser.parse_args()
    from wga.quiet import quiet_keras, silence_tensorflow

    silence_tensorflow()
    quiet_keras()
    if args.sweep_child is not None:
        sweep_child(args.sweep_child)
    elif args.sweep:
        sweep()
    elif args.xla:
        xla_compare(XLA_CASES)
    else:
        chosen = CASES
        if args.cases:
            chosen = [CASES[int(i)] for i in args.cases.split(",")]
        roofline(chosen, VARIANTS)


if __name__ == "__main__":
    main()
