"""The render queue: worker threads that turn recipes into PNGs, with a content-addressed cache.

The 2018 original had one thread over a ``PriorityQueue`` that died on the first bad layer, could
not be interrupted, and rendered every request anew. This queue is meant to run for weeks:

* **Priorities.** A job's rank is its explicit ``priority`` (higher first), then its size
  (larger first, as in the original: an interesting unit is rendered large at once), then its
  arrival (FIFO).
* **Pre-emption at step granularity.** A worker advances its batch a few compiled steps at a
  time and, between chunks, looks for better-ranked work. If there is some, the running
  :class:`BatchRender` is *parked* (kept in memory, with its optimiser state) and resumed later
  where it stopped.
* **Batching.** Queued jobs with the same :meth:`Recipe.batch_key` (and model weights) are
  rendered as one batch: one compiled step advances a whole grid of previews (what that saves
  depends on the device; on a 2-core CPU the step is compute-bound and it saves little).
* **Content-addressed cache.** A job's id is a hash of its recipe and the model's weights
  fingerprint; finished PNGs and their records live in one folder (the static ``renders/``
  folder), so identical requests — concurrent ones, or after a restart — share one job.
* **Snapshots.** While a job runs its PNG is rewritten atomically every
  ``snapshot_interval_s``, so a page polling the file sees the image emerge.
* **Bounded and robust.** At most ``max_pending`` live jobs (more raise :class:`Unavailable`,
  an HTTP 503 with Retry-After); cancelling frees the slot at once; any exception fails only the
  jobs it concerns, and a worker that died anyway is restarted on the next request.

Nothing here prints: inside a kernel-gateway kernel a worker's stdout would land in whatever HTTP
response is being written at that moment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from wga.atomic import write_text_atomic
from wga.errors import InvalidInput, NotFound, Unavailable, WgaError

if TYPE_CHECKING:
    import numpy as np

    from wga.models import LoadedModel

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
LIVE: frozenset[str] = frozenset({"queued", "running"})

ID_LENGTH = 24  # hex digits of sha256: 96 bits, no collision among any realistic cache
_ID_PATTERN = re.compile(rf"^[0-9a-f]{{{ID_LENGTH}}}$")

DEFAULT_MAX_BATCH = 32  # units of one layer per compiled step; 32 previews fit on any CPU
DEFAULT_MAX_BATCH_PIXELS = 64 * 128 * 128  # per batch: 32 × 64 px, 20 × 224 px, 1 × 1024 px
# On a CPU the step is compute- and memory-bound: batches above ~16 previews measured slower per
# unit than single renders (benchmarks/queue_speed.py on 2 cores), so CPU workers batch less.
DEFAULT_MAX_BATCH_PIXELS_CPU = 16 * 64 * 64
DEFAULT_MAX_PENDING = 512  # live jobs (queued + running + parked) before 503
DEFAULT_SNAPSHOT_INTERVAL_S = 0.5  # how often a running job's PNG is rewritten
DEFAULT_CHUNK_STEPS = 1  # steps between pre-emption checks: a better job waits ≤ 1 step
FINISHED_JOBS_KEPT = 4096  # finished jobs remembered in memory (done ones also live on disk)


class RecipeLike(Protocol):
    """What the queue needs of a render recipe (:class:`wga.vis.render.Recipe`)."""

    @property
    def model(self) -> str: ...
    @property
    def size(self) -> int: ...
    def batch_key(self) -> tuple: ...
    def as_dict(self) -> dict: ...


class BatchLike(Protocol):
    """What the queue needs of a batch renderer (:class:`wga.vis.render.BatchRender`)."""

    total_steps: int
    steps_done: int

    @property
    def done(self) -> bool: ...
    def run(self, steps: int = 1) -> None: ...
    def images(self) -> np.ndarray: ...
    def metadata(self, index: int) -> dict: ...


ModelLoader = Callable[[str], "LoadedModel"]
BatchFactory = Callable[["LoadedModel", Sequence[Any]], BatchLike]
PngWriter = Callable[[Path, "np.ndarray", dict], None]


class AlreadyFinished(WgaError):
    """Cancelling a job that is no longer queued or running (HTTP 409 Conflict)."""

    http_status = 409

    def __init__(self, render: str, status: str) -> None:
        super().__init__(
            f"render {render} is already {status}; only queued or running renders can be cancelled"
        )


def render_id(recipe: RecipeLike, fingerprint: str) -> str:
    """The content address of a render: equal recipes on equal weights give equal ids."""
    payload = json.dumps(
        {"recipe": recipe.as_dict(), "weights": fingerprint}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:ID_LENGTH]


def check_id(render: str) -> str:
    """``render`` if it looks like an id (also keeps paths out of the cache folder)."""
    if not isinstance(render, str) or not _ID_PATTERN.match(render):
        raise NotFound(
            f"no render with id {render!r}: ids are {ID_LENGTH} hex digits, "
            "as returned by POST /api/renders"
        )
    return render


class RenderCache:
    """Finished renders on disk: ``<id>.png`` (the image, recipe in its text chunks) and
    ``<id>.json`` (the record). A PNG without a record is a snapshot of an unfinished job."""

    def __init__(self, directory: str | os.PathLike[str], writer: PngWriter | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._writer = writer
        self._count = sum(1 for _ in self.directory.glob("*.json"))
        self._lock = threading.Lock()

    def _write_png(self, path: Path, image: np.ndarray, metadata: dict) -> None:
        if self._writer is None:
            from wga.vis.png import save_png

            self._writer = save_png
        self._writer(path, image, metadata)

    def png_path(self, render: str) -> Path:
        return self.directory / f"{render}.png"

    def record_path(self, render: str) -> Path:
        return self.directory / f"{render}.json"

    def lookup(self, render: str) -> dict | None:
        """The record of a finished render, or ``None`` (also when its PNG went missing)."""
        record_path = self.record_path(render)
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            return None
        if not self.png_path(render).exists():
            return None
        return record

    def write_snapshot(self, render: str, image: np.ndarray, metadata: dict) -> None:
        self._write_png(self.png_path(render), image, metadata)

    def write_final(self, render: str, image: np.ndarray, metadata: dict, record: dict) -> None:
        """The image first, then the record: a record always points at a complete image."""
        self._write_png(self.png_path(render), image, metadata)
        existed = self.record_path(render).exists()
        write_text_atomic(self.record_path(render), json.dumps(record, indent=1, default=str))
        if not existed:
            with self._lock:
                self._count += 1

    def entries(self) -> int:
        return self._count


@dataclass(eq=False)
class Job:
    """One requested image. Mutated only under the queue's lock."""

    id: str
    recipe: Any
    fingerprint: str
    priority: int
    seq: int
    status: JobStatus = "queued"
    progress: float = 0.0
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    solo: bool = False  # render alone: its batch could not be built together with others

    def rank(self) -> tuple[int, int]:
        """Smaller ranks run first: higher priority, then larger size."""
        return (-self.priority, -int(self.recipe.size))

    def order(self) -> tuple[int, int, int]:
        return (*self.rank(), self.seq)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "progress": round(self.progress, 4),
            "error": self.error,
            "params": self.recipe.as_dict(),
            "priority": self.priority,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


def _view_from_record(record: dict) -> dict[str, Any]:
    return {
        "id": record["id"],
        "status": "done",
        "progress": 1.0,
        "error": None,
        "params": record.get("params", {}),
        "priority": record.get("priority", 0),
        "created": record.get("created"),
        "started": record.get("started"),
        "finished": record.get("finished"),
    }


@dataclass(eq=False)
class _Active:
    """A batch being rendered or parked; ``jobs[i]`` is batch element ``i``."""

    batch: BatchLike
    jobs: list[Job]
    last_snapshot: float = 0.0
    snapshots: int = 0

    def live(self) -> list[tuple[int, Job]]:
        return [(i, job) for i, job in enumerate(self.jobs) if job.status in LIVE]

    def order(self) -> tuple[int, int, int]:
        live = [job.order() for _, job in self.live()]
        return min(live) if live else (0, 0, 0)


@dataclass(eq=False)
class _Worker:
    name: str
    device: str | None
    thread: threading.Thread | None = None
    current: _Active | None = None
    parked: list[_Active] = field(default_factory=list)
    idle: bool = True
    batches: int = 0


def detect_devices() -> list[str | None]:
    """One worker per GPU when there are GPUs, else one CPU worker."""
    try:
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
    except Exception:  # no TensorFlow, or it cannot list devices: the CPU still works
        gpus = []
    return [gpu.name for gpu in gpus] or ["/CPU:0"]


class RenderQueue:
    """A priority queue of render jobs served by one worker thread per device.

    ``loader(model_name)`` returns a :class:`LoadedModel` (the registry's ``load``);
    ``batch_factory(loaded, recipes)`` returns a :class:`BatchRender`. Both run in the worker,
    so a model that cannot load fails only the jobs that asked for it.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        loader: ModelLoader,
        batch_factory: BatchFactory | None = None,
        *,
        devices: Sequence[str | None] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS,
        max_pending: int = DEFAULT_MAX_PENDING,
        snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S,
        chunk_steps: int = DEFAULT_CHUNK_STEPS,
        png_writer: PngWriter | None = None,
    ) -> None:
        if max_batch < 1 or max_pending < 1 or chunk_steps < 1:
            raise InvalidInput("max_batch, max_pending and chunk_steps must be at least 1")
        self.cache = RenderCache(cache_dir, png_writer)
        self._loader = loader
        self._batch_factory = batch_factory
        self._devices = list(devices) if devices is not None else None
        self.max_batch = max_batch
        self.max_batch_pixels = max_batch_pixels
        self.max_pending = max_pending
        self.snapshot_interval_s = snapshot_interval_s
        self.chunk_steps = chunk_steps
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._queued: dict[str, Job] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._workers: list[_Worker] = []
        self._seq = 0
        self._stopping = False
        self._started_at = time.time()
        self._batch_seconds = 5.0  # running mean of a batch's duration, for Retry-After
        self._counts = {"done": 0, "failed": 0, "cancelled": 0, "cache_hits": 0, "preempted": 0}

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> RenderQueue:
        """Start the workers (idempotent); Keras progress bars are switched off first."""
        with self._lock:
            if self._workers:
                return self
            if self._devices is None:
                self._devices = detect_devices()
            self._stopping = False
            for index, device in enumerate(self._devices):
                self._workers.append(_Worker(f"wga-render-{index}", device))
        if self._batch_factory is None:
            from wga.quiet import quiet_keras

            quiet_keras()
        for worker in self._workers:
            self._spawn(worker)
        return self

    def _spawn(self, worker: _Worker) -> None:
        worker.thread = threading.Thread(
            target=self._work, args=(worker,), name=worker.name, daemon=True
        )
        worker.thread.start()

    def _ensure_workers(self) -> None:
        """Restart a worker thread that died (it should never happen; if it does, heal)."""
        for worker in self._workers:
            if worker.thread is not None and not worker.thread.is_alive() and not self._stopping:
                log.error("worker %s had died; restarting it", worker.name)
                worker.current = None
                worker.idle = True
                self._spawn(worker)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the workers to finish their current step and exit."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        for worker in self._workers:
            if worker.thread is not None:
                worker.thread.join(timeout)

    # -- requests ---------------------------------------------------------------------------
    def submit(self, recipe: RecipeLike, fingerprint: str, priority: int = 0) -> dict[str, Any]:
        """Queue one render; returns its view (``done`` at once when the cache has it)."""
        return self.submit_many([recipe], fingerprint, priority)[0]

    def submit_many(
        self,
        recipes: Sequence[RecipeLike],
        fingerprint: str | Sequence[str],
        priority: int | Sequence[int] = 0,
    ) -> list[dict[str, Any]]:
        """Queue several renders at once, all or none (a full queue refuses the whole set).

        ``fingerprint`` and ``priority`` are one value for all recipes or one per recipe.
        """
        count = len(recipes)
        fingerprints = [fingerprint] * count if isinstance(fingerprint, str) else list(fingerprint)
        priorities = [priority] * count if isinstance(priority, int) else list(priority)
        if len(fingerprints) != count or len(priorities) != count:
            raise InvalidInput("give one fingerprint and one priority per recipe, or one for all")
        ids = [render_id(r, f) for r, f in zip(recipes, fingerprints, strict=True)]
        records = {}
        for render in ids:  # disk reads outside the lock
            if render not in self._jobs:
                record = self.cache.lookup(render)
                if record is not None:
                    records[render] = record
        with self._wake:
            self._ensure_workers()
            new = [
                render
                for render in dict.fromkeys(ids)
                if render not in records and not self._reusable(render)
            ]
            free = self.max_pending - self._live_count()
            if len(new) > free:
                raise Unavailable(
                    f"the render queue is full ({self.max_pending} jobs queued or running, "
                    f"{len(new)} more requested); retry later or cancel some renders",
                    retry_after=self._retry_after(),
                )
            views = []
            for recipe, render, weights, urgency in zip(
                recipes, ids, fingerprints, priorities, strict=True
            ):
                if render in records:
                    self._counts["cache_hits"] += 1
                    views.append(_view_from_record(records[render]))
                    continue
                job = self._jobs.get(render)
                if job is not None and job.status in LIVE:
                    if urgency > job.priority:  # a more urgent request for the same image
                        job.priority = urgency
                        self._wake.notify_all()
                    views.append(job.view())
                    continue
                if job is not None and job.status == "done" and self.cache.lookup(render):
                    self._counts["cache_hits"] += 1
                    views.append(job.view())
                    continue
                self._seq += 1
                job = Job(render, recipe, weights, int(urgency), self._seq)
                self._jobs[render] = job
                self._finished.pop(render, None)
                self._queued[render] = job
                views.append(job.view())
            self._wake.notify_all()
            return views

    def _reusable(self, render: str) -> bool:
        job = self._jobs.get(render)
        return job is not None and (job.status in LIVE or job.status == "done")

    def _live_count(self) -> int:
        return sum(1 for job in self._jobs.values() if job.status in LIVE)

    def _retry_after(self) -> int:
        workers = max(1, len(self._workers))
        return max(1, min(300, round(self._batch_seconds / workers)))

    def get(self, render: str) -> dict[str, Any]:
        """The job's current view; finished renders are also found on disk after a restart."""
        check_id(render)
        with self._lock:
            job = self._jobs.get(render)
            if job is not None:
                return job.view()
        record = self.cache.lookup(render)
        if record is None:
            raise NotFound(
                f"no render with id {render!r}: it was never requested here, or its files were "
                "deleted; POST /api/renders to make it"
            )
        return _view_from_record(record)

    def cancel(self, render: str) -> dict[str, Any]:
        """Cancel a queued, running or parked job; its slot is free at once."""
        check_id(render)
        with self._wake:
            job = self._jobs.get(render)
            if job is not None and job.status in LIVE:
                self._queued.pop(render, None)
                self._finish(job, "cancelled")
                self._wake.notify_all()
                return job.view()
        status = job.status if job is not None else self.get(render)["status"]  # or NotFound
        raise AlreadyFinished(render, status)

    def wait(self, render: str, timeout: float = 60.0) -> dict[str, Any]:
        """Block until the job is no longer live (for notebooks, tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.get(render)
            if view["status"] not in LIVE or time.monotonic() >= deadline:
                return view
            time.sleep(0.02)

    def status(self) -> dict[str, Any]:
        with self._lock:
            self._ensure_workers()
            running = []
            for worker in self._workers:
                active = worker.current
                if active is not None:
                    for _, job in active.live():
                        running.append(
                            {
                                "id": job.id,
                                "progress": round(job.progress, 4),
                                "params": job.recipe.as_dict(),
                                "worker": worker.name,
                            }
                        )
            parked = sum(len(active.live()) for w in self._workers for active in w.parked)
            return {
                "queued": len(self._queued),
                "parked": parked,
                "running": running,
                "live": self._live_count(),
                "capacity": self.max_pending,
                "max_batch": self.max_batch,
                "workers": [
                    {
                        "name": worker.name,
                        "device": worker.device,
                        "alive": bool(worker.thread and worker.thread.is_alive()),
                        "busy": not worker.idle,
                        "batches": worker.batches,
                    }
                    for worker in self._workers
                ],
                "workers_alive": bool(self._workers)
                and all(w.thread is not None and w.thread.is_alive() for w in self._workers),
                "cache_entries": self.cache.entries(),
                "counts": dict(self._counts),
                "uptime_s": round(time.time() - self._started_at, 1),
            }

    # -- bookkeeping (under the lock) ------------------------------------------------------
    def _finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        job.status = status
        job.error = error
        job.finished = time.time()
        if status == "done":
            job.progress = 1.0
        self._counts[status] += 1
        self._finished[job.id] = None
        while len(self._finished) > FINISHED_JOBS_KEPT:
            old, _ = self._finished.popitem(last=False)
            if self._jobs.get(old) is not None and self._jobs[old].status not in LIVE:
                del self._jobs[old]

    def _fail(self, jobs: Sequence[Job], error: BaseException) -> None:
        message = str(error) if isinstance(error, WgaError) else f"{type(error).__name__}: {error}"
        with self._wake:
            for job in jobs:
                if job.status in LIVE:
                    self._finish(job, "failed", message)
            self._wake.notify_all()

    def _better_waiting(self, worker: _Worker, active: _Active) -> bool:
        """Whether better-ranked work waits that no idle worker will take (under the lock)."""
        rank = min((job.rank() for _, job in active.live()), default=(0, 0))
        idle_elsewhere = any(w.idle for w in self._workers if w is not worker)
        if not idle_elsewhere and any(job.rank() < rank for job in self._queued.values()):
            return True
        return any(job.rank() < rank for parked in worker.parked for _, job in parked.live())

    def batch_limit(self, size: int, device: str | None = None) -> int:
        """Jobs per batch at ``size`` px on ``device``: large images batch less, so a step stays
        short and pre-emption stays quick; CPUs batch less than GPUs."""
        pixels = self.max_batch_pixels
        if device is not None and "CPU" in device.upper():
            pixels = min(pixels, DEFAULT_MAX_BATCH_PIXELS_CPU)
        return max(1, min(self.max_batch, pixels // (size * size)))

    def _next(self, worker: _Worker) -> tuple[str, _Active | list[Job]] | None:
        """The best task for ``worker``: a parked batch to resume or a new batch (under lock)."""
        worker.parked = [active for active in worker.parked if active.live()]
        best_job = min(self._queued.values(), key=Job.order, default=None)
        best_parked = min(worker.parked, key=_Active.order, default=None)
        if best_parked is not None and (
            best_job is None or best_parked.order() <= best_job.order()
        ):
            worker.parked.remove(best_parked)
            for _, job in best_parked.live():
                job.status = "running"
            return "resume", best_parked
        if best_job is None:
            return None
        key = best_job.recipe.batch_key()
        group = [best_job]
        if not best_job.solo:
            group = [
                job
                for job in sorted(self._queued.values(), key=Job.order)
                if not job.solo
                and job.fingerprint == best_job.fingerprint
                and job.recipe.batch_key() == key
            ][: self.batch_limit(int(best_job.recipe.size), worker.device)]
        now = time.time()
        for job in group:
            del self._queued[job.id]
            job.status = "running"
            job.started = job.started or now
        return "new", group

    # -- the worker ---------------------------------------------------------------------------
    def _work(self, worker: _Worker) -> None:
        """The worker loop: never lets an exception end the thread while the queue runs."""
        while True:
            with self._wake:
                worker.idle = True
                worker.current = None
                task = None
                while not self._stopping:
                    task = self._next(worker)
                    if task is not None:
                        break
                    self._wake.wait()
                if self._stopping:
                    return
                worker.idle = False
            kind, payload = task
            jobs = payload.jobs if isinstance(payload, _Active) else payload
            try:
                self._run(worker, kind, payload)
            except Exception as error:  # a failing batch fails its jobs, never the worker
                log.warning("render of %d job(s) failed: %s", len(jobs), error, exc_info=True)
                self._fail(jobs, error)

    def _device(self, worker: _Worker) -> contextlib.AbstractContextManager[Any]:
        if worker.device is None:
            return contextlib.nullcontext()
        import tensorflow as tf

        return tf.device(worker.device)

    def _make_batch(self, worker: _Worker, jobs: list[Job]) -> _Active | None:
        loaded = self._loader(jobs[0].recipe.model)
        if loaded.fingerprint != jobs[0].fingerprint:
            raise Unavailable(
                f"the weights of {jobs[0].recipe.model!r} changed since this render was "
                "requested; request it again"
            )
        factory = self._batch_factory
        if factory is None:
            from wga.vis.render import BatchRender

            factory = BatchRender
        try:
            with self._device(worker):
                batch = factory(loaded, [job.recipe for job in jobs])
        except Exception:
            if len(jobs) == 1:
                raise
            # One bad recipe must not fail its batch-mates: queue them again, each alone.
            with self._wake:
                for job in jobs:
                    if job.status in LIVE:
                        job.status, job.solo = "queued", True
                        self._queued[job.id] = job
                self._wake.notify_all()
            return None
        return _Active(batch, jobs)

    def _run(self, worker: _Worker, kind: str, payload: _Active | list[Job]) -> None:
        started = time.monotonic()
        active = payload if isinstance(payload, _Active) else self._make_batch(worker, payload)
        if active is None:
            return
        worker.current = active
        worker.batches += 1
        batch = active.batch
        while True:
            with self._lock:
                if self._stopping or not active.live():
                    return
            with self._device(worker):
                batch.run(max(1, min(self.chunk_steps, batch.total_steps - batch.steps_done)))
            progress = min(1.0, batch.steps_done / max(1, batch.total_steps))
            with self._lock:
                for _, job in active.live():
                    job.progress = progress
            if batch.done:
                self._finalise(active)
                elapsed = time.monotonic() - started
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
                return
            now = time.monotonic()
            if active.snapshots == 0 or now - active.last_snapshot >= self.snapshot_interval_s:
                self._snapshot(active)
            with self._wake:
                if self._better_waiting(worker, active):
                    for _, job in active.live():
                        job.status = "queued"
                    worker.parked.append(active)
                    self._counts["preempted"] += 1
                    return

    def _snapshot(self, active: _Active) -> None:
        images = active.batch.images()
        for index, job in self._live_items(active):
            metadata = dict(active.batch.metadata(index))
            metadata["snapshot_step"] = active.batch.steps_done
            self.cache.write_snapshot(job.id, images[index], metadata)
        active.snapshots += 1
        active.last_snapshot = time.monotonic()

    def _live_items(self, active: _Active) -> Iterator[tuple[int, Job]]:
        with self._lock:
            items = active.live()
        yield from items

    def _finalise(self, active: _Active) -> None:
        images = active.batch.images()
        for index, job in self._live_items(active):
            try:
                record = {
                    "id": job.id,
                    "params": job.recipe.as_dict(),
                    "fingerprint": job.fingerprint,
                    "priority": job.priority,
                    "created": job.created,
                    "started": job.started,
                    "finished": time.time(),
                }
                self.cache.write_final(job.id, images[index], active.batch.metadata(index), record)
            except Exception as error:  # e.g. disk full: this job fails, the others may not
                log.warning("could not save render %s: %s", job.id, error)
                self._fail([job], error)
                continue
            with self._wake:
                if job.status in LIVE:
                    self._finish(job, "done")
                self._wake.notify_all()
