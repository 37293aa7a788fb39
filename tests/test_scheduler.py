"""The scheduler's rules, without threads: ranking, fairness, batches, pre-emption choices."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from wga.serve.jobs import Job
from wga.serve.scheduler import Scheduler
from wga.vis.budget import BatchBudget

CPU, GPU = "/CPU:0", "/device:GPU:0"


@dataclass(frozen=True)
class Recipe:
    layer: str = "conv"
    unit: int = 0
    size: int = 64
    model: str = "fake"

    def batch_key(self) -> tuple:
        return (self.model, self.layer, self.size)

    def as_dict(self) -> dict:
        return asdict(self)


class Jobs:
    """Makes jobs with increasing arrival numbers."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, client: str = "a", priority: int = 0, **recipe) -> Job:
        self.seq += 1
        return Job(f"{self.seq:024x}", Recipe(**recipe), "w", priority, self.seq, client)


def run_all(scheduler: Scheduler, queued: list[Job], device: str = CPU) -> list[list[Job]]:
    """Batches in the order a single worker would start them (each runs to completion)."""
    batches = []
    while queued:
        kind, group = scheduler.next_task(queued, [], device)
        assert kind == "new"
        batches.append(group)
        queued = [job for job in queued if job not in group]
    return batches


def test_priority_then_size_then_arrival_for_one_client():
    make = Jobs()
    small, large, urgent, later = make(size=64), make(size=256), make(priority=5), make(size=256)
    order = [
        group[0]
        for group in run_all(Scheduler(BatchBudget(max_units=1)), [small, large, urgent, later])
    ]
    assert order == [urgent, large, later, small]


def test_batch_limit_is_one_pixel_budget_per_device_and_the_grid_window():
    budget = BatchBudget(max_units=32)
    assert [budget.limit(64, GPU), budget.limit(224, GPU), budget.limit(1024, GPU)] == [32, 20, 1]
    assert [budget.limit(64, CPU), budget.limit(224, CPU)] == [16, 1]
    assert BatchBudget(max_units=8, pixels=10**9).limit(64, CPU) == 8


def test_compatible_jobs_share_a_batch_and_solo_jobs_stay_alone():
    make = Jobs()
    same = [make(unit=u) for u in range(3)]
    other_layer = make(layer="other")
    solo = make(unit=9)
    solo.solo = True
    batches = run_all(Scheduler(), [*same, other_layer, solo])
    assert [sorted(j.recipe.unit for j in b) for b in batches] == [[0, 1, 2], [0], [9]]


def test_a_late_client_is_served_within_two_batches_of_a_flood():
    """Client A posts 512 previews; B's one preview (same layer, or another) comes next."""
    for layer in ("conv", "elsewhere"):
        make = Jobs()
        scheduler = Scheduler(BatchBudget(max_units=32))
        flood = [make("A", -10, unit=u) for u in range(512)]
        _, first = scheduler.next_task(flood, [], CPU)  # A's first batch starts
        queued = [job for job in flood if job not in first]
        b = make("B", -10, layer=layer, unit=3)
        queued.append(b)
        _, second = scheduler.next_task(queued, [], CPU)
        assert b in second, f"B waited past the second batch ({layer})"
        if layer == "conv":  # the batch is filled with A's previews too: nothing is wasted
            assert len(second) == 16


def test_clients_take_turns_within_a_priority_but_not_across():
    make = Jobs()
    scheduler = Scheduler(BatchBudget(max_units=1))
    a = [make("A", unit=u) for u in range(3)]
    b = [make("B", unit=u) for u in range(3)]
    urgent = make("A", priority=5, unit=9)
    order = [group[0] for group in run_all(scheduler, [*a, *b, urgent])]
    assert order[0] is urgent
    assert [job.client for job in order[1:]] == ["B", "A", "B", "A", "B", "A"]


def test_a_shared_batch_takes_from_every_waiting_client_in_turn():
    make = Jobs()
    scheduler = Scheduler(BatchBudget(max_units=4))
    queued = [make("A", unit=u) for u in range(8)] + [make("B", unit=u) for u in range(8)]
    batch = scheduler.next_task(queued, [], GPU)[1]
    assert sorted(job.client for job in batch) == ["A", "A", "B", "B"]


def test_parked_batch_resumes_when_it_ranks_best():
    make = Jobs()
    scheduler = Scheduler()
    parked = [[make(priority=1)]]
    assert scheduler.next_task([make(priority=0)], parked, CPU) == ("resume", 0)
    urgent = make(priority=5)
    assert scheduler.next_task([urgent], parked, CPU) == ("new", [urgent])
    assert scheduler.next_task([], [[], *parked], CPU) == ("resume", 1)
    assert scheduler.next_task([], [], CPU) is None


def test_preemption_by_priority_or_size_never_by_turn():
    make = Jobs()
    scheduler = Scheduler()
    running = [make("A", unit=0)]
    assert scheduler.should_yield(running, [make("B", priority=1)], [], idle_elsewhere=False)
    assert scheduler.should_yield(running, [make("B", size=512)], [], idle_elsewhere=False)
    assert not scheduler.should_yield(running, [make("B")], [], idle_elsewhere=False)
    # Another worker is idle: it will take the better job, this batch goes on.
    assert not scheduler.should_yield(running, [make("B", priority=1)], [], idle_elsewhere=True)
    # Its own parked batch ranks better: yield to it even with another worker idle.
    assert scheduler.should_yield(running, [], [[make(priority=2)]], idle_elsewhere=True)
