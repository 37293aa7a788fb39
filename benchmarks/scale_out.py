"""Scale-out on Ray: 1 vs 2 workers, and Ray vs in-process, side by side on this machine.

1. **Start-up.** ``ray.init`` of a local 2-CPU cluster, and one actor's start (TensorFlow import
   and model load) — paid once per run, not per item.
2. **Bulk render.** ``--units`` units of ``block2_conv1`` (vgg16-hed, 64 px, ``--steps`` steps) in
   tasks of 2: in-process, then on Ray with 1 and with 2 renderer actors. Wall time, the time to
   the first finished task (each run starts its own workers) and the steady units/s after it.
3. **Probe.** ``--images`` synthetic images (one layer, top 16) in-process, then on Ray Data with 1
   and 2 actors. Images/s; the Ray-vs-in-process overhead on one worker (target ≤ 20 % at 1,000
   images) and the 2-vs-1 ratio (≤ 2× on 2 cores).

Every Ray result is checked against the in-process one (same PNG bytes, same index).

Run: ``PYTHONPATH=. python benchmarks/scale_out.py`` (about 5–10 minutes on 2 CPU cores;
``--images 200 --units 8`` for a quick look). Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from wga.quiet import silence_tensorflow

silence_tensorflow()
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

MODEL = "vgg16-hed"
LAYER = "block2_conv1"
PROBE_LAYER = "block3_conv1"


def row(measure: str, value: str) -> None:
    print(f"{measure:<66}  {value}", flush=True)


class LoadOnly:
    """A worker that only loads the model: measures one actor's start-up."""

    def __init__(self, model: str) -> None:
        from wga.models import default_registry

        default_registry().load(model)

    def __call__(self, item: object) -> float:
        return time.monotonic()


def png_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.png"))}


def bench_render(executor, recipes, out: Path, workers: int | None) -> tuple[dict, dict]:
    """Wall time, time to the first finished task (worker start, model load, first trace) and
    the steady rate after it; the PNGs written as the bulk render writes them."""
    from wga.vis.bulk import render_batches
    from wga.vis.png import save_png
    from wga.vis.recipe import recipe_file_name

    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    first = first_count = None
    for finished in render_batches(executor, MODEL, recipes, batch=2, workers=workers):
        for recipe, image, metadata in finished:
            save_png(out / recipe_file_name(recipe), image, metadata)
        if first is None:
            first, first_count = time.monotonic() - started, len(finished)
    wall = time.monotonic() - started
    steady = (len(recipes) - first_count) / max(wall - first, 1e-9)
    return {"wall": wall, "first": first, "steady": steady}, png_bytes(out)


def bench_probe(loaded, corpus, out: Path, executor, workers=None) -> tuple[float, object]:
    from wga.corpus.probe import run_probe

    started = time.monotonic()
    index = run_probe(
        loaded,
        corpus,
        [PROBE_LAYER],
        out,
        k=16,
        batch_size=16,
        executor=executor,
        workers=workers,
        progress=False,
    )
    return time.monotonic() - started, index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--skip-probe", action="store_true")
    args = parser.parse_args()

    import ray

    from wga.executors import WorkerSpec
    from wga.executors.local import LocalExecutor
    from wga.executors.ray_cluster import RayExecutor, init_ray
    from wga.models import default_registry
    from wga.vis.bulk import layer_recipes

    loaded = default_registry().load(MODEL)
    print(f"scale-out on {os.cpu_count()} CPU cores, {MODEL}", flush=True)
    started = time.monotonic()
    init_ray(
        num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=500 * 2**20
    )
    row("ray.init (local cluster, 2 CPUs)", f"{time.monotonic() - started:.1f} s")
    ray_exec = RayExecutor("auto")
    started = time.monotonic()
    list(ray_exec.map_unordered(WorkerSpec(LoadOnly, (MODEL,)), [0], workers=1))
    row("one actor's start (TensorFlow import + model load)", f"{time.monotonic() - started:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fields = {"model": MODEL, "layer": LAYER, "size": 64, "steps": args.steps}
        recipes = layer_recipes(loaded, fields, range(args.units))
        print(f"-- bulk render: {args.units} units of {LAYER}, 64 px, {args.steps} steps")
        print("   wall: the whole run; start: to the first finished task (worker start-up, model")
        print("   load, first trace); steady: units/s after it", flush=True)
        runs = {}
        reference = None
        for label, executor, workers in (
            ("in-process", LocalExecutor(), None),
            ("Ray, 1 worker", ray_exec, 1),
            ("Ray, 2 workers", ray_exec, 2),
        ):
            out = root / label.replace(" ", "").replace(",", "")
            measured, images = bench_render(executor, recipes, out, workers)
            reference = images if reference is None else reference
            same = "same bytes" if images == reference else "DIFFERENT BYTES"
            runs[label] = measured
            row(
                label,
                f"wall {measured['wall']:.1f} s, start {measured['first']:.1f} s, "
                f"steady {measured['steady']:.2f} units/s ({same})",
            )
        one, two, local = runs["Ray, 1 worker"], runs["Ray, 2 workers"], runs["in-process"]
        row("render steady: Ray 2 vs 1 workers", f"{two['steady'] / one['steady']:.2f}x")
        row(
            "render steady: Ray 1 worker vs in-process (time per unit)",
            f"{local['steady'] / one['steady'] - 1:+.0%}",
        )

        if not args.skip_probe:
            from wga.corpus.corpus import open_corpus
            from wga.data.synthetic import make_synthetic_dataset

            per = -(-args.images // 3)
            make_synthetic_dataset(root / "corpus", per_class={"train": per}, side=160)
            corpus = open_corpus(root / "corpus")
            n = len(corpus)
            print(f"-- probe: {n} images, {PROBE_LAYER}, batch 16", flush=True)
            local_s, local_index = bench_probe(loaded, corpus, root / "p0", None)
            row("in-process", f"{n / local_s:.1f} images/s ({local_s:.1f} s)")
            probe_rates = {}
            for workers in (1, 2):
                wall, index = bench_probe(loaded, corpus, root / f"p{workers}", ray_exec, workers)
                probe_rates[workers] = n / wall
                same = same_index(local_index, index)
                row(
                    f"Ray Data, {workers} actor(s)",
                    f"{n / wall:.1f} images/s ({wall:.1f} s, {same})",
                )
            row("probe: Ray 2 vs 1 actors", f"{probe_rates[2] / probe_rates[1]:.2f}x")
            row(
                "probe: Ray 1 actor overhead vs in-process (time)",
                f"{(n / probe_rates[1]) / local_s - 1:+.0%}",
            )
    ray_exec.close()
    ray.shutdown()
    return 0


def same_index(a, b) -> str:
    import numpy as np

    same = a.images() == b.images() and np.array_equal(a.sizes(), b.sizes())
    for layer in a.layer_names():
        same = same and a.top(layer).equal(b.top(layer))
        same = same and np.array_equal(a.maxima(layer), b.maxima(layer), equal_nan=True)
    return "same index" if same else "DIFFERENT INDEX"


if __name__ == "__main__":
    sys.exit(main())
