"""The atlas's cost, split by stage, and what batching icons through the render queue buys.

1. **A 20 × 20 atlas at 80 px on vgg16-hed**, end to end over a synthetic corpus (probed first,
   not timed): wall time of the sampling pass, the UMAP layout (+ gridding) and the icons (every
   kept cell of the 20 × 20 grid, rendered through an in-process render queue).
2. **Icons per second, batched vs one at a time**: the same ``--compare`` icons (directions of
   the atlas's cells, fresh seeds so nothing is a cache hit) submitted to a render queue all at
   once (the queue batches them, up to its CPU pixel budget) and submitted one by one, each
   waited for before the next.

Sizes are chosen to finish in minutes on a 2-core CPU, so icons get few steps (``--steps``,
default 16; an atlas worth looking at wants 128 or more): compare the ratios, not absolute
figures across machines.

    PYTHONPATH=. python benchmarks/atlas_speed.py [--images 150] [--per-image 24] [--steps 16]
        [--compare 10] [--layer block4_conv2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=150, help="synthetic corpus size")
    parser.add_argument("--per-image", type=int, default=24, help="positions sampled per image")
    parser.add_argument("--layer", default="block4_conv2")
    parser.add_argument("--grid", type=int, default=20)
    parser.add_argument("--icon", type=int, default=80)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--compare", type=int, default=10, help="icons in the batching test")
    args = parser.parse_args()

    from wga.quiet import quiet_keras, silence_tensorflow

    silence_tensorflow()
    quiet_keras()
    from wga.corpus.atlas import AtlasOptions, build_atlas, executor_renderer, icon_recipe
    from wga.corpus.corpus import open_corpus
    from wga.corpus.probe import run_probe
    from wga.data.synthetic import make_synthetic_dataset
    from wga.executors.local import LocalExecutor
    from wga.models import ModelRegistry
    from wga.serve.queue import RenderQueue
    from wga.vis.render import BatchRender
    from wga.vis.vectors import VectorStore

    hed = ModelRegistry(None).load("vgg16-hed")
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        per_class = {"train": max(1, args.images // 3)}
        corpus = make_synthetic_dataset(work / "corpus", per_class=per_class, side=96, seed=0)
        started = time.perf_counter()
        index = run_probe(
            hed, open_corpus(corpus), [args.layer], work / "probe", k=2, progress=False
        )
        probe_s = time.perf_counter() - started
        options = AtlasOptions(
            layer=args.layer,
            grid=args.grid,
            icon=args.icon,
            steps=args.steps,
            per_image=args.per_image,
        )
        timings: dict[str, float] = {}
        started = time.perf_counter()
        atlas = build_atlas(index, hed, options, work / "atlas", progress=False, timings=timings)
        total = time.perf_counter() - started
        icons = sum(1 for cell in atlas["cells"] if cell["icon"])
        print(
            f"corpus: {atlas['samples']['images']} images (probe, not timed: {probe_s:.1f} s); "
            f"{atlas['samples']['count']} vectors of {args.layer} "
            f"({atlas['samples']['channels']} channels)"
        )
        print(
            f"atlas {args.grid}×{args.grid} at {args.icon} px, {args.steps} steps/icon: "
            f"{len(atlas['cells'])} cells kept, {atlas['dropped']} vectors in dropped cells"
        )
        print(f"  sampling  {timings['sampling']:8.1f} s")
        print(f"  UMAP+grid {timings['layout']:8.1f} s")
        print(
            f"  icons     {timings['icons']:8.1f} s  ({icons} icons, {icons / timings['icons']:.2f}/s)"
        )
        print(f"  total     {total:8.1f} s")

        store = VectorStore(work / "atlas" / "vectors")
        cells = [cell for cell in atlas["cells"] if cell["direction"]][: args.compare]
        base = [icon_recipe(hed.spec.name, options, cell["direction"]) for cell in cells]
        batched = [replace(recipe, seed=1000 + i) for i, recipe in enumerate(base)]
        single = [replace(recipe, seed=2000 + i) for i, recipe in enumerate(base)]
        render_all = executor_renderer(LocalExecutor(), hed, work / "atlas", progress=False)
        # warm-up: trace the step for a batch of every size used below (not timed)
        render_all([replace(recipe, seed=3000 + i) for i, recipe in enumerate(base)])
        render_all([replace(base[0], seed=4000)])
        started = time.perf_counter()
        render_all(batched)
        batched_rate = len(batched) / (time.perf_counter() - started)
        queue = RenderQueue(
            work / "single",
            loader=lambda name: hed,
            batch_factory=lambda model, group: BatchRender(model, group, vectors=store),
            snapshot_interval_s=3600.0,
        ).start()
        try:
            started = time.perf_counter()
            for recipe in single:  # each waited for before the next: a batch of one
                queue.wait(queue.submit(recipe, hed.fingerprint)["id"], timeout=3600.0)
            single_rate = len(single) / (time.perf_counter() - started)
        finally:
            queue.stop()
        print(
            f"icons/s through the queue ({len(base)} icons, {args.steps} steps): "
            f"batched {batched_rate:.2f}, one at a time {single_rate:.2f} "
            f"→ {batched_rate / single_rate:.2f}×"
        )


if __name__ == "__main__":
    main()
