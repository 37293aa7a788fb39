"""The job table: every render job the queue knows, its JSON view, and the counts.

The table is plain data: no threads and no locks of its own (the queue holds its lock around
every call), no files (the cache writes what the table says). One job → one JSON view
(:func:`wga.vis.store.render_view`), the same for ``GET /api/renders/:id``, the job's state file
(its ``status_url``), the listing and, once done, the render's record in the store.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from wga.vis.store import PUBLIC_URL, render_view

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
LIVE: frozenset[str] = frozenset({"queued", "running"})
COUNTED = ("done", "failed", "cancelled", "cache_hits", "preempted")

FINISHED_JOBS_KEPT = 4096  # finished jobs remembered in memory (done ones also live on disk)
DEFAULT_CLIENT = "local"  # the client key of calls that name none (notebooks, the CLI, tests)


class RecipeLike(Protocol):
    """What the queue needs of a render recipe (:class:`wga.vis.render.Recipe`)."""

    @property
    def model(self) -> str: ...
    @property
    def size(self) -> int: ...
    def batch_key(self) -> tuple: ...
    def as_dict(self) -> dict: ...


@dataclass(eq=False)
class Job:
    """One requested image. Mutated only under the queue's lock."""

    id: str
    recipe: Any
    fingerprint: str
    priority: int
    seq: int
    client: str = DEFAULT_CLIENT  # who asked first: fairness and the per-client cap count it
    holders: set[str] = field(default_factory=set)  # every client that still wants it
    status: JobStatus = "queued"
    progress: float = 0.0
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    solo: bool = False  # render alone: its batch could not be built together with others

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def view(self, public_url: str = PUBLIC_URL) -> dict[str, Any]:
        """The job as JSON: the API's answer and the content of its state file."""
        return render_view(
            self.id,
            self.recipe.as_dict(),
            status=self.status,
            progress=self.progress,
            error=self.error,
            priority=self.priority,
            created=self.created,
            started=self.started,
            finished=self.finished,
            public_url=public_url,
        )


class JobTable:
    """Jobs by id, the queued ones, the finished ones kept in memory, and the counts."""

    def __init__(self, kept: int = FINISHED_JOBS_KEPT) -> None:
        self.jobs: dict[str, Job] = {}
        self.queued: dict[str, Job] = {}
        self.kept = kept
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._seq = 0
        self.counts: Counter[str] = Counter({name: 0 for name in COUNTED})

    def get(self, render: str) -> Job | None:
        return self.jobs.get(render)

    def live_job(self, render: str) -> Job | None:
        job = self.jobs.get(render)
        return job if job is not None and job.live else None

    def add(self, render: str, recipe: Any, fingerprint: str, priority: int, client: str) -> Job:
        """A new queued job (replacing a finished one with the same id)."""
        self._seq += 1
        job = Job(render, recipe, fingerprint, int(priority), self._seq, client, {client})
        self.jobs[render] = job
        self._finished.pop(render, None)
        self.queued[render] = job
        return job

    def requeue(self, job: Job) -> None:
        job.status = "queued"
        self.queued[job.id] = job

    def start(self, jobs: Iterable[Job]) -> None:
        now = time.time()
        for job in jobs:
            self.queued.pop(job.id, None)
            job.status = "running"
            job.started = job.started or now

    def finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        """Mark ``job`` finished; the oldest finished jobs are forgotten past ``kept``."""
        self.queued.pop(job.id, None)
        job.status = status
        job.error = error
        job.finished = time.time()
        if status == "done":
            job.progress = 1.0
        self.counts[status] += 1
        self._finished[job.id] = None
        while len(self._finished) > self.kept:
            old, _ = self._finished.popitem(last=False)
            if old in self.jobs and not self.jobs[old].live:
                del self.jobs[old]

    def live(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.live]

    def live_count(self, client: str | None = None) -> int:
        return sum(
            1 for job in self.jobs.values() if job.live and (client is None or job.client == client)
        )

    def matching(self, model: str | None, layer: str | None) -> list[Job]:
        """Live jobs of ``model`` (and ``layer``), for bulk cancelling."""
        found = []
        for job in self.live():
            params = job.recipe.as_dict()
            if model is not None and params.get("model") != model:
                continue
            if layer is not None and params.get("layer") != layer:
                continue
            found.append(job)
        return found
