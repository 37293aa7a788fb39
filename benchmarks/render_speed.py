"""How fast the feature-visualisation engine is, side by side with the alternatives, in one run.

For each case (model, layer, size, batch of units) it measures unit-steps per second — one unit
advanced by one optimisation step — of

* ``wga``: this engine, the full ``lucid`` preset (Fourier basis, decorrelation, the whole
  transform stack, Adam, ReLU warm-up), compiled step, units batched;
* ``eager``: the very same step function run eagerly (no ``tf.function``): what a plain loop
  costs;
* ``tf-keras-vis``: ``ActivationMaximization`` 0.8.7 with its defaults (pixel space, jitter,
  rotate, TV + L1, RMSprop), same model, layer, size, batch and unit objective.

It also reports the step's achieved FLOP/s as a fraction of a large matmul's FLOP/s measured in
the same process (how close the step comes to the machine's dense peak), and the peak resident
memory of a 1024 px render (in a fresh child process, so nothing else inflates it).

ImageNet weights cannot be downloaded here: InceptionV3 runs with random weights (timing only).
Other processes share the CPUs, so absolute numbers are noisy; the ratios are the point.

``--steady`` is the side-by-side of issue 16: steady state, the difference between a run of
``--long`` (112) and one of ``--short`` (16) steps, so start-up and tracing cancel, 8 units at
once, for ``wga`` before the speed work (``EngineOptions(fold_batchnorm=False,
crop_padding=False)``), ``wga`` now and tf-keras-vis, in wall time and in process CPU time (other
processes' load does not count against CPU time).

    PYTHONPATH=. python benchmarks/render_speed.py            # ~5 minutes on 2 busy cores
    PYTHONPATH=. python benchmarks/render_speed.py --quick    # fewer steps, smaller batches
    PYTHONPATH=. python benchmarks/render_speed.py --steady [--long 112 --short 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np


@dataclass
class Case:
    model: str  # "inceptionv3-random" or "vgg16-hed"
    layer: str
    size: int
    batch: int
    steps: int  # timed steps for wga; the slower contenders run fewer (rates are per step)


def load(name: str):
    """A LoadedModel: the offline HED VGG16, or InceptionV3 with random weights."""
    from wga.models import LoadedModel, ModelRegistry, ModelSpec

    if name == "vgg16-hed":
        return ModelRegistry(None).load("vgg16-hed")
    import keras

    model = keras.applications.InceptionV3(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    spec = ModelSpec(name, "InceptionV3, random weights (timing only)", "tf", 299, "file")
    return LoadedModel(spec, model, fingerprint="random-weights")


def recipes(case: Case, steps: int, model: str | None = None):
    from wga.vis.render import Recipe

    return [
        Recipe(model or case.model, case.layer, unit, size=case.size, steps=steps, seed=unit)
        for unit in range(case.batch)
    ]


def time_wga(loaded, case: Case) -> tuple[float, float, object]:
    """Unit-steps/s of the engine: during the ReLU warm-up (through ``BatchRender.run``) and
    after it (the plain compiled step that runs the other 496 of lucid's 512 steps, called the
    way ``BatchRender`` calls it). Tracing is excluded."""

    from wga.vis.render import BatchRender

    batch = BatchRender(loaded, recipes(case, 1000))
    batch.run(1)  # traces the warm-up step
    warm_steps = max(2, case.steps // 2)
    started = time.perf_counter()
    batch.run(warm_steps)
    warm_rate = case.batch * warm_steps / (time.perf_counter() - started)
    step, chunk = batch._step, batch.chunks[0]
    params, state = chunk.params, chunk.state
    plain = step.step[False]

    def one(i: int) -> None:
        nonlocal params, state
        inputs = step.inputs(chunk.seeds, 16 + i, chunk.elements)
        params, state, scores = plain(params, state, inputs)
        scores.numpy()

    one(0)  # traces the plain step
    started = time.perf_counter()
    for i in range(1, case.steps + 1):
        one(i)
    return case.batch * case.steps / (time.perf_counter() - started), warm_rate, batch


def time_eager(loaded, case: Case, steps: int) -> float:
    """The same (plain, after warm-up) step function, run eagerly."""
    import tensorflow as tf

    from wga.vis.render import BatchRender, compiled_step

    batch = BatchRender(loaded, recipes(case, 1000))
    step = compiled_step(loaded, batch.objectives[0], case.size, batch.preset)
    chunk = batch.chunks[0]
    params, state = chunk.params, step.optimiser.init(chunk.params)
    n = len(chunk.indices)

    def one(i: int) -> None:
        nonlocal params, state
        inputs = {
            k: tf.constant(v) for k, v in step.inputs(chunk.seeds, 16 + i, chunk.elements).items()
        }
        with tf.GradientTape() as tape:
            tape.watch(params)
            total, _ = step.forward(params, inputs)
        params, state = step.optimiser.update(params, tape.gradient(total, params), state)

    one(0)
    started = time.perf_counter()
    for i in range(1, steps + 1):
        one(i)
    return n * steps / (time.perf_counter() - started)


def time_tf_keras_vis(loaded, case: Case, steps: int) -> float:
    import keras
    import tensorflow as tf
    from tf_keras_vis.activation_maximization import ActivationMaximization

    source = loaded.spatial_model()
    sub = keras.Model(source.inputs, source.get_layer(case.layer).output)
    units = tf.constant(np.arange(case.batch), tf.int32)

    def score(output: tf.Tensor) -> tf.Tensor:
        channels = tf.transpose(output, [0, 3, 1, 2])
        return tf.reduce_mean(tf.gather(channels, units, axis=1, batch_dims=1), axis=[1, 2])

    visualizer = ActivationMaximization(sub, clone=False)
    seed = tf.random.uniform((case.batch, case.size, case.size, 3), 0, 255)
    visualizer(score, seed_input=seed, steps=1)  # its own tracing
    started = time.perf_counter()
    visualizer(score, seed_input=seed, steps=steps)
    return case.batch * steps / (time.perf_counter() - started)


def forward_flops(loaded, case: Case, side: int) -> float:
    """FLOPs of one forward pass of the truncated model for one image (TF's profiler)."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    from wga.vis.features import feature_graph

    model = feature_graph(loaded, case.layer).model
    concrete = tf.function(model).get_concrete_function(
        tf.TensorSpec([1, side, side, 3], tf.float32)
    )
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = model_analyzer.profile(graph=concrete.graph, options=options)
    return float(profile.total_float_ops)


def matmul_flops_per_second(n: int = 2048, repeats: int = 10) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    product = tf.function(lambda x, y: tf.matmul(x, y))
    product(a, b).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        product(a, b).numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - started)


def child_peak_rss(model: str, layer: str, size: int, steps: int) -> dict:
    """Render one image in a fresh process; its peak RSS (ru_maxrss) and time."""
    command = [sys.executable, __file__, "--rss-child", model, layer, str(size), str(steps)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1:]}
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["seconds"] = time.perf_counter() - started
    return out


def rss_child(model: str, layer: str, size: int, steps: int) -> None:
    from wga.vis.render import BatchRender, Recipe

    loaded = load(model)
    batch = BatchRender(loaded, [Recipe(model, layer, 0, size=size, steps=steps)])
    batch.run(steps)
    image = batch.images()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    schedule = [side for side, _ in batch.schedule]
    print(json.dumps({"peak_rss_gib": peak_kib / 2**20, "octaves": schedule, "shape": image.shape}))


STEADY_CASES = [
    Case("inceptionv3-random", "mixed5", 128, 8, 0),
    Case("vgg16-hed", "block4_conv2", 96, 8, 0),
    Case("resnet50-random", "conv4_block6_out", 128, 8, 0),
]
BEFORE = {"fold_batchnorm": False, "crop_padding": False}  # the engine before issue 16


def timed(run) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def steady_wga(case: Case, switches: dict[str, bool], short: int, long: int) -> tuple[float, float]:
    """(wall s, CPU s) per step of ``case.batch`` units: (time to ``long`` − to ``short``) ÷ Δ."""
    from render_roofline import load as fresh

    from wga.vis.render import BatchRender, EngineOptions

    loaded = fresh(case.model)
    options = EngineOptions(**switches)
    batch = BatchRender(loaded, recipes(case, 1000, loaded.name), options=options)
    batch.run(short)
    whole = timed(lambda: batch.run(long - short))
    return whole[0] / (long - short), whole[1] / (long - short)  # the first `short` cancel


def steady_tf_keras_vis(case: Case, short: int, long: int) -> tuple[float, float]:
    import keras
    import tensorflow as tf
    from render_roofline import load as fresh
    from tf_keras_vis.activation_maximization import ActivationMaximization

    source = fresh(case.model).spatial_model()
    sub = keras.Model(source.inputs, source.get_layer(case.layer).output)
    units = tf.constant(np.arange(case.batch), tf.int32)

    def score(output: tf.Tensor) -> tf.Tensor:
        channels = tf.transpose(output, [0, 3, 1, 2])
        return tf.reduce_mean(tf.gather(channels, units, axis=1, batch_dims=1), axis=[1, 2])

    visualizer = ActivationMaximization(sub, clone=False)
    seed = tf.random.uniform((case.batch, case.size, case.size, 3), 0, 255)
    few = timed(lambda: visualizer(score, seed_input=seed, steps=short))
    many = timed(lambda: visualizer(score, seed_input=seed, steps=long))
    return (many[0] - few[0]) / (long - short), (many[1] - few[1]) / (long - short)


def steady(cases: list[Case], short: int, long: int) -> None:
    import tensorflow as tf

    print(
        f"steady state ({long} − {short} steps), 8 units — TensorFlow {tf.__version__}, "
        f"{os.cpu_count()} CPUs (shared)"
    )
    print("unit-steps per second, wall | per CPU second; ratios: wga now ÷ the other")
    header = (
        f"{'case':<34} {'before':>13} {'wga now':>13} {'tf-keras-vis':>13} "
        f"{'×before':>13} {'×tf-k-vis':>13}"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        rates = []
        for wall, cpu in (
            steady_wga(case, BEFORE, short, long),
            steady_wga(case, {}, short, long),
            steady_tf_keras_vis(case, short, long),
        ):
            rates.append((case.batch / wall, case.batch / cpu))
        (bw, bc), (nw, nc), (kw, kc) = rates
        name = f"{case.model} {case.layer} {case.size}px"
        print(
            f"{name:<34} {bw:6.1f}|{bc:6.1f} {nw:6.1f}|{nc:6.1f} {kw:6.1f}|{kc:6.1f} "
            f"{nw / bw:6.2f}|{nc / bc:6.2f} {nw / kw:6.2f}|{nc / kc:6.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steady", action="store_true", help="issue 16's side-by-side")
    parser.add_argument("--short", type=int, default=16)
    parser.add_argument("--long", type=int, default=112)
    parser.add_argument("--cases", help="comma list of steady case indices (default: all)")
    parser.add_argument("--rss-child", nargs=4, metavar=("MODEL", "LAYER", "SIZE", "STEPS"))
    args = parser.parse_args()
    if args.rss_child:
        model, layer, size, steps = args.rss_child
        rss_child(model, layer, int(size), int(steps))
        return

    from wga.quiet import quiet_keras, silence_tensorflow

    silence_tensorflow()
    quiet_keras()
    import tensorflow as tf

    if args.steady:
        chosen = STEADY_CASES
        if args.cases:
            chosen = [STEADY_CASES[int(i)] for i in args.cases.split(",")]
        steady(chosen, args.short, args.long)
        return
    cases = [
        Case("inceptionv3-random", "mixed5", 128, 8, 8),
        Case("inceptionv3-random", "mixed5", 128, 32, 4),
        Case("vgg16-hed", "block4_conv3", 128, 8, 6),
    ]
    if args.quick:
        cases = [Case("inceptionv3-random", "mixed5", 128, 8, 4)]
    print(f"wga render benchmark — TensorFlow {tf.__version__}, {os.cpu_count()} CPUs (shared)")
    print("of peak: the step's FLOP/s over a 2048² float32 matmul's, measured just before it\n")
    header = (
        f"{'case':<36} {'wga':>8} {'wga-warm':>8} {'eager':>8} {'tf-k-vis':>8} "
        f"{'×eager':>7} {'×tfkvis':>8} {'GFLOP/s':>8} {'matmul':>8} {'of peak':>8}"
    )
    print("unit-steps per second (higher is better); wga-warm: the first 16 steps (ReLU warm-up)")
    print(header)
    print("-" * len(header))
    loaded_models: dict[str, object] = {}
    for case in cases:
        loaded = loaded_models.get(case.model) or load(case.model)
        loaded_models[case.model] = loaded
        peak = matmul_flops_per_second()
        wga_rate, warm_rate, batch = time_wga(loaded, case)
        slow_steps = max(2, case.steps // 4)
        eager_rate = time_eager(loaded, case, slow_steps)
        tfkv_rate = time_tf_keras_vis(loaded, case, slow_steps)
        out_side = batch._step.transforms.output_size  # what the model sees
        step_flops = 2 * forward_flops(loaded, case, out_side)  # forward + input gradient
        achieved = step_flops * wga_rate  # FLOPs per unit-step × unit-steps per second
        name = f"{case.model} {case.layer} {case.size}px ×{case.batch}"
        print(
            f"{name:<36} {wga_rate:8.1f} {warm_rate:8.1f} {eager_rate:8.1f} {tfkv_rate:8.1f} "
            f"{wga_rate / eager_rate:7.1f} {wga_rate / tfkv_rate:8.1f} "
            f"{achieved / 1e9:8.1f} {peak / 1e9:8.1f} {achieved / peak:8.0%}",
            flush=True,
        )
    print("\npeak resident memory of one 1024 px render (fresh process, lucid, octaves)")
    for model, layer in (("vgg16-hed", "block5_conv3"), ("inceptionv3-random", "mixed5")):
        # 4 steps: octaves 256/512/1024 get 2/1/1 (lucid's 512 steps: 293/146/73)
        result = child_peak_rss(model, layer, 1024, 4)
        print(f"  {model} {layer}: {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
