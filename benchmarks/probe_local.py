"""The probe in this process through the one executor protocol vs the probe's old private loop.

Before #22 the probe had its own in-process executor: one feed over every image id (decoding a
couple of batches ahead) straight into the prober. Now every executor runs the probe the same
way: each chunk of ids is a row of :meth:`~wga.executors.Executor.map_batches`, decoded by
:class:`~wga.corpus.feed.ChunkFeed`; the in-process executor prepares the next rows in a thread
while the prober runs. Side by side in one run, alternating, on the same corpus and prober:

* ``one feed``       — the old loop: ``for batch in feed(all ids): prober(batch)``;
* ``executor``       — :func:`wga.corpus.probe.probe_chunks` on a :class:`LocalExecutor`;
* ``no look-ahead``  — the same with the preparing thread one row ahead at most (no overlap).

Every pass must give the same Partials. Run: ``PYTHONPATH=. python benchmarks/probe_local.py``
(``--images 96`` for a quick look; about a minute on 2 cores at the default).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from wga.quiet import silence_tensorflow

silence_tensorflow()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--side", type=int, default=320, help="synthetic image side (px)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--layer", default="block3_conv3")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    import wga.executors.local as local
    from wga.corpus.corpus import open_corpus
    from wga.corpus.feed import chunks, feed
    from wga.corpus.probe import ProbeJob, Prober, probe_chunks
    from wga.corpus.topk import merge
    from wga.data.synthetic import make_synthetic_dataset
    from wga.executors.local import LocalExecutor
    from wga.models import ModelRegistry

    hed = ModelRegistry(None).load("vgg16-hed")
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "corpus"
        per = -(-args.images // 3)
        make_synthetic_dataset(root, per_class={"train": per}, side=args.side, seed=0)
        corpus = open_corpus(root)
        prober = Prober(hed, [args.layer], k=8)
        job = ProbeJob("vgg16-hed", str(root), (args.layer,), 8, args.batch, prober.rule)
        todo = chunks(len(corpus), args.batch)
        ids = np.arange(len(corpus))

        def one_feed() -> list:
            return [prober(batch) for batch in feed(corpus, prober.rule, ids, args.batch)]

        def executor() -> list:
            return list(probe_chunks(LocalExecutor(), job, todo, prober=prober))

        def no_look_ahead() -> list:
            saved, local.PREPARED_AHEAD = local.PREPARED_AHEAD, 0
            try:
                return executor()
            finally:
                local.PREPARED_AHEAD = saved

        passes = {"one feed": one_feed, "executor": executor, "no look-ahead": no_look_ahead}
        one_feed()  # warm-up: trace the prober's step (not timed)
        seconds: dict[str, list[float]] = {name: [] for name in passes}
        results = {}
        for _ in range(args.rounds):
            for name, run in passes.items():
                started = time.perf_counter()
                results[name] = run()
                seconds[name].append(time.perf_counter() - started)
        merged = {}
        for name, parts in results.items():
            state = None
            for part in parts:
                state = merge(state, part)
            merged[name] = state
        same = all(merged[name].equal(merged["one feed"]) for name in merged)
        print(
            f"{len(corpus)} images of {args.side} px, vgg16-hed {args.layer}, batch {args.batch}, "
            f"best of {args.rounds}; same Partials: {same}"
        )
        best = {name: min(values) for name, values in seconds.items()}
        for name, value in best.items():
            rate = len(corpus) / value
            ratio = best["one feed"] / value
            print(f"  {name:<14} {value:6.2f} s  {rate:6.1f} images/s  {ratio:4.2f}x the old loop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
