"""What a worker renders next: ranking, fairness, batch building and pre-emption choices.

Thread-free and file-free: it decides from the jobs it is shown and remembers only which client
was served when, so every rule is unit-tested without a worker (``tests/test_scheduler.py``).
The queue calls it under its lock.

* **Ranking.** A higher ``priority`` runs first. Within a priority, clients take turns (the
  client served longest ago goes first: round-robin), so a client that posted 1,024 previews
  cannot starve another's single unit at the same priority. Within a client, larger images go
  first (an interesting unit is rendered large at once, as in the 2018 original), then FIFO.
* **Batching.** The best job's compatible queued jobs (same :meth:`Recipe.batch_key` and
  weights) join its batch, taken from every waiting client in turn, up to the batch limit.
* **One batch cap.** A batch is bounded by one memory budget, in pixels, per device kind (GPUs
  hold more than CPUs; on a CPU large batches measured slower per unit), and by ``max_units``,
  the grid window (how many previews a page has in flight): :class:`wga.vis.budget.BatchBudget`.
* **Pre-emption.** A running batch yields when better-ranked work waits (by priority and size
  only: taking turns never pre-empts, which would thrash) that no idle worker will take, or when
  one of its own parked batches ranks better.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from wga.serve.jobs import Job
from wga.vis.budget import BatchBudget

SERVED_REMEMBERED = 4096  # clients whose last turn is remembered (older, idle ones are dropped)

Order = tuple[int, int, int, int]
Task = tuple[Literal["resume"], int] | tuple[Literal["new"], list[Job]]


def rank(job: Job) -> tuple[int, int]:
    """The pre-emption rank (smaller runs first): higher priority, then larger size."""
    return (-job.priority, -int(job.recipe.size))


@dataclass
class Scheduler:
    """The ranking rules and the one piece of state they need: each client's last turn."""

    budget: BatchBudget = field(default_factory=BatchBudget)
    _served: dict[str, int] = field(default_factory=dict)
    _tick: int = 0

    def order(self, job: Job) -> Order:
        """Smaller runs first: priority, then the client's turn, then size, then arrival."""
        return (-job.priority, self._served.get(job.client, 0), -int(job.recipe.size), job.seq)

    def batch_order(self, jobs: Iterable[Job]) -> Order:
        return min((self.order(job) for job in jobs), default=(0, 0, 0, 0))

    def next_task(
        self, queued: Iterable[Job], parked: Sequence[Sequence[Job]], device: str | None
    ) -> Task | None:
        """Resume parked batch ``i`` (its live jobs given), or start a new batch, or nothing."""
        waiting = list(queued)
        best = min(waiting, key=self.order, default=None)
        live_parked = [(self.batch_order(jobs), i) for i, jobs in enumerate(parked) if jobs]
        if live_parked:
            parked_order, index = min(live_parked)
            if best is None or parked_order <= self.order(best):
                return ("resume", index)
        if best is None:
            return None
        group = self.group(best, waiting, device)
        self.served({job.client for job in group}, waiting)
        return ("new", group)

    def group(self, best: Job, queued: Iterable[Job], device: str | None) -> list[Job]:
        """``best`` and the compatible queued jobs, every client in turn, up to the limit."""
        if best.solo:
            return [best]
        key = best.recipe.batch_key()
        compatible = sorted(
            (
                job
                for job in queued
                if job is not best
                and not job.solo
                and job.fingerprint == best.fingerprint
                and job.recipe.batch_key() == key
            ),
            key=self.order,
        )
        by_client: dict[str, list[Job]] = {best.client: [best]}
        for job in compatible:
            by_client.setdefault(job.client, []).append(job)
        lanes = list(by_client.values())  # best's client first, then by their best job
        lanes[1:] = sorted(lanes[1:], key=lambda jobs: self.order(jobs[0]))
        limit = self.budget.limit(int(best.recipe.size), device)
        group: list[Job] = []
        depth = 0
        while len(group) < limit and any(depth < len(lane) for lane in lanes):
            group.extend(lane[depth] for lane in lanes if depth < len(lane))
            depth += 1
        return group[:limit]

    def served(self, clients: Iterable[str], queued: Iterable[Job] = ()) -> None:
        """``clients`` just had a turn: the others now go before them."""
        self._tick += 1
        for client in sorted(clients):
            self._served[client] = self._tick
        if len(self._served) > SERVED_REMEMBERED:
            waiting = {job.client for job in queued}
            self._served = {c: t for c, t in self._served.items() if c in waiting}

    def should_yield(
        self,
        running: Iterable[Job],
        queued: Iterable[Job],
        parked: Iterable[Iterable[Job]],
        idle_elsewhere: bool,
    ) -> bool:
        """Whether a running batch should be parked for better-ranked work."""
        mine = min((rank(job) for job in running), default=(0, 0))
        if not idle_elsewhere and any(rank(job) < mine for job in queued):
            return True
        return any(rank(job) < mine for jobs in parked for job in jobs)
