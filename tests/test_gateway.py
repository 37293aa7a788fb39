"""The real backend: jupyter_kernel_gateway on notebooks/backend.ipynb, over HTTP.

One gateway serves the whole module (start-up costs ~10–20 s); a second one, started through
``python -m wga serve``, checks the CLI and that finished renders survive a restart. Renders use
``vgg16-hed`` at 64 px with few steps. Both processes are stopped by pid.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from serving import serve_environment

from wga.serve.gateway import Gateway, free_port, port_in_use
from wga.vis.png import read_png_metadata

pytestmark = [pytest.mark.gateway, pytest.mark.slow]

MODEL = "vgg16-hed"
QUICK = {"model": MODEL, "layer": "block2_conv1", "unit": 3, "size": 64, "steps": 4}
TIMEOUT = 60


def api(gateway: Gateway, method: str, path: str, body=None, **kwargs) -> requests.Response:
    return requests.request(method, gateway.url + path, json=body, timeout=TIMEOUT, **kwargs)


def wait_done(gateway: Gateway, render: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = api(gateway, "GET", f"/api/renders/{render}").json()
        if view["status"] not in ("queued", "running"):
            return view
        time.sleep(0.2)
    raise AssertionError(f"render {render} did not finish in {timeout} s")


@pytest.mark.timeout(300)
def test_every_read_endpoint_answers_json_and_no_cors_to_strangers(gateway):
    for path in ["/api/models", f"/api/models/{MODEL}/layers", "/api/presets", "/api/status"]:
        response = api(gateway, "GET", path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        assert "Access-Control-Allow-Origin" not in response.headers
        response.json()
    models = {m["name"]: m for m in api(gateway, "GET", "/api/models").json()["models"]}
    assert models[MODEL]["available"] is True
    assert all(m["reason"] for m in models.values())
    layers = api(gateway, "GET", f"/api/models/{MODEL}/layers").json()["layers"]
    assert {"name": "block2_conv1", "units": 128}.items() <= layers[3].items()


@pytest.mark.timeout(120)
def test_cors_preflight_from_another_site_is_refused_and_static_errors_are_json(gateway):
    preflight = requests.options(
        gateway.url + "/api/renders",
        headers={"Origin": "http://elsewhere", "Access-Control-Request-Method": "POST"},
        timeout=TIMEOUT,
    )
    assert preflight.status_code == 403
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert "--allow-origin" in preflight.json()["error"]
    missing = requests.get(gateway.url + "/public/renders/none.png", timeout=TIMEOUT)
    assert missing.status_code == 404 and missing.json()["error"]


BAD = [
    ("POST", "/api/renders", {**QUICK, "model": "vgg61"}, 404),
    ("POST", "/api/renders", {**QUICK, "layer": "block9_conv1"}, 404),
    ("POST", "/api/renders", {**QUICK, "unit": 128}, 400),
    ("POST", "/api/renders", {**QUICK, "size": 4096}, 400),
    ("POST", "/api/renders", {**QUICK, "unit": "three"}, 400),
    ("POST", "/api/renders/batch", {**QUICK, "units": [1, "2"]}, 400),
    ("GET", "/api/renders/" + "f" * 24, None, 404),
    ("DELETE", "/api/renders/not-an-id", None, 404),
    ("GET", "/api/models/vgg61/layers", None, 404),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("method", "path", "body", "status"), BAD)
def test_bad_input_gets_4xx_and_a_json_error(gateway, method, path, body, status):
    response = api(gateway, method, path, body)
    assert response.status_code == status, response.text
    assert response.json()["error"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("raw", ['{"model": "vgg16-hed",', "model=vgg16-hed"])
def test_malformed_json_is_400(gateway, raw):
    response = requests.post(
        gateway.url + "/api/renders",
        data=raw,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


@pytest.mark.timeout(300)
def test_render_is_served_as_png_with_its_recipe(gateway, cache_dir):
    response = api(gateway, "POST", "/api/renders", QUICK)
    assert response.status_code == 202, response.text
    view = wait_done(gateway, response.json()["id"])
    assert view["status"] == "done", view
    image = requests.get(gateway.url + view["url"], timeout=TIMEOUT)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    metadata = read_png_metadata(cache_dir / "renders" / f"{view['id']}.png")
    assert metadata["layer"] == "block2_conv1" and metadata["unit"] == 3
    again = api(gateway, "POST", "/api/renders", QUICK)
    assert again.status_code == 200 and again.json()["id"] == view["id"]


@pytest.mark.timeout(300)
def test_grid_of_previews_renders_as_one_batch(gateway):
    before = api(gateway, "GET", "/api/status").json()["workers"][0]["batches"]
    body = {**{k: v for k, v in QUICK.items() if k != "unit"}, "units": list(range(8))}
    response = api(gateway, "POST", "/api/renders/batch", body)
    assert response.status_code == 202, response.text
    renders = response.json()["renders"]
    assert [r["unit"] for r in renders] == list(range(8))
    assert all(wait_done(gateway, r["id"])["status"] == "done" for r in renders)
    after = api(gateway, "GET", "/api/status").json()["workers"][0]["batches"]
    assert after == before + 1


@pytest.mark.timeout(300)
def test_urgent_render_preempts_a_long_one_which_resumes_and_can_be_cancelled(gateway):
    long = api(gateway, "POST", "/api/renders", {**QUICK, "unit": 40, "steps": 3000}).json()
    deadline = time.monotonic() + 120
    while api(gateway, "GET", f"/api/renders/{long['id']}").json()["progress"] < 0.002:
        assert time.monotonic() < deadline, "the long render never started"
        time.sleep(0.2)
    snapshot = requests.get(gateway.url + long["url"], timeout=TIMEOUT)
    assert snapshot.status_code == 200 and snapshot.content.startswith(b"\x89PNG")
    urgent_body = {**QUICK, "layer": "block1_conv2", "unit": 7, "priority": 10}
    urgent = api(gateway, "POST", "/api/renders", urgent_body).json()
    before = api(gateway, "GET", f"/api/renders/{long['id']}").json()["progress"]
    assert wait_done(gateway, urgent["id"])["status"] == "done"
    paused = api(gateway, "GET", f"/api/renders/{long['id']}").json()
    assert paused["status"] in ("queued", "running") and paused["progress"] >= before
    assert api(gateway, "GET", "/api/status").json()["counts"]["preempted"] >= 1
    cancelled = api(gateway, "DELETE", f"/api/renders/{long['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert api(gateway, "DELETE", f"/api/renders/{long['id']}").status_code == 409
    assert api(gateway, "GET", "/api/status").json()["live"] == 0


@pytest.mark.timeout(300)
def test_concurrent_clients_get_valid_json_while_a_render_runs(gateway):
    long = api(gateway, "POST", "/api/renders", {**QUICK, "unit": 41, "steps": 3000}).json()
    errors: list[str] = []
    bodies = 0
    lock = threading.Lock()

    def client(index: int) -> None:
        nonlocal bodies
        session = requests.Session()
        for request in range(10):
            path = "/api/status" if (index + request) % 2 else "/api/models"
            try:
                response = session.get(gateway.url + path, timeout=120)
                json.loads(response.text)
                if response.status_code != 200:
                    raise AssertionError(f"{response.status_code}: {response.text[:200]}")
            except Exception as error:
                with lock:
                    errors.append(f"{path}: {error}")
            else:
                with lock:
                    bodies += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = api(gateway, "GET", "/api/status").json()
    api(gateway, "DELETE", f"/api/renders/{long['id']}")
    assert errors == []
    assert bodies == 200
    assert status["workers_alive"] is True
    assert [job["id"] for job in status["running"]] == [long["id"]]


@pytest.mark.timeout(300)
def test_serve_command_prints_the_url_finds_cached_renders_and_stops_on_ctrl_c(
    gateway, cache_dir, tmp_path
):
    done = api(gateway, "POST", "/api/renders", QUICK).json()
    assert done["status"] == "done"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "wga", "serve", "--port", str(port), "--cache-dir", str(cache_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=serve_environment(),
        cwd=tmp_path,
    )
    try:
        lines = []
        while not any("explorer page:" in line for line in lines):
            line = process.stdout.readline()
            assert line, f"serve exited early: {process.stderr.read()[-2000:]}"
            lines.append(line)
        assert f"http://127.0.0.1:{port}/public/index.html" in "".join(lines)
        base = f"http://127.0.0.1:{port}"
        again = requests.post(base + "/api/renders", json=QUICK, timeout=TIMEOUT)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == done["id"] and again.json()["status"] == "done"
        got = requests.get(f"{base}/api/renders/{done['id']}", timeout=TIMEOUT).json()
        assert got["status"] == "done"
        status = requests.get(base + "/api/status", timeout=TIMEOUT).json()
        assert status["cache_entries"] >= 1
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
        assert "stopped" in process.stderr.read()
        assert not port_in_use("127.0.0.1", port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
