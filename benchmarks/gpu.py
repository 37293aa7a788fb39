"""The render engine and the probe on a GPU machine: JAX or PyTorch, no TensorFlow, no network.

Prints ONE JSON object: units/s for 8, 32 and 128 units at 128 and 224 px (lucid preset) on
InceptionV3 ``mixed5`` (random weights: speed does not depend on them) and vgg16-hed
``block4_conv3``; probe images/s at 299 px; the GPU's peak memory. Runs in under ten minutes.

A render's 192 steps are ``warmup`` (16) steps with redirected ReLU gradients and 176 plain ones;
both kinds are timed here over a few steps each after their trace, and a unit's time is
extrapolated as ``16 × warm + 176 × plain`` — the steady state, without the one-off traces
(reported apart as ``trace_s``). ``--full`` renders all 192 steps instead.

Needs: Keras, optree, namex, numpy, Pillow, h5py (and, from wga's dependencies, tqdm, requests,
scikit-learn for the probe's imports); the hed weights from ``WGA_HED_WEIGHTS`` (a path) — see
the README, "A GPU machine". ``--smoke``: tiny sizes, to check the script on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARM, PLAIN = 3, 6  # timed steps of each kind per measurement (after the trace)


def peak_memory() -> int | None:
    """Peak bytes on the first accelerator, or None on a CPU."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use")
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return None


def models() -> dict:
    import keras

    from wga.models import LoadedModel, ModelRegistry, ModelSpec

    inception = keras.applications.InceptionV3(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    spec = ModelSpec("inceptionv3-random", "InceptionV3, random weights", "tf", 299, "file")
    return {
        "inceptionv3-random": LoadedModel(spec, inception, fingerprint="random-weights"),
        "vgg16-hed": ModelRegistry(None).load("vgg16-hed"),
    }


def units_per_second(loaded, layer: str, size: int, units: int, steps: int, full: bool) -> dict:
    """One render of ``units`` units: measured step times and the units/s they give."""
    from wga.vis.render import BatchRender, Recipe

    recipes = [Recipe(loaded.name, layer, u, size=size, steps=steps, seed=u) for u in range(units)]
    batch = BatchRender(loaded, recipes)
    warmup = batch.preset.warmup_steps
    started = time.perf_counter()
    if full:
        batch.run(batch.total_steps)
        batch.images()
        seconds = time.perf_counter() - started
        return {"units_per_s": round(units / seconds, 3), "seconds": round(seconds, 2)}
    batch.run(1)  # traces the warm-up step
    trace = time.perf_counter() - started
    started = time.perf_counter()
    batch.run(WARM)
    warm = (time.perf_counter() - started) / WARM
    batch.run(warmup - batch.steps_done)
    started = time.perf_counter()
    batch.run(1)  # traces the plain step
    trace += time.perf_counter() - started
    started = time.perf_counter()
    batch.run(PLAIN)
    batch.images()  # the last step's results reach the host
    plain = (time.perf_counter() - started) / PLAIN
    unit_seconds = (warmup * warm + (steps - warmup) * plain) / units
    return {
        "units_per_s": round(1 / unit_seconds, 3),
        "warm_step_s": round(warm, 4),
        "plain_step_s": round(plain, 4),
        "trace_s": round(trace, 1),
        "extrapolated_from_steps": WARM + PLAIN,
    }


def probe_images_per_second(loaded, side: int, count: int, batch_size: int) -> dict:
    """The probe (the feed, the model, the reduction) over ``count`` synthetic images."""
    import numpy as np
    from PIL import Image

    from wga.corpus.corpus import open_corpus
    from wga.corpus.probe import run_probe

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "corpus"
        root.mkdir()
        rng = np.random.default_rng(0)
        for index in range(count):
            pixels = rng.integers(0, 256, size=(side, side * 3 // 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"{index:05d}.jpg", quality=90)
        corpus = open_corpus(root)
        layers = ["mixed5"] if "inception" in loaded.name else ["block4_conv3"]
        small = open_corpus(root)  # a first, short run traces (not timed)
        run_probe(
            loaded, small, layers, Path(folder) / "warm", batch_size=batch_size, progress=False
        )
        started = time.perf_counter()
        run_probe(
            loaded, corpus, layers, Path(folder) / "index", batch_size=batch_size, progress=False
        )
        seconds = time.perf_counter() - started
    return {"images_per_s": round(count / seconds, 2), "images": count, "side": side}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU check)")
    parser.add_argument("--full", action="store_true", help="render all 192 steps")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    import keras

    from wga.vis.presets import DEFAULT_STEPS

    if args.smoke:
        units, sizes, steps, probe = (2,), (64,), 20, dict(side=96, count=8, batch_size=4)
    else:
        units, sizes, steps, probe = (8, 32, 128), (128, 224), DEFAULT_STEPS, {}
        probe = dict(side=299, count=2048, batch_size=64)
    loaded = models()
    layers = {"inceptionv3-random": "mixed5", "vgg16-hed": "block4_conv3"}
    out: dict = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "device": device(),
        "steps": steps,
        "renders": [],
    }
    for name, layer in layers.items():
        for size in sizes:
            for count in units:
                figures = units_per_second(loaded[name], layer, size, count, steps, args.full)
                out["renders"].append(
                    {"model": name, "layer": layer, "size": size, "units": count, **figures}
                )
                print(json.dumps(out["renders"][-1]), file=sys.stderr, flush=True)
    out["probe"] = {
        name: probe_images_per_second(loaded[name], **probe) for name in ("inceptionv3-random",)
    }
    out["peak_memory_bytes"] = peak_memory()
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


def device() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return str(jax.devices()[0])
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return "cpu"


if __name__ == "__main__":
    sys.path.append(str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
