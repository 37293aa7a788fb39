"""The render queue's logic, driven directly (no gateway) with an engine-shaped test double.

The double has the interface of :class:`wga.vis.render.BatchRender` (``run``, ``images``,
``metadata``, ``steps_done``) but costs a few milliseconds a step, so ordering, batching,
pre-emption, cancelling and failure handling can be checked precisely and fast. The real engine
runs behind the real gateway in ``test_gateway.py``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from wga.errors import NotFound, Unavailable
from wga.serve.cache import mark_used
from wga.serve.jobs import LIVE
from wga.serve.queue import AlreadyFinished, RenderQueue, TooManyRequests
from wga.vis.store import ID_PATTERN, check_id, render_id

FINGERPRINT = "0123456789abcdef"


@dataclass(frozen=True)
class FakeRecipe:
    model: str = "fake"
    layer: str = "conv"
    unit: int = 0
    size: int = 64
    preset: str = "lucid"
    steps: int = 6
    seed: int = 0

    def batch_key(self) -> tuple:
        return (self.model, self.layer, self.size, self.preset, self.steps)

    def as_dict(self) -> dict:
        return asdict(self)


class FakeEngine:
    """Makes engine-shaped batches; records what was built and the order jobs advanced in."""

    def __init__(self, step_s: float = 0.002) -> None:
        self.step_s = step_s
        self.batches: list[FakeBatch] = []
        self.gate = threading.Event()
        self.gate.set()
        self.steps_log: list[tuple[int, ...]] = []  # units of the batch, per step

    def __call__(self, loaded, recipes):
        if any(recipe.layer == "bad-on-build" for recipe in recipes):
            raise ValueError("this layer cannot be rendered")
        batch = FakeBatch(self, list(recipes))
        self.batches.append(batch)
        return batch


class FakeBatch:
    def __init__(self, engine: FakeEngine, recipes: list[FakeRecipe]) -> None:
        self.engine = engine
        self.recipes = recipes
        self.total_steps = recipes[0].steps
        self.steps_done = 0

    @property
    def done(self) -> bool:
        return self.steps_done >= self.total_steps

    @property
    def progress(self) -> float:
        return self.steps_done / self.total_steps

    def run(self, steps: int = 1) -> None:
        self.engine.gate.wait(10)
        time.sleep(self.engine.step_s)
        if any(r.layer == "bad-on-run" for r in self.recipes) and self.steps_done >= 2:
            raise RuntimeError("NaN in the gradient")
        self.steps_done = min(self.total_steps, self.steps_done + steps)
        self.engine.steps_log.append(tuple(r.unit for r in self.recipes))

    def images(self) -> np.ndarray:
        return np.full((len(self.recipes), 8, 8, 3), self.steps_done, dtype=np.uint8)

    def metadata(self, index: int) -> dict:
        return {**self.recipes[index].as_dict(), "weights": FINGERPRINT}


def write_png(path: Path, image: np.ndarray, metadata: dict) -> None:
    """A plain atomic PNG writer (the engine's ``save_png`` in production)."""
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, json.dumps(value))
    temp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(image).save(temp, format="PNG", pnginfo=info)
    temp.replace(path)


def loader(name: str):
    if name == "offline":
        raise Unavailable("weights cannot be downloaded here")
    return SimpleNamespace(fingerprint=FINGERPRINT)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def make_queue(tmp_path, engine):
    queues: list[RenderQueue] = []

    def make(factory=None, **kwargs) -> RenderQueue:
        options = {"devices": [None], "png_writer": write_png, "snapshot_interval_s": 0.0}
        options.update(kwargs)
        queue = RenderQueue(tmp_path / "renders", loader, factory or engine, **options).start()
        queues.append(queue)
        return queue

    yield make
    engine.gate.set()
    for queue in queues:
        queue.stop()


def wait_all(queue: RenderQueue, views: list[dict], timeout: float = 10) -> list[dict]:
    return [queue.wait(view["id"], timeout) for view in views]


def test_render_finishes_with_png_record_and_recipe_metadata(make_queue, tmp_path):
    queue = make_queue()
    view = queue.submit(FakeRecipe(unit=3), FINGERPRINT)
    assert view["status"] == "queued"
    final = queue.wait(view["id"])
    assert final["status"] == "done" and final["progress"] == 1.0
    png = tmp_path / "renders" / f"{view['id']}.png"
    assert Image.open(png).text["unit"] == "3"
    record = json.loads(png.with_suffix(".json").read_text())
    assert record["params"]["unit"] == 3 and record["fingerprint"] == FINGERPRINT


def test_identical_requests_share_one_id_and_one_job(make_queue, engine):
    engine.gate.clear()
    queue = make_queue()
    views: list[dict] = []
    threads = [
        threading.Thread(target=lambda: views.append(queue.submit(FakeRecipe(), FINGERPRINT)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({view["id"] for view in views}) == 1
    engine.gate.set()
    queue.wait(views[0]["id"])
    assert len(engine.batches) == 1


def test_id_depends_on_recipe_and_weights():
    assert render_id(FakeRecipe(), FINGERPRINT) == render_id(FakeRecipe(), FINGERPRINT)
    assert render_id(FakeRecipe(), FINGERPRINT) != render_id(FakeRecipe(seed=1), FINGERPRINT)
    assert render_id(FakeRecipe(), FINGERPRINT) != render_id(FakeRecipe(), "f" * 16)
    assert check_id(render_id(FakeRecipe(), FINGERPRINT))
    with pytest.raises(NotFound):
        check_id("../../etc/passwd")


def test_finished_render_is_a_cache_hit_after_a_restart(make_queue, engine):
    first = make_queue()
    view = first.wait(first.submit(FakeRecipe(unit=5), FINGERPRINT)["id"])
    first.stop()
    built = len(engine.batches)
    second = make_queue()
    again = second.submit(FakeRecipe(unit=5), FINGERPRINT)
    assert again["id"] == view["id"] and again["status"] == "done"
    assert second.get(view["id"])["status"] == "done"
    assert len(engine.batches) == built
    assert second.status()["cache_entries"] == 1


def test_compatible_queued_jobs_render_as_one_batch(make_queue, engine):
    engine.gate.clear()
    queue = make_queue(max_batch=4)
    blocker = queue.submit(FakeRecipe(layer="other", unit=99), FINGERPRINT)
    time.sleep(0.05)  # the worker holds the blocker's batch; the rest queue up
    views = [queue.submit(FakeRecipe(unit=unit), FINGERPRINT) for unit in range(6)]
    engine.gate.set()
    wait_all(queue, [blocker, *views])
    sizes = [[r.unit for r in batch.recipes] for batch in engine.batches]
    assert sizes == [[99], [0, 1, 2, 3], [4, 5]]


def test_higher_priority_and_larger_size_run_first_fifo_within(make_queue, engine):
    engine.gate.clear()
    queue = make_queue()
    blocker = queue.submit(FakeRecipe(layer="blocker", unit=99), FINGERPRINT)
    time.sleep(0.05)
    requests = [
        (FakeRecipe(layer="a", unit=1, size=64), 0),
        (FakeRecipe(layer="b", unit=2, size=64), 0),
        (FakeRecipe(layer="c", unit=3, size=128), 0),
        (FakeRecipe(layer="d", unit=4, size=64), 5),
    ]
    views = [queue.submit(recipe, FINGERPRINT, priority) for recipe, priority in requests]
    engine.gate.set()
    wait_all(queue, [blocker, *views])
    order = [batch.recipes[0].unit for batch in engine.batches]
    assert order == [99, 4, 3, 1, 2]


def test_urgent_job_preempts_within_steps_and_the_parked_job_resumes(make_queue, engine):
    engine.step_s = 0.01
    queue = make_queue()
    long = queue.submit(FakeRecipe(layer="long", unit=1, steps=60), FINGERPRINT)
    while queue.get(long["id"])["progress"] < 0.1:
        time.sleep(0.005)
    urgent = queue.submit(FakeRecipe(layer="urgent", unit=2, steps=3), FINGERPRINT, priority=1)
    assert queue.wait(urgent["id"])["status"] == "done"
    assert queue.get(long["id"])["status"] in ("queued", "running")
    assert queue.wait(long["id"])["status"] == "done"
    first_urgent = engine.steps_log.index((2,))
    steps_before = engine.steps_log[:first_urgent].count((1,))
    assert 6 <= steps_before < 60  # pre-empted mid-render …
    assert engine.steps_log.count((1,)) == 60  # … and resumed, not restarted
    assert [b.recipes[0].unit for b in engine.batches] == [1, 2]
    assert queue.status()["counts"]["preempted"] == 1


def test_cancel_frees_the_slot_of_a_queued_job(make_queue, engine):
    engine.gate.clear()
    queue = make_queue(max_pending=2)
    first = queue.submit(FakeRecipe(layer="x", unit=1), FINGERPRINT)
    second = queue.submit(FakeRecipe(layer="y", unit=2), FINGERPRINT)
    with pytest.raises(Unavailable) as full:
        queue.submit(FakeRecipe(layer="z", unit=3), FINGERPRINT)
    assert full.value.retry_after >= 1
    assert queue.cancel(second["id"])["status"] == "cancelled"
    third = queue.submit(FakeRecipe(layer="z", unit=3), FINGERPRINT)
    engine.gate.set()
    assert [v["status"] for v in wait_all(queue, [first, second, third])] == [
        "done",
        "cancelled",
        "done",
    ]
    with pytest.raises(AlreadyFinished):
        queue.cancel(first["id"])
    with pytest.raises(NotFound):
        queue.cancel("0" * 24)


def test_cancel_inside_a_running_batch_keeps_its_batch_mates(make_queue, engine, tmp_path):
    engine.step_s = 0.01
    queue = make_queue()
    views = queue.submit_many([FakeRecipe(unit=unit, steps=20) for unit in range(3)], FINGERPRINT)
    while queue.get(views[1]["id"])["status"] != "running":
        time.sleep(0.005)
    queue.cancel(views[1]["id"])
    finals = wait_all(queue, views)
    assert [v["status"] for v in finals] == ["done", "cancelled", "done"]
    cancelled = tmp_path / "renders" / views[1]["id"]
    assert not cancelled.with_suffix(".png").exists()  # its snapshot is gone
    assert json.loads(cancelled.with_suffix(".json").read_text())["status"] == "cancelled"
    assert len(engine.batches) == 1


def test_cancelling_every_job_of_a_batch_stops_it(make_queue, engine):
    engine.step_s = 0.01
    queue = make_queue()
    view = queue.submit(FakeRecipe(steps=1000), FINGERPRINT)
    while queue.get(view["id"])["status"] != "running":
        time.sleep(0.005)
    queue.cancel(view["id"])
    nxt = queue.submit(FakeRecipe(layer="next", steps=2), FINGERPRINT)
    assert queue.wait(nxt["id"], 5)["status"] == "done"
    assert engine.batches[0].steps_done < 1000


def test_failures_fail_only_their_jobs_and_the_worker_lives_on(make_queue, engine):
    queue = make_queue()
    on_run = queue.submit(FakeRecipe(layer="bad-on-run"), FINGERPRINT)
    offline = queue.submit(FakeRecipe(model="offline"), FINGERPRINT)
    after = queue.submit(FakeRecipe(layer="fine"), FINGERPRINT)
    on_run, offline, after = wait_all(queue, [on_run, offline, after])
    assert on_run["status"] == "failed" and "NaN" in on_run["error"]
    assert offline["status"] == "failed" and "cannot be downloaded" in offline["error"]
    assert after["status"] == "done"
    assert queue.status()["workers_alive"] is True


def test_a_recipe_that_cannot_render_fails_alone(make_queue, engine):
    engine.gate.clear()
    queue = make_queue()
    blocker = queue.submit(FakeRecipe(layer="blocker"), FINGERPRINT)
    time.sleep(0.05)
    bad = queue.submit(FakeRecipe(layer="bad-on-build"), FINGERPRINT)
    engine.gate.set()
    assert queue.wait(bad["id"])["status"] == "failed"
    assert "cannot be rendered" in queue.get(bad["id"])["error"]
    assert queue.wait(blocker["id"])["status"] == "done"


def test_a_batch_that_cannot_be_built_is_retried_one_job_at_a_time(make_queue, engine):
    def picky(loaded, recipes):
        if len(recipes) > 1:
            raise ValueError("cannot batch these")
        return engine(loaded, recipes)

    queue = make_queue(factory=picky)
    views = queue.submit_many([FakeRecipe(unit=unit) for unit in range(3)], FINGERPRINT)
    assert [v["status"] for v in wait_all(queue, views)] == ["done"] * 3
    assert [len(batch.recipes) for batch in engine.batches] == [1, 1, 1]


def test_snapshots_are_written_while_the_job_runs(make_queue, engine, tmp_path):
    engine.step_s = 0.01
    queue = make_queue()
    view = queue.submit(FakeRecipe(steps=40), FINGERPRINT)
    png = tmp_path / "renders" / f"{view['id']}.png"
    seen_steps = set()
    while queue.get(view["id"])["status"] != "done":
        if png.exists():
            try:
                seen_steps.add(int(Image.open(png).text.get("snapshot_step", "-1")))
            except OSError:  # a reader must never see a half-written file
                pytest.fail("snapshot PNG was not written atomically")
        time.sleep(0.01)
    assert len(seen_steps - {-1}) >= 2
    assert "snapshot_step" not in Image.open(png).text


def test_status_reports_depth_running_workers_and_cache(make_queue, engine):
    engine.gate.clear()
    queue = make_queue()
    running = queue.submit(FakeRecipe(layer="r"), FINGERPRINT)
    time.sleep(0.05)
    queue.submit(FakeRecipe(layer="q"), FINGERPRINT)
    status = queue.status()
    assert status["queued"] == 1
    assert [job["id"] for job in status["running"]] == [running["id"]]
    assert status["workers_alive"] is True and status["workers"][0]["busy"] is True
    assert status["cache_entries"] == 0
    engine.gate.set()


def test_a_dead_worker_is_restarted(make_queue, engine):
    queue = make_queue()
    worker = queue._workers[0]
    queue.stop()
    queue._stopping = False
    assert not worker.thread.is_alive()
    view = queue.submit(FakeRecipe(), FINGERPRINT)
    assert queue.wait(view["id"])["status"] == "done"


def test_workers_print_nothing(make_queue, engine, capfd):
    queue = make_queue()
    views = [queue.submit(FakeRecipe(unit=u), FINGERPRINT) for u in range(3)]
    views.append(queue.submit(FakeRecipe(layer="bad-on-run"), FINGERPRINT))
    wait_all(queue, views)
    assert capfd.readouterr().out == ""


def test_batches_shrink_with_image_size_and_on_cpus(tmp_path, engine):
    queue = RenderQueue(tmp_path, loader, engine, devices=[None], max_batch=32)
    assert queue.batch_limit(64, "/device:GPU:0") == 32
    assert queue.batch_limit(224, "/device:GPU:0") == 20
    assert queue.batch_limit(1024, "/device:GPU:0") == 1
    assert queue.batch_limit(64, "/CPU:0") == 16
    assert queue.batch_limit(224, "/CPU:0") == 1


# -- fairness, limits, bulk cancel ------------------------------------------------------------
def test_a_late_client_finishes_within_two_batches_of_another_clients_flood(make_queue, engine):
    """Client A's 512 previews run; client B's one preview is in the next batch."""
    engine.gate.clear()  # hold A's first batch until B has asked
    queue = make_queue(snapshot_interval_s=60)
    queue.submit_many([FakeRecipe(unit=u) for u in range(512)], FINGERPRINT, -10, "A")
    while not engine.batches:
        time.sleep(0.005)
    single = queue.submit(FakeRecipe(layer="other", unit=7), FINGERPRINT, -10, "B")
    engine.gate.set()
    assert queue.wait(single["id"])["status"] == "done"
    holding_b = [
        i for i, b in enumerate(engine.batches) if any(r.layer == "other" for r in b.recipes)
    ]
    assert holding_b == [1], f"B's preview was in batch {holding_b} of {len(engine.batches)}"
    assert queue.cancel_matching("fake", "conv", "A")["cancelled"] > 0  # the rest of the flood


def test_a_client_over_its_share_gets_429_others_do_not(make_queue, engine):
    engine.gate.clear()
    queue = make_queue(max_per_client=3)
    queue.submit_many([FakeRecipe(unit=u) for u in range(3)], FINGERPRINT, 0, "A")
    with pytest.raises(TooManyRequests) as refused:
        queue.submit(FakeRecipe(unit=9), FINGERPRINT, 0, "A")
    assert refused.value.http_status == 429 and refused.value.retry_after >= 1
    assert "cancel" in str(refused.value)
    assert queue.submit(FakeRecipe(unit=9), FINGERPRINT, 0, "B")["status"] == "queued"
    assert queue.submit(FakeRecipe(unit=0), FINGERPRINT, 0, "A")["status"] in LIVE  # not new
    engine.gate.set()


def test_bulk_cancel_gives_up_only_what_no_other_client_wants(make_queue, engine):
    engine.gate.clear()
    queue = make_queue()
    mine = queue.submit_many([FakeRecipe(unit=u) for u in range(4)], FINGERPRINT, 0, "A")
    shared = queue.submit(FakeRecipe(unit=3), FINGERPRINT, 0, "B")
    elsewhere = queue.submit(FakeRecipe(layer="keep", unit=0), FINGERPRINT, 0, "A")
    assert queue.cancel_matching("fake", "conv", "A") == {"cancelled": 3, "released": 1}
    assert queue.get(shared["id"])["status"] in LIVE
    assert queue.get(elsewhere["id"])["status"] in LIVE
    assert [queue.get(v["id"])["status"] for v in mine[:3]] == ["cancelled"] * 3
    assert queue.cancel_matching(None, None, "B", ids=[shared["id"]]) == {
        "cancelled": 1,
        "released": 0,
    }
    engine.gate.set()


# -- the fast path and the bounded cache ------------------------------------------------------
def state_file(queue: RenderQueue, render: str) -> dict:
    return json.loads(queue.cache.state_path(render).read_text())


def test_every_job_has_a_state_file_equal_to_its_view(make_queue, engine):
    engine.gate.clear()
    queue = make_queue()
    view = queue.submit(FakeRecipe(), FINGERPRINT)
    assert view["status_url"] == f"/public/renders/{view['id']}.json"
    assert state_file(queue, view["id"])["status"] in LIVE
    engine.gate.set()
    done = queue.wait(view["id"])
    on_disk = state_file(queue, view["id"])
    assert {k: on_disk[k] for k in done} == done
    status = json.loads((queue.cache.directory / "_status.json").read_text())
    assert "cache_bytes" in status and status["status_url"].endswith("_status.json")


def poll_like_a_page(cache, render: str) -> str:
    """What the gateway does for a page polling a render: mark it used, read its state, then
    its image once done. Returns the status, or "404" for a missing file."""
    state = cache.state_path(render)
    mark_used(state)
    try:
        status = json.loads(state.read_text())["status"]
        if status == "done":
            cache.png_path(render).read_bytes()
    except FileNotFoundError:
        return "404"
    return status


def test_eviction_under_a_tiny_cap_never_breaks_a_polled_render(make_queue, engine, tmp_path):
    queue = make_queue(cache_max=3000, grace_s=60)
    missing: list[str] = []
    stop = threading.Event()

    def page(unit: int) -> None:
        view = queue.submit(FakeRecipe(unit=unit, steps=2), FINGERPRINT)
        seen_done = 0
        while not stop.is_set() and seen_done < 20:  # keeps looking at it once done, too
            status = poll_like_a_page(queue.cache, view["id"])
            if status == "404":
                missing.append(view["id"])
            seen_done += status == "done"
            time.sleep(0.002)

    for round_ in range(4):
        pages = [threading.Thread(target=page, args=(round_ * 10 + u,)) for u in range(10)]
        for thread in pages:
            thread.start()
        for thread in pages:
            thread.join(30)
        # Renders nobody looks at: these are what eviction may take.
        for view in queue.submit_many(
            [FakeRecipe(unit=100 + round_ * 10 + u, steps=2) for u in range(10)], FINGERPRINT
        ):
            queue.wait(view["id"])
    stop.set()
    assert missing == []
    usage = queue.cache.usage()
    assert usage["cache_evicted"] > 0
    folder = tmp_path / "renders"
    pngs = {p.stem for p in folder.glob("*.png") if ID_PATTERN.match(p.stem)}
    records = {p.stem for p in folder.glob("*.json") if ID_PATTERN.match(p.stem)}
    assert pngs == records, "a half-deleted render (an image without its record or the reverse)"
    on_disk = sum(p.stat().st_size for p in folder.iterdir() if p.stem in records)
    assert on_disk == usage["cache_bytes"]


def test_eviction_takes_least_recently_used_and_survives_a_restart(make_queue, engine, tmp_path):
    queue = make_queue()
    views = []
    for unit in range(6):  # one at a time: their files' times differ (the LRU order on disk)
        views.append(queue.wait(queue.submit(FakeRecipe(unit=unit), FINGERPRINT)["id"]))
        time.sleep(0.02)
    mark_used(queue.cache.state_path(views[0]["id"]))  # the oldest, but a page just read it
    queue.stop()
    folder = tmp_path / "renders"
    (folder / f"{'e' * 24}.png").write_bytes(b"a snapshot of a job that died with the server")
    stale = {**views[1], "id": "f" * 24, "status": "running", "server": 999_999_999}
    (folder / f"{'f' * 24}.json").write_text(json.dumps(stale))
    (folder / ".x.png.part-1-2-abcd.png").write_bytes(b"half written")
    per_render = sum(p.stat().st_size for p in folder.glob(f"{views[2]['id']}.*"))
    restarted = make_queue(cache_max=per_render * 4, grace_s=0)  # keeps 3 (low water: 90 %)
    kept = {view["id"] for view in restarted.listing(limit=10)}
    assert views[0]["id"] in kept and views[5]["id"] in kept and views[1]["id"] not in kept
    assert not (folder / f"{'e' * 24}.png").exists() and not (folder / f"{'f' * 24}.json").exists()
    assert not (folder / ".x.png.part-1-2-abcd.png").exists()  # a temporary file left behind
    listing = restarted.listing(model="fake", layer="conv", limit=2)
    assert [v["id"] for v in listing] == [views[5]["id"], views[4]["id"]]  # newest first


def test_ended_jobs_leave_small_states_that_eviction_also_takes(make_queue, engine, tmp_path):
    engine.gate.clear()
    queue = make_queue()
    views = queue.submit_many([FakeRecipe(unit=u) for u in range(5)], FINGERPRINT, 0, "A")
    queue.cancel_matching("fake", None, "A")
    usage = queue.cache.usage()
    assert usage["cache_entries"] == 0 and usage["cache_bytes"] > 0
    assert state_file(queue, views[0]["id"])["status"] == "cancelled"
    engine.gate.set()
    queue.stop()
    restarted = make_queue(cache_max=1, grace_s=0)  # a hostile client's leftovers do not pile up
    assert restarted.cache.usage()["cache_bytes"] == 0
    assert not any((tmp_path / "renders").glob("*.png"))
