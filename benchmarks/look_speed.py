"""The artwork view's cost, split by stage, and what each shortcut in it buys — side by side.

1. **The artwork view of one indexed artwork** (vgg16-hed, 3 layers, K = 6 groups, top 8; the
   server's path minus rendering, which the page asks the queue for and which is cached): wall
   time of the whole view (median of ``--repeat``), and its parts — the forward pass, the three
   factorisations, the percentiles; and the same view without groups.
2. **NMF on the largest of those layers**: BLAS on one thread (what ``look`` does) against the
   default (all cores).
3. **Percentiles over a corpus of ``--rows`` artworks** (synthetic N × 512 float16 maxima):
   counting directly against a binary search in the per-unit sorted table (and the table's
   one-off cost).
4. **Similar artworks over ``--rows`` synthetic rows × 512 channels**: an exact query on the
   normalised rows kept in memory (what ``similar`` does), against normalising the float16 rows
   on every query; and the one-off normalisation.
5. **The probe's style statistics**: the probe's core (feed → model → compiled reduction) over a
   synthetic corpus with and without the per-channel mean and standard deviation, interleaved
   runs, for the three layers above and for two early, large layers (the worst case).

    PYTHONPATH=. python benchmarks/look_speed.py [--images 24] [--rows 100000] [--repeat 5]
        [--probe-images 96]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

LAYERS = ["block3_conv3", "block4_conv3", "block5_conv3"]


def timed(function: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median wall seconds over ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def cpu_timed(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds (this process, all threads) over ``repeat`` calls. On a
    machine shared with other work the CPU time is the steadier measure of what a call costs."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def view_section(args: argparse.Namespace, work: Path) -> None:
    from wga.corpus.corpus import open_corpus
    from wga.corpus.look import factor_groups, look, picture_from_index, see
    from wga.corpus.probe import run_probe
    from wga.corpus.ranks import unit_percentiles
    from wga.data.synthetic import make_synthetic_dataset
    from wga.models import ModelRegistry

    hed = ModelRegistry(None).load("vgg16-hed")
    per_class = {"train": max(1, args.images // 3)}
    corpus = make_synthetic_dataset(work / "corpus", per_class=per_class, side=160, seed=0)
    index = run_probe(hed, open_corpus(corpus), LAYERS, work / "probe", k=4, progress=False)
    picture = picture_from_index(index, 1)
    look(hed, picture, LAYERS, index=index)  # warm: model built, sorted maxima cached
    full, full_cpu = cpu_timed(
        lambda: look(hed, picture, LAYERS, index=index, groups=6), args.repeat
    )
    bare, bare_cpu = cpu_timed(
        lambda: look(hed, picture, LAYERS, index=index, groups=0), args.repeat
    )
    forward, forward_cpu = cpu_timed(lambda: see(hed, LAYERS, picture), args.repeat)
    seen = see(hed, LAYERS, picture)
    print(f"1. artwork view, vgg16-hed, {', '.join(LAYERS)}, top 8 ({len(index.images())} images)")
    print(
        f"   (wall s, CPU s of this process; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(f"   whole view, K = 6:          {full:6.3f} s, CPU {full_cpu:6.3f} s   (target ≤ 1 s)")
    print(
        f"   whole view, no groups:      {bare:6.3f} s, CPU {bare_cpu:6.3f} s   ({bare_cpu / full_cpu:.2f} of it)"
    )
    print(
        f"   forward pass alone:         {forward:6.3f} s, CPU {forward_cpu:6.3f} s   ({forward_cpu / full_cpu:.2f})"
    )
    for layer in seen:  # type: ignore[union-attr]
        nmf, _ = timed(lambda layer=layer: factor_groups(layer, 6), args.repeat)
        ranks, _ = timed(
            lambda layer=layer: unit_percentiles(index, layer.name, layer.maxima()), args.repeat
        )
        shape = f"{layer.values.shape[0] * layer.values.shape[1]} × {layer.units}"
        print(
            f"   {layer.name:13s} NMF {shape:>11s}: {nmf:6.3f} s   percentiles {ranks * 1000:5.1f} ms"
        )
    largest = max(seen, key=lambda layer: layer.values.size)  # type: ignore[union-attr]
    nmf_section(largest, args.repeat)


def nmf_section(layer: object, repeat: int) -> None:
    from sklearn.decomposition import NMF

    from wga.corpus.look import NMF_MAX_ITER, NMF_TOL, factorise

    data = np.maximum(layer.output(), 0).reshape(-1, layer.units)  # type: ignore[attr-defined]

    def default_threads() -> object:
        model = NMF(6, init="nndsvda", max_iter=NMF_MAX_ITER, tol=NMF_TOL, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as look: the best after max_iter is what it shows
            return model.fit_transform(data)

    one, _ = timed(lambda: factorise(data, 6), repeat)
    many, _ = timed(default_threads, repeat)
    print(f"2. NMF of {layer.name} ({data.shape[0]} × {data.shape[1]}, K = 6)")  # type: ignore[attr-defined]
    print(f"   BLAS on 1 thread (look):    {one:6.3f} s")
    print(f"   BLAS default threads:       {many:6.3f} s   ({many / one:.2f}×)")


def percentile_section(rows: int, repeat: int) -> None:
    from wga.corpus.ranks import percentiles_among

    rng = np.random.default_rng(0)
    maxima = rng.gamma(2.0, 20.0, size=(rows, 512)).astype(np.float16)
    values = rng.gamma(2.0, 20.0, size=512).astype(np.float32)
    direct, counted = timed(lambda: percentiles_among(maxima, values), max(1, repeat // 2))
    started = time.perf_counter()
    table = np.sort(maxima, axis=0).T.copy()
    build = time.perf_counter() - started
    values16 = values.astype(np.float16)

    def search() -> np.ndarray:
        lower = [np.searchsorted(table[u], values16[u], side="left") for u in range(512)]
        return 100.0 * np.asarray(lower) / rows

    binary, found = timed(search, repeat)
    assert np.allclose(found, counted)  # type: ignore[arg-type]
    print(f"3. percentiles of 512 units among {rows:,} artworks")
    print(f"   direct count:               {direct * 1000:7.1f} ms")
    print(
        f"   sorted table (look):        {binary * 1000:7.1f} ms   ({direct / binary:.0f}× faster)"
    )
    print(f"   building the table once:    {build * 1000:7.1f} ms")


def similar_section(rows: int, repeat: int) -> None:
    from wga.corpus.similar import Search

    rng = np.random.default_rng(1)
    matrix = rng.gamma(2.0, 20.0, size=(rows, 512)).astype(np.float16)
    started = time.perf_counter()
    search = Search(matrix)
    build = time.perf_counter() - started
    query = np.asarray(matrix[7], np.float32)
    warm, _ = timed(lambda: search.query(query, 12, exclude=7), repeat)

    def every_time() -> object:
        return Search(matrix).query(query, 12, exclude=7)

    cold, _ = timed(every_time, max(1, repeat // 2))
    print(f"4. similar artworks, exact cosine over {rows:,} rows × 512")
    print(f"   query on kept rows (similar): {warm * 1000:7.1f} ms   (target ≤ 100 ms)")
    print(f"   normalising on every query:   {cold * 1000:7.1f} ms   ({cold / warm:.1f}×)")
    print(
        f"   normalising once:             {build * 1000:7.1f} ms, {search.nbytes / 2**20:.0f} MB kept"
    )


def style_section(args: argparse.Namespace, work: Path) -> None:
    """The probe's core (feed → model → reduction) with and without the style statistics."""
    from wga.corpus.corpus import open_corpus
    from wga.corpus.feed import feed
    from wga.corpus.probe import Prober
    from wga.data.synthetic import make_synthetic_dataset
    from wga.models import ModelRegistry

    hed = ModelRegistry(None).load("vgg16-hed")
    per_class = {"train": max(1, args.probe_images // 3)}
    corpus = open_corpus(
        make_synthetic_dataset(work / "style-corpus", per_class=per_class, side=160, seed=1)
    )
    ids = np.arange(len(corpus))
    print(f"5. the probe's style statistics, {len(corpus)} images, batches of 16")
    for layers in (LAYERS, ["block1_conv2", "block2_conv2"]):
        probers = {style: Prober(hed, layers, 4, style=style) for style in (False, True)}
        for prober in probers.values():  # warm: traced and compiled
            prober(next(iter(feed(corpus, prober.rule, ids[:16], 16))))
        seconds: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeat):
            for style in (False, True):  # interleaved: the machine's load hits both alike
                prober = probers[style]
                started, used = time.perf_counter(), time.process_time()
                for batch in feed(corpus, prober.rule, ids, 16):
                    prober(batch)
                seconds[style].append(time.perf_counter() - started)
                cpu[style].append(time.process_time() - used)
        without, with_style = (statistics.median(seconds[flag]) for flag in (False, True))
        without_cpu, with_cpu = (statistics.median(cpu[flag]) for flag in (False, True))
        print(
            f"   {', '.join(layers):38s} wall {without:6.2f} → {with_style:6.2f} s "
            f"({100 * (with_style / without - 1):+5.1f} %), CPU {without_cpu:6.2f} → "
            f"{with_cpu:6.2f} s ({100 * (with_cpu / without_cpu - 1):+5.1f} %; target ≤ 10 %)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="synthetic corpus probed first")
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic rows for 3 and 4")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--probe-images", type=int, default=96, help="corpus of section 5")
    args = parser.parse_args()

    from wga.quiet import quiet_keras, silence_tensorflow

    silence_tensorflow()
    quiet_keras()
    with tempfile.TemporaryDirectory() as temp:
        view_section(args, Path(temp))
        percentile_section(args.rows, args.repeat)
        similar_section(args.rows, args.repeat)
        style_section(args, Path(temp))


if __name__ == "__main__":
    main()
