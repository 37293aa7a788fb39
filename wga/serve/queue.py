"""The render queue: worker threads that turn recipes into PNGs, over a job table and a cache.

The 2018 original had one thread over a ``PriorityQueue`` that died on the first bad layer, could
not be interrupted, and rendered every request anew. This queue is meant to run for weeks. It is
the thread-owning shell around three plain parts:

* :mod:`wga.serve.jobs` — the job table (jobs, views, counts); jobs are known by their render
  id (:func:`wga.vis.store.render_id`, a content address): equal requests, concurrent or after a
  restart, share one job;
* :mod:`wga.serve.scheduler` — what runs next (priority, clients in turn, size, FIFO), which
  queued jobs share a batch, when a running batch yields (pre-emption at step granularity: the
  batch is *parked* with its optimiser state and resumed later where it stopped);
* :mod:`wga.serve.cache` — the render store (:mod:`wga.vis.store`: images and records) with each
  job's state file (the fast path pages poll) and the byte cap with LRU eviction.

Here: the worker loop (one thread per device), snapshots every ``snapshot_interval_s``, limits
(``max_pending`` live jobs in all → 503, ``max_per_client`` per client → 429, both with
Retry-After), and healing (any exception fails only the jobs it concerns; a worker that died
anyway is restarted on the next request).

With a ``journal`` folder (:mod:`wga.serve.journal`; the server's is ``<cache>/journal``) every
accepted job is written there before :meth:`submit_many` returns, and every change of who wants
it and how it ended; :meth:`start` queues again what a killed server had accepted and not
finished, with its priority, clients and creation time, in the order it came. A running batch
whose engine can save its exact state (``checkpoint(index)``, ``restore(states)``) saves each
element's every ``checkpoint_interval_s`` with the batch's members, and after a crash those
members resume together, in the same order, as a parked batch: where they were, and as they
would have gone on (a batch's composition can change the last bits of its images). Without a
checkpoint a job starts again; the engine is deterministic, so it ends the same.

Nothing here prints: inside a kernel-gateway kernel a worker's stdout would land in whatever HTTP
response is being written at that moment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from wga.errors import InvalidInput, NotFound, Unavailable, WgaError
from wga.serve.cache import DEFAULT_CACHE_MAX, DEFAULT_GRACE_S, RenderCache
from wga.serve.jobs import DEFAULT_CLIENT, LIVE, Job, JobStatus, JobTable, RecipeLike
from wga.serve.journal import DEFAULT_SYNC_INTERVAL_S, Entry, Journal, Replayed
from wga.serve.scheduler import Scheduler
from wga.vis.budget import DEFAULT_MAX_BATCH, BatchBudget, detect_devices
from wga.vis.estimate import StepClock
from wga.vis.store import PUBLIC_URL, PngWriter, check_id, render_id, render_view

if TYPE_CHECKING:
    import numpy as np

    from wga.models import LoadedModel

__all__ = ["AlreadyFinished", "RenderQueue", "TooManyRequests"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 2048  # live jobs (queued + running + parked) in all before 503
DEFAULT_MAX_PER_CLIENT = 1024  # live jobs of one client before 429 (a full grid request)
DEFAULT_SNAPSHOT_INTERVAL_S = 0.5  # how often a running job's PNG and state are rewritten
DEFAULT_CHUNK_STEPS = 1  # steps between pre-emption checks: a better job waits ≤ 1 step
DEFAULT_CHECKPOINT_INTERVAL_S = 10.0  # how often a running batch's exact state is saved
STATUS_WRITE_INTERVAL_S = 0.25  # the status file is rewritten at most this often


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
RecipeFactory = Callable[[dict[str, Any]], RecipeLike]


def recipe_from_dict(fields: dict[str, Any]) -> RecipeLike:
    """A journalled recipe (its ``as_dict()``) as a :class:`wga.vis.recipe.Recipe` again, through
    the one path every request takes."""
    from wga.vis.recipe import recipes_from_request

    return recipes_from_request(fields)[0]


@dataclass(frozen=True)
class _Unreadable:
    """A journalled recipe this version cannot read back: enough to answer its failure."""

    fields: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.fields)


class AlreadyFinished(WgaError):
    """Cancelling a job that is no longer queued or running (HTTP 409 Conflict)."""

    http_status = 409

    def __init__(self, render: str, status: str) -> None:
        super().__init__(
            f"render {render} is already {status}; only queued or running renders can be cancelled"
        )


class TooManyRequests(Unavailable):
    """One client has too many live jobs (HTTP 429 with Retry-After)."""

    http_status = 429


@dataclass(eq=False)
class _Active:
    """A batch being rendered or parked; ``jobs[i]`` is batch element ``i``. A batch taken over
    from a killed server has no ``batch`` yet, only each element's checkpoint (``states``)."""

    batch: BatchLike | None
    jobs: list[Job]
    last_snapshot: float = 0.0
    snapshots: int = 0
    last_checkpoint: float = field(default_factory=time.monotonic)
    states: list[dict[str, Any]] | None = None

    def live(self) -> list[tuple[int, Job]]:
        return [(i, job) for i, job in enumerate(self.jobs) if job.live]

    def live_jobs(self) -> list[Job]:
        return [job for job in self.jobs if job.live]


@dataclass(eq=False)
class _Worker:
    name: str
    device: str | None
    thread: threading.Thread | None = None
    current: _Active | None = None
    parked: list[_Active] = field(default_factory=list)
    idle: bool = True
    batches: int = 0

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device": self.device,
            "alive": bool(self.thread and self.thread.is_alive()),
            "busy": not self.idle,
            "batches": self.batches,
        }


class RenderQueue:
    """A priority queue of render jobs served by one worker thread per device.

    ``loader(model_name)`` returns a :class:`LoadedModel` (the registry's ``load``);
    ``batch_factory(loaded, recipes)`` returns a :class:`BatchRender`. Both run in the worker,
    so a model that cannot load fails only the jobs that asked for it. The engine's batches time
    their steps on :attr:`clock`, which the API asks for estimates.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        loader: ModelLoader,
        batch_factory: BatchFactory | None = None,
        *,
        devices: Sequence[str | None] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_pixels: int | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_per_client: int = DEFAULT_MAX_PER_CLIENT,
        snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S,
        chunk_steps: int = DEFAULT_CHUNK_STEPS,
        png_writer: PngWriter | None = None,
        cache_max: int = DEFAULT_CACHE_MAX,
        grace_s: float = DEFAULT_GRACE_S,
        public_url: str = PUBLIC_URL,
        journal: str | os.PathLike[str] | None = None,
        journal_sync_s: float = DEFAULT_SYNC_INTERVAL_S,
        recipe_factory: RecipeFactory = recipe_from_dict,
        checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
    ) -> None:
        if min(max_batch, max_pending, max_per_client, chunk_steps) < 1:
            raise InvalidInput(
                "max_batch, max_pending, max_per_client and chunk_steps must be at least 1"
            )
        self.public_url = public_url
        self.journal: Journal | None = None
        self._replayed = Replayed()
        if journal is not None:  # first: the cache keeps the state files of jobs taken over
            self.journal, self._replayed = Journal.open(journal, journal_sync_s)
        self.cache = RenderCache(
            cache_dir,
            png_writer,
            max_bytes=cache_max,
            grace_s=grace_s,
            public_url=public_url,
            resuming={entry.id for entry in self._replayed.live},
        )
        self.table = JobTable()
        self.scheduler = Scheduler(BatchBudget(max_batch, max_batch_pixels))
        self._loader = loader
        self._batch_factory = batch_factory
        self.clock = StepClock()
        self._devices = list(devices) if devices is not None else None
        self.max_pending = max_pending
        self.max_per_client = max_per_client
        self.snapshot_interval_s = snapshot_interval_s
        self.chunk_steps = chunk_steps
        self.status_extra: Callable[[], dict[str, Any]] = dict  # the service adds its fields
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._workers: list[_Worker] = []
        self._stopping = False
        self._started_at = time.time()
        self._batch_seconds = 5.0  # running mean of a batch's duration, for Retry-After
        self._status_due: threading.Timer | None = None
        self._status_written = 0.0
        self._recipe_factory = recipe_factory
        self.checkpoint_interval_s = checkpoint_interval_s
        self.recovered = 0  # jobs queued again from a previous server's journal

    @property
    def max_batch(self) -> int:
        return self.scheduler.budget.max_units

    def batch_limit(self, size: int, device: str | None = None) -> int:
        """Jobs per batch at ``size`` px on ``device`` (see :class:`BatchBudget`)."""
        return self.scheduler.budget.limit(size, device)

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
            if self.journal is not None:
                self._recover(self._replayed)
                self._replayed = Replayed()
        if self._batch_factory is None:
            from wga.quiet import quiet_keras  # imports Keras: only for the real engine

            quiet_keras()
        for worker in self._workers:
            self._spawn(worker)
        self._publish_status()
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
            if self._status_due is not None:
                self._status_due.cancel()
        for worker in self._workers:
            if worker.thread is not None:
                worker.thread.join(timeout)
        if self.journal is not None:
            self.journal.close()  # live jobs stay in it: the next server takes them over

    def _recover(self, replayed: Replayed) -> None:
        """Queue again what a previous server accepted and did not finish (under the lock)."""
        for entry in replayed.ended:  # a cancelled job stays cancelled, also in its state file
            if self.cache.last_view(entry.id) is None:
                view = render_view(
                    entry.id,
                    entry.recipe,
                    status=entry.status,
                    progress=0.0,
                    error=entry.error,
                    priority=entry.priority,
                    created=entry.created,
                    started=None,
                    finished=None,
                    public_url=self.public_url,
                )
                self.cache.discard(view)
        assert self.journal is not None
        for entry in replayed.live:
            if self.cache.lookup(entry.id):  # finished just before the crash
                self.journal.end(entry.id, "done")
                continue
            try:
                recipe = self._recipe_factory(dict(entry.recipe))
                if render_id(recipe, entry.fingerprint) != entry.id:
                    raise InvalidInput("its recipe reads differently in this version of wga")
            except (WgaError, TypeError) as error:
                job = self.table.add(
                    entry.id, _Unreadable(entry.recipe), entry.fingerprint, 0, entry.client
                )
                self._finish(job, "failed", f"could not resume it after a restart: {error}")
                self.cache.discard(job.view(self.public_url))
                continue
            job = self.table.add(entry.id, recipe, entry.fingerprint, entry.priority, entry.client)
            job.holders = set(entry.holders) or {entry.client}
            job.created = entry.created
            self.cache.write_state(job.view(self.public_url))
            self.recovered += 1
        self._resume_checkpointed()
        if self.recovered:
            log.info("queued %d render(s) again that a previous server accepted", self.recovered)

    def _resume_checkpointed(self) -> None:
        """Recovered jobs that were running together with checkpoints: one parked batch each,
        the same members in the same order, to be restored where they were (under the lock)."""
        assert self.journal is not None
        states: dict[str, dict[str, Any]] = {}
        for job in list(self.table.queued.values()):
            saved = self.journal.load_checkpoint(job.id)
            if saved is not None and "batch" in saved:
                states[job.id] = saved
        groups: dict[tuple[str, ...], list[Job]] = {}
        for render, saved in states.items():
            members = tuple(str(member) for member in saved.pop("batch"))
            groups.setdefault(members, []).append(self.table.queued[render])
        for number, (members, jobs) in enumerate(sorted(groups.items())):
            jobs.sort(key=lambda job: members.index(job.id))
            for job in jobs:
                del self.table.queued[job.id]  # parked: it waits in its worker
            parked = _Active(None, jobs, states=[states[job.id] for job in jobs])
            self._workers[number % len(self._workers)].parked.append(parked)

    # -- requests ---------------------------------------------------------------------------
    def submit(
        self,
        recipe: RecipeLike,
        fingerprint: str,
        priority: int = 0,
        client: str = DEFAULT_CLIENT,
    ) -> dict[str, Any]:
        """Queue one render; returns its view (``done`` at once when the cache has it)."""
        return self.submit_many([recipe], fingerprint, priority, client)[0]

    def submit_many(
        self,
        recipes: Sequence[RecipeLike],
        fingerprint: str | Sequence[str],
        priority: int | Sequence[int] = 0,
        client: str = DEFAULT_CLIENT,
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
            if self.table.get(render) is None and (record := self.cache.view(render)):
                records[render] = record
        with self._wake:
            self._ensure_workers()
            self._check_room([r for r in dict.fromkeys(ids) if r not in records], client)
            views, new, held = [], [], []
            for recipe, render, weights, urgency in zip(
                recipes, ids, fingerprints, priorities, strict=True
            ):
                view, job = self._admit(recipe, render, weights, urgency, client, records, held)
                views.append(view)
                if job is not None:
                    new.append(job)
            self._journal_admitted(new, held, client)
            for job in new:  # the fast path knows the job before the client polls it
                self.cache.write_state(job.view(self.public_url))
            self._wake.notify_all()
        self._publish_status()
        return views

    def _check_room(self, wanted: list[str], client: str) -> None:
        """Refuse a request that would overfill the queue (503) or the client's share (429)."""
        new = [r for r in wanted if not self._reusable(r)]
        free = self.max_pending - self.table.live_count()
        if len(new) > free:
            raise Unavailable(
                f"the render queue is full ({self.max_pending} jobs queued or running, "
                f"{len(new)} more requested); retry later or cancel some renders",
                retry_after=self._retry_after(),
            )
        mine = self.table.live_count(client)
        if new and mine + len(new) > self.max_per_client:
            raise TooManyRequests(
                f"too many renders in flight for this client ({mine} queued or running, "
                f"{len(new)} more requested, at most {self.max_per_client}); wait for some to "
                "finish or cancel them (DELETE /api/renders?model=…&layer=…)",
                retry_after=self._retry_after(),
            )

    def _admit(
        self,
        recipe: Any,
        render: str,
        weights: str,
        urgency: int,
        client: str,
        records: dict,
        held: list[Job],
    ) -> tuple[dict[str, Any], Job | None]:
        """One recipe of a submission (under the lock): its view, and its job if new; a live
        job that gained a client or urgency goes to ``held``."""
        if render in records:
            self.table.counts["cache_hits"] += 1
            self.cache.touch(render)  # the page loads it next: not the one to evict now
            return records[render], None
        job = self.table.get(render)
        if job is not None and job.live:
            if client not in job.holders or urgency > job.priority:
                held.append(job)
            job.holders.add(client)
            if urgency > job.priority:  # a more urgent request for the same image
                job.priority = urgency
            return job.view(self.public_url), None
        if job is not None and job.status == "done" and self.cache.lookup(render):
            self.table.counts["cache_hits"] += 1
            self.cache.touch(render)
            return job.view(self.public_url), None
        job = self.table.add(render, recipe, weights, urgency, client)
        return job.view(self.public_url), job

    def _journal_admitted(self, new: list[Job], held: list[Job], client: str) -> None:
        """Write the accepted jobs to the journal before anyone hears of them (under the lock);
        if that fails, the request fails (503) and its new jobs are forgotten."""
        if self.journal is None:
            return
        try:
            self.journal.add(
                [
                    Entry(
                        job.id,
                        job.recipe.as_dict(),
                        job.fingerprint,
                        job.priority,
                        job.client,
                        sorted(job.holders),
                        job.created,
                        job.seq,
                    )
                    for job in new
                ]
            )
            for job in held:
                self.journal.hold(job.id, client, job.priority)
        except OSError as error:
            for job in new:
                self.table.finish(job, "failed", "not accepted: the job journal is not writable")
            raise Unavailable(
                f"the server cannot write its job journal ({error}); free disk space in the "
                "cache folder, then retry",
                retry_after=30,
            ) from None

    def _reusable(self, render: str) -> bool:
        job = self.table.get(render)
        return job is not None and (job.live or job.status == "done")

    def _retry_after(self) -> int:
        workers = max(1, len(self._workers))
        return max(1, min(300, round(self._batch_seconds / workers)))

    def get(self, render: str) -> dict[str, Any]:
        """The job's current view; finished renders are also found on disk after a restart."""
        check_id(render)
        with self._lock:
            job = self.table.get(render)
            if job is not None:
                return job.view(self.public_url)
        view = self.cache.last_view(render)
        if view is None:
            raise NotFound(
                f"no render with id {render!r}: it was never requested here, or its files were "
                "deleted; POST /api/renders to make it"
            )
        return view

    def cancel(self, render: str) -> dict[str, Any]:
        """Cancel a queued, running or parked job; its slot is free at once."""
        check_id(render)
        with self._wake:
            job = self.table.get(render)
            if job is not None and job.live:
                self._finish(job, "cancelled")
                self._wake.notify_all()
                view = job.view(self.public_url)
                self.cache.discard(view)
            else:
                view = None
        if view is None:
            status = job.status if job is not None else self.get(render)["status"]  # NotFound
            raise AlreadyFinished(render, status)
        self._publish_status()
        return view

    def cancel_matching(
        self,
        model: str | None,
        layer: str | None,
        client: str = DEFAULT_CLIENT,
        ids: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """``client`` no longer wants its live renders of ``model`` (and ``layer``, and among
        ``ids``): each is cancelled unless another client still wants it (then released)."""
        wanted = None if ids is None else set(ids)
        with self._wake:
            cancelled, released = [], 0
            for job in self.table.matching(model, layer):
                if wanted is not None and job.id not in wanted:
                    continue
                if client not in job.holders:
                    continue
                job.holders.discard(client)
                if job.holders:
                    released += 1
                    if self.journal is not None:
                        self.journal.release(job.id, client)
                    continue
                self._finish(job, "cancelled")
                cancelled.append(job.view(self.public_url))
                self.cache.discard(cancelled[-1])
            self._wake.notify_all()
        self._publish_status()
        return {"cancelled": len(cancelled), "released": released}

    def listing(
        self, model: str | None = None, layer: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Finished renders, newest first (for the page's "recent renders")."""
        return self.cache.listing(model, layer, limit)

    def wait(self, render: str, timeout: float = 60.0) -> dict[str, Any]:
        """Block until the job is no longer live (for notebooks, tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.get(render)
            if view["status"] not in LIVE or time.monotonic() >= deadline:
                return view
            time.sleep(0.02)

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            self._ensure_workers()
            running = []
            for worker in self._workers:
                for _, job in worker.current.live() if worker.current is not None else []:
                    running.append(
                        {
                            "id": job.id,
                            "progress": round(job.progress, 4),
                            "params": job.recipe.as_dict(),
                            "worker": worker.name,
                        }
                    )
            return {
                "queued": len(self.table.queued),
                "parked": sum(len(a.live()) for w in self._workers for a in w.parked),
                "running": running,
                "live": self.table.live_count(),
                "capacity": self.max_pending,
                "per_client": self.max_per_client,
                "max_batch": self.max_batch,
                "workers": [worker.view() for worker in self._workers],
                "workers_alive": bool(self._workers)
                and all(w.thread is not None and w.thread.is_alive() for w in self._workers),
                **self.cache.usage(),
                "counts": dict(self.table.counts),
                "uptime_s": round(time.time() - self._started_at, 1),
                "written": time.time(),
                "status_url": f"{self.public_url}_status.json",
            }

    def _publish_status(self) -> None:
        """Rewrite the status file soon (at most every STATUS_WRITE_INTERVAL_S)."""
        with self._lock:
            if self._status_due is not None or self._stopping:
                return
            wait = self._status_written + STATUS_WRITE_INTERVAL_S - time.monotonic()
            self._status_due = threading.Timer(max(0.0, wait), self._write_status)
            self._status_due.daemon = True
            self._status_due.start()

    def _write_status(self) -> None:
        with self._lock:
            self._status_due = None
            self._status_written = time.monotonic()
        try:
            self.cache.write_status({**self.status(), **self.status_extra()})
        except Exception as error:  # a full disk must not kill the timer thread noisily
            log.warning("could not write the status file: %s", error)

    # -- bookkeeping (under the lock) ------------------------------------------------------
    def _finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        self.table.finish(job, status, error)
        if self.journal is not None:
            try:
                self.journal.end(job.id, status, error)
            except OSError as problem:  # the job has ended anyway; a restart may redo it
                log.warning("could not journal the end of render %s: %s", job.id, problem)

    def _fail(self, jobs: Sequence[Job], error: BaseException) -> None:
        message = str(error) if isinstance(error, WgaError) else f"{type(error).__name__}: {error}"
        with self._wake:
            for job in jobs:
                if job.live:
                    self._finish(job, "failed", message)
                    self.cache.discard(job.view(self.public_url))
            self._wake.notify_all()
        self._publish_status()

    def _next(self, worker: _Worker) -> _Active | list[Job] | None:
        """The best task for ``worker``: a parked batch to resume or a new batch (under lock)."""
        worker.parked = [active for active in worker.parked if active.live()]
        parked = [active.live_jobs() for active in worker.parked]
        task = self.scheduler.next_task(self.table.queued.values(), parked, worker.device)
        if task is None:
            return None
        if task[0] == "resume":
            active = worker.parked.pop(task[1])
            self.table.start(active.live_jobs())
            return active
        self.table.start(task[1])
        return task[1]

    def _should_yield(self, worker: _Worker, active: _Active) -> bool:
        idle_elsewhere = any(w.idle for w in self._workers if w is not worker)
        return self.scheduler.should_yield(
            active.live_jobs(),
            self.table.queued.values(),
            (parked.live_jobs() for parked in worker.parked),
            idle_elsewhere,
        )

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
            payload = task
            jobs = payload.jobs if isinstance(payload, _Active) else payload
            try:
                self._publish_states(jobs)
                self._run(worker, payload)
            except Exception as error:  # a failing batch fails its jobs, never the worker
                log.warning("render of %d job(s) failed: %s", len(jobs), error, exc_info=True)
                self._fail(jobs, error)

    def _publish_states(self, jobs: Sequence[Job]) -> None:
        """Write the state files of ``jobs`` that are still live (progress, running/queued);
        under the lock, so a state never overwrites a newer one (e.g. a cancel)."""
        with self._lock:
            for job in jobs:
                if job.live:
                    self.cache.write_state(job.view(self.public_url))
        self._publish_status()

    def _device(self, worker: _Worker) -> contextlib.AbstractContextManager[Any]:
        if worker.device is None:
            return contextlib.nullcontext()
        import tensorflow as tf  # lazy: only real devices need it

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
            from wga.vis.render import BatchRender  # the engine imports TensorFlow

            factory = partial(BatchRender, clock=self.clock)
        try:
            with self._device(worker):
                batch = factory(loaded, [job.recipe for job in jobs])
        except Exception:
            if len(jobs) == 1:
                raise
            # One bad recipe must not fail its batch-mates: queue them again, each alone.
            with self._wake:
                for job in jobs:
                    if job.live:
                        job.solo = True
                        self.table.requeue(job)
                self._wake.notify_all()
            return None
        return _Active(batch, jobs)

    def _restored(self, worker: _Worker, parked: _Active) -> _Active | None:
        """A batch taken over from a killed server, built and restored from its checkpoints;
        started afresh when the engine cannot restore them (e.g. saved by another version)."""
        built = self._make_batch(worker, parked.jobs)
        if built is None:
            return None
        assert built.batch is not None and parked.states is not None
        try:
            with self._device(worker):
                built.batch.restore(parked.states)  # type: ignore[attr-defined]
        except Exception as error:
            log.warning("%d render(s) could not resume from their checkpoints (%s): they start "
                        "again", len(parked.jobs), error)  # fmt: skip
            return self._make_batch(worker, parked.jobs)
        progress = min(1.0, built.batch.steps_done / max(1, built.batch.total_steps))
        with self._lock:
            for job in built.live_jobs():
                job.progress = progress
        return built

    def _run(self, worker: _Worker, payload: _Active | list[Job]) -> None:
        started = time.monotonic()
        active = payload if isinstance(payload, _Active) else self._make_batch(worker, payload)
        if active is not None and active.batch is None:
            active = self._restored(worker, active)
        if active is None:
            return
        worker.current = active
        worker.batches += 1
        while True:
            with self._lock:
                if self._stopping or not active.live():
                    return
            self._step(worker, active)
            if active.batch.done:
                self._finalise(active)
                elapsed = time.monotonic() - started
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
                return
            now = time.monotonic()
            if active.snapshots == 0 or now - active.last_snapshot >= self.snapshot_interval_s:
                self._snapshot(active)
            if self._park_if_outranked(worker, active):
                return

    def _step(self, worker: _Worker, active: _Active) -> None:
        batch = active.batch
        with self._device(worker):
            batch.run(max(1, min(self.chunk_steps, batch.total_steps - batch.steps_done)))
        progress = min(1.0, batch.steps_done / max(1, batch.total_steps))
        with self._lock:
            for _, job in active.live():
                job.progress = progress

    def _park_if_outranked(self, worker: _Worker, active: _Active) -> bool:
        with self._wake:
            if not self._should_yield(worker, active):
                return False
            for job in active.live_jobs():
                job.status = "queued"  # parked: it waits in its worker, not in the queue
            worker.parked.append(active)
            self.table.counts["preempted"] += 1
        self._publish_states(active.jobs)
        return True

    def _snapshot(self, active: _Active) -> None:
        images = active.batch.images()
        with self._lock:
            items = active.live()
        for index, job in items:
            metadata = dict(active.batch.metadata(index))
            metadata["snapshot_step"] = active.batch.steps_done
            self.cache.write_snapshot(job.id, images[index], metadata)
        active.snapshots += 1
        active.last_snapshot = time.monotonic()
        self._publish_states([job for _, job in items])
        if active.last_snapshot - active.last_checkpoint >= self.checkpoint_interval_s:
            self._checkpoint(active, items)

    def _checkpoint(self, active: _Active, items: list[tuple[int, Job]]) -> None:
        """Save each live element's exact state beside the journal, with the batch's members in
        order (they resume together), when the engine can."""
        checkpoint = getattr(active.batch, "checkpoint", None)
        active.last_checkpoint = time.monotonic()
        if self.journal is None or checkpoint is None:
            return
        import numpy as np

        members = np.array([job.id for _, job in items])
        for index, job in items:
            try:
                self.journal.save_checkpoint(job.id, {**checkpoint(index), "batch": members})
            except Exception as error:  # no checkpoint: after a crash it starts again
                log.warning("could not save a checkpoint of render %s: %s", job.id, error)
        with self._lock:  # a job that ended meanwhile must not keep its checkpoint
            for _, job in items:
                if not job.live and self.journal is not None:
                    self.journal.drop_checkpoint(job.id)

    def _finalise(self, active: _Active) -> None:
        images = active.batch.images()
        with self._lock:
            items = active.live()
        for index, job in items:
            try:
                record = {**job.view(self.public_url), "status": "done", "progress": 1.0}
                record.update(finished=time.time(), error=None, fingerprint=job.fingerprint)
                self.cache.write(job.id, images[index], active.batch.metadata(index), record)
            except Exception as error:  # e.g. disk full: this job fails, the others may not
                log.warning("could not save render %s: %s", job.id, error)
                self._fail([job], error)
                continue
            with self._wake:
                if job.live:
                    self._finish(job, "done")
                    job.finished = record["finished"]  # the view and the record agree
                self._wake.notify_all()
        with self._lock:
            live = {job.id for job in self.table.live()}
        self.cache.evict(live)
        self._publish_status()
