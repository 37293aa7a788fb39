"""Bytes on disk after many previews, without and with a cache cap, side by side.

2,000 previews go through the real :class:`~wga.serve.queue.RenderQueue` and
:class:`~wga.serve.cache.RenderCache` (state files, PNG writer, LRU eviction), rendered by a
cheap stand-in engine: each "preview" is a 128 px random-noise image, the worst case for PNG
compression (≈ 49 KB a file, more than a real 128 px preview), so the folder fills fast and a
real render's minutes are not spent here. While they run, a few threads poll recent renders as
pages do (each read marks the render used), and must never find a file missing.

Run: ``PYTHONPATH=. python benchmarks/cache_eviction.py [--previews 2000] [--cap 50MB]``
(about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from wga.serve.cache import DEFAULT_CACHE_MAX, mark_used, parse_size
from wga.serve.queue import RenderQueue

FINGERPRINT = "bench"
SIZE = 128


@dataclass(frozen=True)
class Preview:
    model: str = "bench"
    layer: str = "conv"
    unit: int = 0
    size: int = SIZE
    steps: int = 1

    def batch_key(self) -> tuple:
        return (self.model, self.layer, self.size)

    def as_dict(self) -> dict:
        return asdict(self)


class NoiseBatch:
    """A batch that is done after one step: one noise image per recipe."""

    total_steps = 1

    def __init__(self, loaded: object, recipes: list[Preview]) -> None:
        self.recipes = recipes
        self.steps_done = 0
        seeds = [recipe.unit for recipe in recipes]
        self._images = np.stack(
            [np.random.default_rng(s).integers(0, 256, (SIZE, SIZE, 3), np.uint8) for s in seeds]
        )

    @property
    def done(self) -> bool:
        return self.steps_done >= 1

    def run(self, steps: int = 1) -> None:
        self.steps_done = 1

    def images(self) -> np.ndarray:
        return self._images

    def metadata(self, index: int) -> dict:
        return self.recipes[index].as_dict()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def run(previews: int, cap: int, pollers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "renders"
        queue = RenderQueue(
            folder,
            lambda name: SimpleNamespace(fingerprint=FINGERPRINT),
            NoiseBatch,
            devices=[None],
            cache_max=cap,
            snapshot_interval_s=60,
        ).start()
        recent: list[str] = []
        missing = [0]
        peak = [0]
        stop = threading.Event()

        def page() -> None:  # polls the newest renders, as a page following its grid would
            while not stop.is_set():
                for render in list(recent[-8:]):
                    state = folder / f"{render}.json"
                    mark_used(state)
                    try:
                        if json.loads(state.read_text())["status"] == "done":
                            (folder / f"{render}.png").read_bytes()
                    except FileNotFoundError:
                        missing[0] += 1
                peak[0] = max(peak[0], queue.cache.usage()["cache_bytes"])
                time.sleep(0.01)

        threads = [threading.Thread(target=page, daemon=True) for _ in range(pollers)]
        for thread in threads:
            thread.start()
        started = time.perf_counter()
        for first in range(0, previews, 32):  # a page's grid asks 32 at a time
            views = queue.submit_many(
                [Preview(unit=u) for u in range(first, min(previews, first + 32))], FINGERPRINT
            )
            recent.extend(view["id"] for view in views)
            for view in views:
                queue.wait(view["id"], 120)
        elapsed = time.perf_counter() - started
        stop.set()
        for thread in threads:
            thread.join()
        usage = queue.cache.usage()
        queue.stop()
        return {
            "disk": folder_bytes(folder),
            "reported": usage["cache_bytes"],
            "entries": usage["cache_entries"],
            "evicted": usage["cache_evicted"],
            "peak": peak[0],
            "missing": missing[0],
            "rate": previews / elapsed,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--previews", type=int, default=2000)
    parser.add_argument("--cap", type=parse_size, default=parse_size("50MB"))
    parser.add_argument("--pollers", type=int, default=4)
    args = parser.parse_args()
    mb = 1024**2
    print(f"{'cache cap':<22}{'on disk':>10}{'peak':>10}{'entries':>9}{'evicted':>9}"
          f"{'missing':>9}{'previews/s':>12}")  # fmt: skip
    for label, cap in (
        ("none (4 GB default)", DEFAULT_CACHE_MAX),
        (f"{args.cap / mb:.0f} MB", args.cap),
    ):
        r = run(args.previews, cap, args.pollers)
        print(
            f"{label:<22}{r['disk'] / mb:>8.1f}MB{r['peak'] / mb:>8.1f}MB{r['entries']:>9.0f}"
            f"{r['evicted']:>9.0f}{r['missing']:>9.0f}{r['rate']:>12.0f}",
            flush=True,
        )
    print(f"({args.previews} previews of {SIZE} px random noise, ≈ 49 KB each; 'missing': a file "
          "a polling page did not find)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
