"""How fast the render queue answers: batching, pre-emption and API latency, side by side.

1. **Batching.** 32 previews of one layer requested at once (one ``submit_many``: the queue
   renders them in shared batches) versus the same 32 requested one after another (each waits
   for the previous one, as a client without batching would). Target: ≥ 3× faster at once.
2. **Pre-emption.** Time from a high-priority request to its first snapshot on disk, on an idle
   queue and while a long low-priority render runs; and how long it would have waited for the
   low-priority render to finish without pre-emption.
3. **API latency under load.** ``GET /api/status`` p50/p95 through the real kernel gateway, idle
   and with N concurrent clients while a render runs (every body must parse as JSON).
4. **Polling under load.** N clients × M requests polling a running job and the queue status
   while a render runs: through the kernel (``GET /api/renders/:id``, ``GET /api/status``) and,
   when the server offers it, through the fast path (each job's ``status_url`` and the status
   file, served without a kernel round-trip). Target: p95 ≤ 100 ms on the fast path, 0 errors.
   ``--only-polling`` runs just this part (on an older checkout it measures the kernel path only:
   the "before").
5. **The job journal's cost.** What journalling adds to accepting a new job: the journal's own
   append (``Journal.add`` of one job, the work a request waits for), then ``RenderQueue.submit``
   and ``POST /api/renders`` through the real kernel gateway with and without the journal, side
   by side — each a fresh recipe queued behind a cheap, more urgent render that keeps the worker
   busy (the new jobs never start, so they cost no CPU). With a sync to disk every second (the
   default) and on every write. The variants take turns request by request, so that a busy
   moment of the machine hits each alike. Target: the journal adds ≤ 5 ms to the p95.
   ``--only-journal`` runs just this part.

Run: ``PYTHONPATH=. python benchmarks/queue_speed.py`` (about 3–6 minutes on 2 CPU cores;
``--skip-gateway`` leaves out part 3). Uses the offline model ``vgg16-hed``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from wga.paths import Places
from wga.quiet import silence_tensorflow

silence_tensorflow()

MODEL = "vgg16-hed"


class Table:
    """Rows printed as they are measured (a long run shows its progress)."""

    WIDTH = 78

    def __init__(self) -> None:
        print(f"{'measure':<{self.WIDTH}}  value", flush=True)
        print(f"{'-' * self.WIDTH}  {'-' * 30}", flush=True)

    def append(self, row: tuple[str, str]) -> None:
        print(f"{row[0]:<{self.WIDTH}}  {row[1]}", flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def batching(registry, args, rows: Table) -> None:
    from wga.serve.queue import RenderQueue
    from wga.vis.recipe import Recipe

    with tempfile.TemporaryDirectory() as folder:
        queue = RenderQueue(folder, registry.load, devices=["/CPU:0"], max_batch=32).start()
        loaded = registry.load(MODEL)

        def recipes(seed: int) -> list[Recipe]:
            return [
                Recipe(MODEL, args.layer, unit, args.size, "preview", args.steps, seed)
                for unit in range(args.units)
            ]

        # Warm up: trace the compiled steps for a full batch and for a single image, so that
        # neither side pays for tracing in the timed part.
        for view in queue.submit_many(recipes(98), loaded.fingerprint):
            queue.wait(view["id"], 3600)
        queue.wait(queue.submit(recipes(99)[0], loaded.fingerprint)["id"], 600)
        started = time.perf_counter()
        views = queue.submit_many(recipes(1), loaded.fingerprint)
        for view in views:
            assert queue.wait(view["id"], 3600)["status"] == "done"
        at_once = time.perf_counter() - started
        started = time.perf_counter()
        for recipe in recipes(2):
            assert queue.wait(queue.submit(recipe, loaded.fingerprint)["id"], 3600)["status"] == (
                "done"
            )
        one_by_one = time.perf_counter() - started
        queue.stop()
    label = f"{args.units} previews, {args.layer}, {args.size} px, {args.steps} steps"
    rows.append((f"{label}: requested at once", f"{at_once:.1f} s"))
    rows.append((f"{label}: one after another", f"{one_by_one:.1f} s"))
    rows.append(("  speed-up of batching (target ≥ 3×)", f"{one_by_one / at_once:.1f}×"))


def preemption(registry, args, rows: Table) -> None:
    from wga.serve.queue import RenderQueue
    from wga.vis.png import save_png
    from wga.vis.recipe import Recipe

    first_write: dict[str, float] = {}

    def timed_writer(path, image, metadata) -> None:
        first_write.setdefault(Path(path).stem, time.perf_counter())
        save_png(path, image, metadata)

    def first_snapshot(render: str) -> float:
        while render not in first_write:
            time.sleep(0.002)
        return first_write[render]

    layer, low_size, urgent_size = "block4_conv1", args.low_size, args.urgent_size
    with tempfile.TemporaryDirectory() as folder:
        queue = RenderQueue(
            folder, registry.load, devices=["/CPU:0"], png_writer=timed_writer
        ).start()
        fingerprint = registry.load(MODEL).fingerprint
        for size in (urgent_size, low_size):  # trace both compiled steps before timing
            warm = queue.submit(Recipe(MODEL, layer, 1, size, steps=2), fingerprint)
            queue.wait(warm["id"], 600)

        started = time.perf_counter()
        idle = queue.submit(Recipe(MODEL, layer, 7, urgent_size, steps=32), fingerprint, 10)
        idle_latency = first_snapshot(idle["id"]) - started
        queue.wait(idle["id"], 600)

        low = queue.submit(Recipe(MODEL, layer, 3, low_size, steps=args.low_steps), fingerprint)
        while queue.get(low["id"])["progress"] < 0.02:
            time.sleep(0.01)
        p0, t0 = queue.get(low["id"])["progress"], time.perf_counter()
        while queue.get(low["id"])["progress"] < p0 + 0.02:
            time.sleep(0.01)
        seconds_per_progress = (time.perf_counter() - t0) / (queue.get(low["id"])["progress"] - p0)
        parked_at = queue.get(low["id"])["progress"]
        started = time.perf_counter()
        busy = queue.submit(Recipe(MODEL, layer, 8, urgent_size, steps=32), fingerprint, 10)
        busy_latency = first_snapshot(busy["id"]) - started
        queue.wait(busy["id"], 600)
        resumed = queue.get(low["id"])
        while queue.get(low["id"])["progress"] <= resumed["progress"]:
            time.sleep(0.01)
        resumed_at = queue.get(low["id"])["progress"]
        would_wait = (1.0 - parked_at) * seconds_per_progress
        queue.cancel(low["id"])
        preempted = queue.status()["counts"]["preempted"]
        queue.stop()
    urgent = f"urgent {urgent_size} px job → its first snapshot"
    rows.append((f"{urgent}, idle queue", f"{idle_latency * 1000:.0f} ms"))
    rows.append(
        (
            f"{urgent}, during a {low_size} px × {args.low_steps}-step render",
            f"{busy_latency * 1000:.0f} ms",
        )
    )
    rows.append(("  … without pre-emption it would have waited about", f"{would_wait:.0f} s"))
    rows.append(
        (
            "  the long render: parked, then resumed (not restarted)",
            f"at {parked_at:.1%} → {resumed_at:.1%} ({preempted} pre-emption)",
        )
    )


def api_latency(args, rows: Table) -> None:
    import requests

    from wga.serve.gateway import Gateway, free_port

    with tempfile.TemporaryDirectory() as folder, open(Path(folder) / "gateway.log", "wb") as log:
        gateway = Gateway(
            port=free_port(), places=Places.resolve(base=folder), workdir=Path(folder), log_file=log
        )
        with gateway:
            url = gateway.url

            def timed(session, path: str) -> float:
                started = time.perf_counter()
                response = session.get(url + path, timeout=300)
                elapsed = time.perf_counter() - started
                json.loads(response.text)  # leaked output would break this
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
                return elapsed

            session = requests.Session()
            idle = [timed(session, "/api/status") for _ in range(50)]
            render = session.post(
                url + "/api/renders",
                json={
                    "model": MODEL,
                    "layer": "block4_conv1",
                    "unit": 5,
                    "size": 224,
                    "steps": 5000,
                },
                timeout=300,
            ).json()
            while session.get(url + f"/api/renders/{render['id']}").json()["status"] != "running":
                time.sleep(0.1)
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

            def client(index: int) -> None:
                own = requests.Session()
                for request in range(args.requests):
                    path = "/api/status" if (index + request) % 2 else "/api/models"
                    try:
                        elapsed = timed(own, path)
                    except Exception as error:
                        with lock:
                            errors.append(str(error))
                    else:
                        if path == "/api/status":
                            with lock:
                                latencies.append(elapsed)

            started = time.perf_counter()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
            session.delete(url + f"/api/renders/{render['id']}")
    total = args.clients * args.requests
    rows.append(
        (
            "GET /api/status, idle: p50 / p95",
            f"{statistics.median(idle) * 1000:.0f} / {percentile(idle, 0.95) * 1000:.0f} ms",
        )
    )
    rows.append(
        (
            f"GET /api/status, {args.clients} clients × {args.requests} status/models requests "
            "during a render: p50 / p95",
            f"{statistics.median(latencies) * 1000:.0f} / "
            f"{percentile(latencies, 0.95) * 1000:.0f} ms",
        )
    )
    rows.append(
        (
            "  throughput, errors or invalid JSON bodies",
            f"{total / wall:.1f} req/s, {len(errors)} of {total}",
        )
    )


def polling(args, rows: Table) -> None:
    """Job and status polling during a render, through the kernel and through the fast path."""
    import requests

    from wga.serve.gateway import Gateway, free_port

    with tempfile.TemporaryDirectory() as folder, open(Path(folder) / "gateway.log", "wb") as log:
        gateway = Gateway(
            port=free_port(), places=Places.resolve(base=folder), workdir=Path(folder), log_file=log
        )
        with gateway:
            url = gateway.url
            session = requests.Session()
            body = {"model": MODEL, "layer": "block4_conv1", "unit": 6, "size": 224, "steps": 5000}
            job = session.post(url + "/api/renders", json=body, timeout=300).json()
            while session.get(url + f"/api/renders/{job['id']}").json()["status"] != "running":
                time.sleep(0.1)
            status = session.get(url + "/api/status", timeout=300).json()
            paths = {"kernel": [f"/api/renders/{job['id']}", "/api/status"]}
            if job.get("status_url") and status.get("status_url"):
                paths["fast path"] = [job["status_url"], status["status_url"]]
            for kind, (job_path, status_path) in paths.items():
                latencies, errors, wall = _hammer(url, [job_path, status_path], args)
                total = args.clients * args.requests
                for name, values in zip(("job", "status"), latencies, strict=True):
                    rows.append(
                        (
                            f"{kind}: {name} polling, {args.clients} clients × {args.requests} "
                            "requests during a render: p50 / p95",
                            f"{statistics.median(values) * 1000:.0f} / "
                            f"{percentile(values, 0.95) * 1000:.0f} ms",
                        )
                    )
                rows.append(
                    (
                        f"  {kind}: throughput, errors or invalid JSON bodies",
                        f"{total / wall:.1f} req/s, {len(errors)} of {total}",
                    )
                )
            session.delete(url + f"/api/renders/{job['id']}")


def journal_cost(registry, args, rows: Table) -> None:
    """Accepting new jobs with and without the job journal (see the module docstring)."""
    import requests

    from wga.serve.gateway import Gateway, free_port
    from wga.serve.journal import Entry, Journal
    from wga.serve.queue import RenderQueue
    from wga.vis.recipe import Recipe

    count = args.journal_rounds * 10
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, sync) in enumerate((("sync every 1 s", 1.0), ("sync every write", 0.0))):
            journal, _ = Journal.open(Path(folder) / str(index), sync)
            times[name] = []
            for seed in range(count):
                recipe = Recipe(MODEL, args.layer, 1, size=args.size, steps=8, seed=seed)
                entry = Entry(f"{seed:024x}", recipe.as_dict(), "f" * 16, 0, "c", ["c"], 0.0, seed)
                started = time.perf_counter()
                journal.add([entry])
                times[name].append(time.perf_counter() - started)
                time.sleep(0.005)  # requests arrive apart; the syncer runs between them
            journal.close()
    _journal_rows(rows, "Journal.add of one job (the journal's own work)", times, added=False)

    fingerprint = registry.load(MODEL).fingerprint
    blocker = Recipe(MODEL, "block1_conv1", 5, size=64, steps=10_000)
    for variants in (
        {"no journal": None, "journal, sync every 1 s (default)": 1.0},
        {"journal, sync every write": 0.0},
    ):
        times = {name: [] for name in variants}
        with tempfile.TemporaryDirectory() as folder:
            queues = {}
            for index, (name, sync) in enumerate(variants.items()):
                journal = None if sync is None else Path(folder) / str(index) / "journal"
                queue = RenderQueue(
                    Path(folder) / str(index) / "renders", registry.load, _SleepingBatch,
                    journal=journal, journal_sync_s=sync or 0.0,
                )  # fmt: skip
                queues[name] = queue.start()
                queue.submit(blocker, fingerprint, 10)  # busy (asleep: no CPU) ahead of all
            for seed in range(count):  # the variants take turns, request by request
                for name, queue in queues.items():
                    recipe = Recipe(MODEL, args.layer, 1, size=args.size, steps=8, seed=seed)
                    started = time.perf_counter()
                    queue.submit(recipe, fingerprint)
                    times[name].append(time.perf_counter() - started)
                time.sleep(0.005)
            for queue in queues.values():
                queue.stop()
        _journal_rows(rows, "RenderQueue.submit of a new job", times)

    times = {"no journal (WGA_JOURNAL_SYNC=off)": [], "journal (default)": []}
    with tempfile.TemporaryDirectory() as folder:
        gateways = []
        for index, name in enumerate(times):
            home = Path(folder) / str(index)
            home.mkdir()
            env = {"WGA_JOURNAL_SYNC": "off"} if index == 0 else {}
            log = open(home / "gateway.log", "wb")  # noqa: SIM115 - closed below
            gateway = Gateway(
                port=free_port(), places=Places.resolve(base=home), workdir=home, log_file=log,
                env=env,
            )  # fmt: skip
            gateways.append((name, gateway.__enter__(), log))
        try:
            sessions = {name: requests.Session() for name in times}
            body = {"model": MODEL, "layer": "block1_conv1", "unit": 5, "size": 64}
            body.update(steps=9999, priority=10)  # cheap, and ahead of everything below
            for name, gateway, _ in gateways:
                sessions[name].post(gateway.url + "/api/renders", json=body, timeout=300)
            for seed in range(count):  # the two servers take turns, request by request
                for name, gateway, _ in gateways:
                    body = {"model": MODEL, "layer": args.layer, "unit": 1, "size": args.size,
                            "steps": 8, "seed": seed}  # fmt: skip
                    started = time.perf_counter()
                    response = sessions[name].post(
                        gateway.url + "/api/renders", json=body, timeout=300
                    )
                    times[name].append(time.perf_counter() - started)
                    if response.status_code != 202:
                        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
        finally:
            for _, gateway, log in gateways:
                gateway.__exit__(None, None, None)
                log.close()
    _journal_rows(rows, "POST /api/renders of a new job, through the gateway", times)


class _SleepingBatch:
    """A batch that keeps a worker busy without using the CPU: in-process, the queue's own
    costs are measured, not a render's competition for the cores."""

    total_steps = 10**9

    def __init__(self, loaded, recipes) -> None:
        self.recipes, self.steps_done = list(recipes), 0

    @property
    def done(self) -> bool:
        return False

    def run(self, steps: int = 1) -> None:
        time.sleep(0.05)
        self.steps_done += steps

    def images(self):
        import numpy as np

        return np.zeros((len(self.recipes), 8, 8, 3), "uint8")

    def metadata(self, index: int) -> dict:
        return self.recipes[index].as_dict()


def _journal_rows(
    rows: Table, what: str, times: dict[str, list[float]], added: bool = True
) -> None:
    base = None
    for name, values in times.items():
        p50, p95 = statistics.median(values) * 1000, percentile(values, 0.95) * 1000
        change = "" if base is None or not added else f"  (p95 {p95 - base:+.2f} ms)"
        base = p95 if base is None else base
        rows.append(
            (f"{what}, {name}: p50 / p95 over {len(values)}", f"{p50:.2f} / {p95:.2f} ms{change}")
        )


def _hammer(url: str, paths: list[str], args) -> tuple[list[list[float]], list[str], float]:
    """``args.clients`` threads × ``args.requests`` GETs alternating over ``paths``."""
    import requests

    latencies: list[list[float]] = [[] for _ in paths]
    errors: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        own = requests.Session()
        for request in range(args.requests):
            which = (index + request) % len(paths)
            started = time.perf_counter()
            try:
                response = own.get(url + paths[which], timeout=300)
                json.loads(response.text)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code} {response.text[:200]}")
            except Exception as error:
                with lock:
                    errors.append(str(error))
            else:
                with lock:
                    latencies[which].append(time.perf_counter() - started)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--layer", default="block3_conv1")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=16, help="steps per preview")
    parser.add_argument("--low-size", type=int, default=224)
    parser.add_argument("--low-steps", type=int, default=512)
    parser.add_argument("--urgent-size", type=int, default=128)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--skip-batching", action="store_true")
    parser.add_argument("--skip-preemption", action="store_true")
    parser.add_argument("--skip-gateway", action="store_true")
    parser.add_argument("--only-polling", action="store_true", help="only part 4")
    parser.add_argument("--only-journal", action="store_true", help="only part 5")
    parser.add_argument("--journal-rounds", type=int, default=20, help="× 10 requests a variant")
    args = parser.parse_args()

    from wga.models import ModelRegistry
    from wga.quiet import quiet_keras

    quiet_keras()
    registry = ModelRegistry(None)
    rows = Table()
    if args.only_polling:
        polling(args, rows)
        return 0
    if args.only_journal:
        journal_cost(registry, args, rows)
        return 0
    if not args.skip_batching:
        batching(registry, args, rows)
    if not args.skip_preemption:
        preemption(registry, args, rows)
    if not args.skip_gateway:
        api_latency(args, rows)
        polling(args, rows)
    journal_cost(registry, args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
