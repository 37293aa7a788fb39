"""Accepted means kept, with the real engine: ``wga serve`` SIGKILLed mid-render and restarted.

A server in a folder of its own accepts 12 renders (2 running, with checkpoints, 10 queued, one of
them wanted by two clients, one cancelled); then its whole process tree — launcher, kernel
gateway, kernel — is SIGKILLed at once, as the OOM killer or a power cut would. A new server
started in the same folder answers every id throughout (never 404), resumes the running pair where
its checkpoints were, finishes the 11 live ones and keeps the cancelled one cancelled. Each PNG is
byte-identical to the same requests run in-process without any interruption (same recipes, seeds
and batches), and no temporary file is left behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from serving import kill_tree, serve_environment

from wga.atomic import TEMP_MARK
from wga.serve.gateway import free_port

pytestmark = [pytest.mark.gateway, pytest.mark.slow]

MODEL = "vgg16-hed"
LONG = {"model": MODEL, "layer": "block2_conv1", "size": 64, "steps": 400, "priority": 5}
START_S = 240


def queued_bodies() -> list[dict]:
    """Ten small renders in two batch keys, priorities 0–2, from two clients."""
    bodies = []
    for index in range(10):
        layer = "block1_conv2" if index % 2 else "block2_conv2"
        body = {"model": MODEL, "layer": layer, "unit": 20 + index, "size": 64, "steps": 12}
        bodies.append({**body, "seed": index, "priority": index % 3})
    return bodies


class Server:
    """``python -m wga serve`` in ``home``, its output in ``home/../serve-N.log``."""

    def __init__(self, home: Path, index: int, **env: str) -> None:
        self.home = home
        self.port = free_port()
        self.log = home.parent / f"serve-{index}.log"
        with self.log.open("w") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wga", "serve", "--port", str(self.port)],
                cwd=home, env=serve_environment(**env), stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if requests.get(self.url + "/api/status", timeout=10).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not ready in {START_S} s:\n{self.log.read_text()[-3000:]}")

    def post(self, body: dict, client: str = "tab-1") -> dict:
        response = requests.post(
            self.url + "/api/renders", json=body, headers={"X-Wga-Client": client}, timeout=60
        )
        assert response.status_code in (200, 202), response.text
        return response.json()

    def get(self, render: str) -> requests.Response:
        return requests.get(f"{self.url}/api/renders/{render}", timeout=60)

    def kill_whole_tree(self) -> None:
        """SIGKILL the launcher and every process under it, all at once."""
        kill_tree(self.process.pid)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill_whole_tree()


def accept_twelve(server: Server) -> tuple[list[str], str]:
    """2 running, then 10 queued (one also wanted by a second client), one of them cancelled."""
    running = requests.post(
        server.url + "/api/renders/batch", json={**LONG, "units": [3, 4]}, timeout=60
    ).json()["renders"]
    ids = [render["id"] for render in running]
    checkpoints = server.home / "cache" / "journal" / "checkpoints"
    deadline = time.monotonic() + 120
    while not all((checkpoints / f"{render}.npz").exists() for render in ids):
        assert time.monotonic() < deadline, "the long renders saved no checkpoint"
        assert server.get(ids[0]).json()["status"] == "running"
        time.sleep(0.1)
    bodies = queued_bodies()
    ids += [server.post(body, client=f"tab-{i % 2}")["id"] for i, body in enumerate(bodies)]
    server.post(bodies[4], client="tab-9")  # a second client wants the same image
    cancelled = ids[2 + 7]
    assert requests.delete(f"{server.url}/api/renders/{cancelled}", timeout=60).ok
    return ids, cancelled


def test_a_killed_server_finishes_every_accepted_render_after_a_restart(registry, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    first = Server(home, 1, WGA_CHECKPOINT_INTERVAL="1")  # the running pair saves its state
    try:
        first.wait_ready()
        ids, cancelled = accept_twelve(first)
        views = {render: first.get(render).json() for render in ids}
        assert [v["status"] for v in views.values()].count("running") == 2
    except BaseException:
        first.kill_whole_tree()
        raise
    first.kill_whole_tree()
    # where the running pair's last checkpoint was: a resumed render reports at least that much
    with np.load(home / "cache" / "journal" / "checkpoints" / f"{ids[0]}.npz") as saved:
        saved_progress = int(saved["schedule"][0]) / LONG["steps"]
    assert saved_progress > 0

    missing: list[tuple[str, int]] = []
    watching = threading.Event()

    def watch(url_of) -> None:  # polls like a page through the restart: never a 404
        while not watching.is_set():
            for render in ids:
                try:
                    answer = requests.get(url_of(render), timeout=10)
                except requests.RequestException:
                    continue  # the server is down: the page retries
                if answer.status_code == 404:
                    missing.append((render, answer.status_code))
            time.sleep(0.2)

    second = Server(home, 2)
    watchers = [
        threading.Thread(target=watch, args=(lambda r: f"{second.url}/public/renders/{r}.json",)),
        threading.Thread(target=watch, args=(lambda r: f"{second.url}/api/renders/{r}",)),
    ]
    for watcher in watchers:
        watcher.start()
    try:
        second.wait_ready()
        while (progress := second.get(ids[0]).json()["progress"]) == 0:
            time.sleep(0.05)
        assert progress >= saved_progress, (
            f"the running pair started again ({progress}) instead of resuming ({saved_progress})"
        )
        final = {}
        deadline = time.monotonic() + 600
        for render in ids:
            while (view := second.get(render).json())["status"] in ("queued", "running"):
                assert time.monotonic() < deadline, f"{render} did not finish: {view}"
                time.sleep(0.5)
            final[render] = view
    finally:
        watching.set()
        for watcher in watchers:
            watcher.join()
        second.stop()
    assert missing == []
    assert {r: v["status"] for r, v in final.items() if v["status"] != "done"} == {
        cancelled: "cancelled"
    }
    assert {r: v["priority"] for r, v in final.items()} == {
        r: views[r]["priority"] for r in ids
    }  # kept across the restart
    renders = home / "cache" / "renders"
    leftovers = [path for path in (home / "cache").rglob("*") if TEMP_MARK in path.name]
    assert leftovers == []
    assert not (home / "cache" / "journal" / "checkpoints").exists() or not any(
        (home / "cache" / "journal" / "checkpoints").iterdir()
    )

    # The same requests, never interrupted: the same bytes.
    reference = uninterrupted(registry, tmp_path / "reference", ids, cancelled)
    for render in ids:
        if render != cancelled:
            assert (renders / f"{render}.png").read_bytes() == reference[render], render
    assert not (renders / f"{cancelled}.png").exists()


def uninterrupted(registry, folder: Path, ids: list[str], cancelled: str) -> dict[str, bytes]:
    """The twelve requests through an in-process queue that nobody kills (same batches)."""
    from wga.serve.queue import RenderQueue
    from wga.vis.recipe import recipes_from_request

    def recipes(body: dict, units: list[int] | None = None) -> list:
        return recipes_from_request({k: v for k, v in body.items() if k != "priority"}, units)

    fingerprint = registry.load(MODEL).fingerprint
    queue = RenderQueue(folder, registry.load, devices=["/CPU:0"]).start()
    try:
        running = queue.submit_many(recipes(LONG, [3, 4]), fingerprint, LONG["priority"], "tab-1")
        while queue.get(running[0]["id"])["status"] != "running":
            time.sleep(0.05)
        bodies = queued_bodies()
        views = [
            queue.submit(recipes(body)[0], fingerprint, body["priority"], f"tab-{i % 2}")
            for i, body in enumerate(bodies)
        ]
        queue.submit(recipes(bodies[4])[0], fingerprint, bodies[4]["priority"], "tab-9")
        assert [view["id"] for view in running + views] == ids  # the same content ids
        queue.cancel(cancelled)
        for render in ids:
            queue.wait(render, timeout=600)
        return {r: (folder / f"{r}.png").read_bytes() for r in ids if r != cancelled}
    finally:
        queue.stop()


@pytest.mark.parametrize(
    ("preset", "size", "steps", "stop"),
    [
        ("lucid", 64, 30, 12),  # mid-octave, Adam's state
        ("lucid", 320, 20, 14),  # right at an octave change (no optimiser state yet)
        ("offert2018", 320, 20, 13),  # 4 octaves, detail re-injection and the median filter
    ],
)
def test_an_engine_checkpoint_resumes_to_the_same_bytes(
    registry, tmp_path, preset, size, steps, stop
):
    """The contract the queue relies on to resume a running batch after a crash: some steps, a
    checkpoint per element through the journal's files, a fresh batch of the same recipes
    restored, the rest — the same images as the batch that was never interrupted."""
    from wga.serve.journal import Journal
    from wga.vis.recipe import Recipe
    from wga.vis.render import BatchRender

    if not hasattr(BatchRender, "checkpoint"):
        pytest.skip("the engine does not save checkpoints yet: running renders start again")
    hed = registry.load(MODEL)
    recipe = Recipe(MODEL, "block1_conv2", 7, size=size, preset=preset, steps=steps, seed=3)
    whole = BatchRender(hed, [recipe])  # alone, uninterrupted
    whole.run(steps)
    first = BatchRender(hed, [Recipe(MODEL, "block1_conv2", 2, size=size, preset=preset,
                                     steps=steps), recipe])  # fmt: skip
    first.run(stop)
    journal, _ = Journal.open(tmp_path)
    journal.save_checkpoint("a" * 24, first.checkpoint(1))  # element 1 of a batch of two
    journal.save_checkpoint("b" * 24, first.checkpoint(0))
    resumed = BatchRender(hed, first.recipes)  # the same batch, its members in order
    resumed.restore([journal.load_checkpoint("b" * 24), journal.load_checkpoint("a" * 24)])
    assert resumed.steps_done == stop
    resumed.run(steps - stop)
    assert resumed.done and resumed.images().tobytes() == first_to_end(first, steps - stop)
    alone = BatchRender(hed, [recipe])  # alone: where it was, though a batch can change bits
    alone.restore([journal.load_checkpoint("a" * 24)])
    alone.run(steps - stop)
    assert np.abs(alone.images()[0].astype(int) - whole.images()[0].astype(int)).max() <= 8
    journal.close()


def first_to_end(batch, steps: int) -> bytes:
    batch.run(steps)
    return batch.images().tobytes()
