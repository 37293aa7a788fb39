"""Downloader speed, resume cost and memory, side by side, against a local fake WGA.

    PYTHONPATH=$PWD python benchmarks/download_speed.py [--rows 10000] [--latency 0.05]

1. Throughput with 8 workers versus 1 while the server adds 50 ms to every request
   (the WGA is far away: latency, not bandwidth, bounds a polite crawler). Target: ≥ 6×.
2. A rerun over the complete download: how many image requests it makes. Target: 0.
3. The global rate limit: requests per second achieved with --rate 20 and 8 workers.
4. Memory over a 10,000-row catalog: resident set size sampled while it runs. Target: flat
   (the pool keeps a bounded window of jobs; images are never all in memory).

Numbers, not assertions: speed belongs here, not in the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from wga.data.catalog import Artwork, load_catalog
from wga.data.download import DownloadConfig, download

SERVER = Path(__file__).resolve().parent.parent / "tests" / "wga_server.py"


@contextlib.contextmanager
def served(rows: int, seed: int, latency: float = 0.0, size: int = 32) -> Iterator[str]:
    """The fake WGA in its own process (so its memory and CPU are not counted as ours)."""
    command = [sys.executable, str(SERVER), "--generate", str(rows), "--seed", str(seed)]
    command += ["--latency", str(latency), "--size", str(size), str(size * 3 // 4)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


def image_hits(base_url: str) -> int:
    return int(requests.get(base_url + "/_stats", timeout=10).json()["image_hits"])


def catalog_records(base_url: str, cache: Path) -> list[Artwork]:
    return load_catalog(base_url + "/database/download/data_txt.zip", cache).records


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; falls back to peak RSS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config(out: Path, server: str, workers: int, rate: float | None) -> DownloadConfig:
    return DownloadConfig(
        out, base_url=server, workers=workers, rate=rate, progress=False, backoff=0.05
    )


def throughput(rows: int, latency: float) -> None:
    results = {}
    with served(rows, 11, latency) as server, tempfile.TemporaryDirectory() as tmp:
        records = catalog_records(server, Path(tmp) / "catalog")
        for workers in (1, 8):
            out = Path(tmp) / f"w{workers}"
            started = time.perf_counter()
            summary = download(records, config(out, server, workers, None))
            seconds = time.perf_counter() - started
            assert summary.ok == rows, summary.lines()
            results[workers] = rows / seconds
            print(
                f"  {workers} worker{'s' if workers > 1 else ' '}: {rows} images in "
                f"{seconds:5.2f} s = {results[workers]:6.1f} images/s"
            )
        print(f"  speed-up 8 vs 1: {results[8] / results[1]:.2f}x (target >= 6x)")

        before = image_hits(server)
        started = time.perf_counter()
        again = download(records, config(Path(tmp) / "w8", server, 8, None))
        print(
            f"  rerun over the complete download: {image_hits(server) - before} image requests, "
            f"{again.cached} already there, {time.perf_counter() - started:.2f} s (target: 0 requests)"
        )


def rate_limit(rate: float, rows: int) -> None:
    with served(rows, 12) as server, tempfile.TemporaryDirectory() as tmp:
        records = catalog_records(server, Path(tmp) / "catalog")
        started = time.perf_counter()
        download(records, config(Path(tmp), server, 8, rate))
        seconds = time.perf_counter() - started
    print(
        f"  --rate {rate:g} with 8 workers: {rows} requests in {seconds:.2f} s = "
        f"{rows / seconds:.1f} requests/s"
    )


def memory(rows: int) -> None:
    samples: list[tuple[int, float]] = []
    with served(rows, 13, size=16) as server, tempfile.TemporaryDirectory() as tmp:
        gc.collect()
        base = rss_mb()
        records = catalog_records(server, Path(tmp) / "catalog")
        parsed = rss_mb()
        catalog_mb = sum(p.stat().st_size for p in (Path(tmp) / "catalog").iterdir()) / 1e6
        done = 0
        step = max(1, rows // 10)

        def sample(_record: object, _outcome: object) -> None:
            nonlocal done
            done += 1
            if done % step == 0:
                samples.append((done, rss_mb()))

        started = time.perf_counter()
        summary = download(records, config(Path(tmp) / "dl", server, 8, None), on_result=sample)
        seconds = time.perf_counter() - started
    print(
        f"  catalog of {rows} rows ({catalog_mb:.2f} MB zipped) fetched and parsed: "
        f"RSS {base:.0f} -> {parsed:.0f} MB"
    )
    print(f"  downloaded {summary.ok} images in {seconds:.1f} s; RSS while downloading:")
    print("   " + "  ".join(f"{n}: {mb:.0f} MB" for n, mb in samples))
    first, last = samples[0][1], samples[-1][1]
    print(
        f"  growth from {samples[0][0]} to {samples[-1][0]} images: {last - first:+.1f} MB "
        f"({(last - first) * 1024 / max(1, samples[-1][0] - samples[0][0]):.2f} kB per image: "
        "the per-row outcome kept for the manifest)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows for the memory run")
    parser.add_argument("--throughput-rows", type=int, default=96)
    parser.add_argument("--latency", type=float, default=0.05, help="added per request (s)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"1+2. throughput with {args.latency * 1000:.0f} ms latency per request, and resume:")
    throughput(args.throughput_rows, args.latency)
    print("3. global rate limit:")
    rate_limit(20.0, 60)
    print(f"4. memory over a {args.rows}-row catalog (8 workers, no latency):")
    memory(args.rows)


if __name__ == "__main__":
    main()
