"""Accepted means kept: the job journal, and the queue's recovery after its process is killed.

The queue runs with the engine-shaped test double of ``test_queue.py`` (deterministic images, a
few milliseconds a step); the process that accepts the jobs is a real subprocess, SIGKILLed. The
real engine behind the real gateway is killed and restarted in ``test_recovery.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_queue import FINGERPRINT, FakeEngine, FakeRecipe, loader, write_png

from wga.atomic import TEMP_MARK
from wga.serve import journal as journal_module
from wga.serve.journal import Entry, Journal
from wga.serve.queue import RenderQueue
from wga.vis.store import render_id

TESTS = Path(__file__).resolve().parent


def from_dict(fields: dict) -> FakeRecipe:
    return FakeRecipe(**fields)


class ResumableEngine(FakeEngine):
    """The engine double with checkpoints: a batch's state is its step count."""

    def __init__(self, step_s: float = 0.002) -> None:
        super().__init__(step_s)
        self.restored: list[tuple[list[int], int]] = []  # units of a restored batch, its step

    def __call__(self, loaded, recipes):
        batch = super().__call__(loaded, recipes)
        batch.checkpoint = lambda index: {"steps_done": np.int64(batch.steps_done)}

        def restore(states) -> None:
            batch.steps_done = int(states[0]["steps_done"])
            self.restored.append(([r.unit for r in batch.recipes], batch.steps_done))

        batch.restore = restore
        return batch


def entry(unit: int, priority: int = 0, client: str = "a") -> Entry:
    recipe = FakeRecipe(unit=unit)
    return Entry(
        render_id(recipe, FINGERPRINT), recipe.as_dict(), FINGERPRINT, priority, client,
        [client], 1000.0 + unit, unit,
    )  # fmt: skip


def test_a_journal_replays_holders_priorities_and_ends_in_order(tmp_path):
    journal, replayed = Journal.open(tmp_path, sync_interval_s=0)
    assert replayed.live == [] and replayed.adopted_files == 0
    journal.add([entry(3), entry(1, priority=2), entry(2)])
    journal.hold(entry(1).id, "b", priority=5)
    journal.hold(entry(2).id, "b", priority=0)
    journal.release(entry(2).id, "a")
    journal.end(entry(3).id, "cancelled")
    journal.close()
    again, replayed = Journal.open(tmp_path)
    assert [e.id for e in replayed.live] == [entry(1).id, entry(2).id]  # in their order (seq)
    first, second = replayed.live
    assert (first.priority, first.holders) == (5, ["a", "b"])
    assert (second.priority, second.holders) == (0, ["b"])
    assert [(e.id, e.status) for e in replayed.ended] == [(entry(3).id, "cancelled")]
    assert replayed.adopted_files == 1
    files = list(tmp_path.glob("jobs-*.jsonl"))
    assert files == [again.path]  # the adopted file is gone; ours holds the live jobs
    assert again.live_ids == {entry(1).id, entry(2).id}
    again.close()


def test_a_live_servers_journal_is_never_adopted(tmp_path):
    first, _ = Journal.open(tmp_path)
    first.add([entry(1)])
    second, replayed = Journal.open(tmp_path)  # another server on the same cache folder
    assert replayed.live == [] and len(list(tmp_path.glob("jobs-*.jsonl"))) == 2
    first.close()  # its owner went away: the next server takes its jobs over
    third, replayed = Journal.open(tmp_path)
    assert [e.id for e in replayed.live] == [entry(1).id]
    second.close()
    third.close()


def test_a_torn_last_line_and_stale_temporaries_are_skipped(tmp_path):
    journal, _ = Journal.open(tmp_path)
    journal.add([entry(1), entry(2)])
    journal.close()
    with open(journal.path, "ab") as handle:  # a kill in the middle of an append
        handle.write(json.dumps(entry(3).record()).encode()[:40])
    stale = tmp_path / f".jobs-1-1.jsonl{TEMP_MARK}999999999-1"  # a compaction that died
    stale.write_text("{}")
    checkpoint_temp = tmp_path / "checkpoints" / f".x.npz{TEMP_MARK}999999999-1-ab.npz"
    checkpoint_temp.write_bytes(b"half")
    again, replayed = Journal.open(tmp_path)
    assert [e.id for e in replayed.live] == [entry(1).id, entry(2).id]
    assert replayed.torn_lines == 0  # a line without its newline is not even read
    assert not stale.exists() and not checkpoint_temp.exists()
    again.close()


def test_compaction_keeps_only_the_live_jobs(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "COMPACT_LINES", 50)
    journal, _ = Journal.open(tmp_path)
    journal.add([entry(0)])
    for unit in range(1, 60):
        journal.add([entry(unit)])
        journal.end(entry(unit).id, "done")
    assert journal.path.read_text().count("\n") < 50
    journal.close()
    _, replayed = Journal.open(tmp_path)
    assert [e.id for e in replayed.live] == [entry(0).id]


CHILD_APPENDING = """
import sys
sys.path.insert(0, {tests!r})
from test_journal import entry
from wga.serve.journal import Journal
journal, _ = Journal.open({folder!r}, sync_interval_s=0)
unit = 0
while True:
    journal.add([entry(unit)])
    print(unit, flush=True)  # acknowledged: the append returned
    unit += 1
"""


def test_the_journal_survives_a_kill_in_the_middle_of_its_own_write(tmp_path):
    for attempt in range(3):  # three kills at three arbitrary moments
        folder = tmp_path / str(attempt)
        code = CHILD_APPENDING.format(tests=str(TESTS), folder=str(folder))
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        acknowledged = []
        while len(acknowledged) < 100 + 37 * attempt:
            line = child.stdout.readline()
            assert line, "the appending process died"
            acknowledged.append(int(line))
        child.send_signal(signal.SIGKILL)
        child.wait()
        _, replayed = Journal.open(folder)
        recovered = [e.id for e in replayed.live]
        expected = [entry(unit).id for unit in acknowledged]
        assert recovered[: len(expected)] == expected  # every acknowledged job, in order
        assert len(recovered) <= len(expected) + 1  # at most the one being written, whole


CHILD_QUEUE = """
import json, sys, time
sys.path.insert(0, {tests!r})
from test_queue import FINGERPRINT, FakeRecipe, loader, write_png
from test_journal import ResumableEngine
from wga.serve.queue import RenderQueue

engine = ResumableEngine(step_s=0.05)  # slow: two jobs are still running when the kill comes
queue = RenderQueue({renders!r}, loader, engine, devices=[None], png_writer=write_png,
                    snapshot_interval_s=0.0, journal={journal!r}, checkpoint_interval_s=0.1).start()
running = queue.submit_many([FakeRecipe(unit=u, steps=200) for u in (0, 1)], FINGERPRINT, 5, "tab-1")
while queue.get(running[0]["id"])["status"] != "running":
    time.sleep(0.01)
queued = [
    queue.submit(FakeRecipe(unit=10 + u, steps=5 + u % 2), FINGERPRINT, u % 3, f"tab-{{u % 2}}")
    for u in range(10)
]
queue.submit(FakeRecipe(unit=12, steps=5), FINGERPRINT, 4, "tab-9")  # a second client, more urgent
queue.cancel(queued[5]["id"])
print(json.dumps([v["id"] for v in running + queued]), flush=True)
time.sleep(600)
"""


def test_a_killed_queue_is_taken_over_whole_by_the_next_one(tmp_path):
    renders, journal = tmp_path / "cache" / "renders", tmp_path / "cache" / "journal"
    code = CHILD_QUEUE.format(tests=str(TESTS), renders=str(renders), journal=str(journal))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    ids = json.loads(child.stdout.readline())
    time.sleep(0.5)  # the two long jobs have taken a few steps and written snapshots
    child.send_signal(signal.SIGKILL)  # as the OOM killer would
    child.wait()
    assert len(ids) == 12
    states = {i: json.loads((renders / f"{i}.json").read_text())["status"] for i in ids}
    assert list(states.values()).count("running") == 2

    engine = ResumableEngine()
    queue = RenderQueue(renders, loader, engine, devices=[None], png_writer=write_png,
                        snapshot_interval_s=0.0, journal=journal, recipe_factory=from_dict)  # fmt: skip
    for render in ids:  # before the workers start, every id answers: none is forgotten
        assert (renders / f"{render}.json").exists()
    queue.start()
    try:
        assert queue.recovered == 11
        cancelled = ids[2 + 5]
        views = {render: queue.wait(render, timeout=30) for render in ids}
        assert {r: v["status"] for r, v in views.items() if v["status"] != "done"} == {
            cancelled: "cancelled"
        }
        urgent = render_id(FakeRecipe(unit=12, steps=5), FINGERPRINT)
        assert views[urgent]["priority"] == 4 and queue.table.get(urgent).holders == {
            "tab-0", "tab-9"
        }  # fmt: skip
        order = [[r.unit for r in batch.recipes] for batch in engine.batches]
        assert order[0] == [0, 1] and order[1][0] == 12  # the most urgent first, as before
        ((units, step),) = engine.restored  # the running pair resumed together, where it was
        assert units == [0, 1] and step > 0
        assert len([s for s in engine.steps_log if s == (0, 1)]) == 200 - step
        assert [views[r]["priority"] for r in ids[2:7]] == [0, 1, 4, 0, 1]  # 12: raised to 4
    finally:
        queue.stop()

    # The same requests, never interrupted, give the same files.
    reference = RenderQueue(tmp_path / "reference", loader, FakeEngine(), devices=[None],
                            png_writer=write_png, snapshot_interval_s=0.0).start()  # fmt: skip
    try:
        for render in ids:
            if render == cancelled:
                continue
            recipe = FakeRecipe(**queue.table.get(render).recipe.as_dict())
            reference.wait(reference.submit(recipe, FINGERPRINT)["id"], timeout=30)
            assert (tmp_path / "reference" / f"{render}.png").read_bytes() == (
                renders / f"{render}.png"
            ).read_bytes()
    finally:
        reference.stop()
    leftovers = [p for p in tmp_path.rglob("*") if TEMP_MARK in p.name or p.suffix == ".tmp"]
    assert leftovers == []
    again = RenderQueue(renders, loader, FakeEngine(), devices=[None], png_writer=write_png,
                        journal=journal, recipe_factory=from_dict).start()  # fmt: skip
    try:
        assert again.recovered == 0  # all finished: nothing to take over the second time
        assert again.get(cancelled)["status"] == "cancelled"
    finally:
        again.stop()


def test_a_job_resumes_from_its_checkpoint_when_the_engine_can(tmp_path):
    """An engine with ``checkpoint``/``restore`` continues where the killed server was."""
    journal, _ = Journal.open(tmp_path / "journal")
    recipe = FakeRecipe(unit=7, steps=50)
    journal.add([Entry(render_id(recipe, FINGERPRINT), recipe.as_dict(), FINGERPRINT, 0, "a",
                       ["a"], 1.0, 1)])  # fmt: skip
    render = render_id(recipe, FINGERPRINT)
    journal.save_checkpoint(render, {"steps_done": 40, "batch": np.array([render])})
    journal.close()

    engine = ResumableEngine()
    queue = RenderQueue(tmp_path / "renders", loader, engine, devices=[None],
                        png_writer=write_png, journal=tmp_path / "journal",
                        recipe_factory=from_dict).start()  # fmt: skip
    try:
        assert queue.wait(render_id(recipe, FINGERPRINT), timeout=30)["status"] == "done"
        assert len(engine.steps_log) == 10  # 40 of 50 steps were done before the crash
        assert not any((tmp_path / "journal" / "checkpoints").iterdir())
    finally:
        queue.stop()


@pytest.mark.parametrize("sync", [0.0, 1.0])
def test_journal_lines_reach_the_file_before_add_returns(tmp_path, sync):
    journal, _ = Journal.open(tmp_path, sync_interval_s=sync)
    journal.add([entry(1)])
    assert entry(1).id in journal.path.read_text()  # another process would read it now
    journal.close()
    assert os.path.getsize(journal.path) > 0
