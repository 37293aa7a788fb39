"""Hostile requests against the real gateway: each answers a 4xx ``{"error": …}`` and the server
stays healthy after it; and a server bound off-loopback demands its token everywhere.

The loopback server is the session's shared gateway (tests/conftest.py), which has no token: its
answers also show that none is required on loopback. The off-loopback one is started through
``python -m wga serve --host 0.0.0.0`` (it generates and prints a token) and reached through
127.0.0.1: what decides is the address the server is bound to, not where a client comes from.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests
from serving import serve_environment

from wga.serve.gateway import Gateway, free_port

pytestmark = [pytest.mark.gateway, pytest.mark.slow]

TIMEOUT = 60
JSON = {"Content-Type": "application/json"}
RENDER = '{"model": "vgg16-hed", "layer": "block1_conv1", "unit": 0, "size": 64, "steps": 2}'
ID = "0123456789abcdef01234567"

# (label, method, path, extra request arguments, expected status)
ATTACKS = [
    ("another site's Host (DNS rebinding)", "GET", "/api/status", {"headers": {"Host": "evil.example"}}, 403),
    ("another site's Origin", "GET", "/api/models", {"headers": {"Origin": "http://evil.example"}}, 403),
    ("cross-site pre-flight", "OPTIONS", "/api/renders", {"headers": {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}}, 403),
    ("text/plain POST (no pre-flight)", "POST", "/api/renders", {"data": RENDER, "headers": {"Content-Type": "text/plain"}}, 415),
    ("form POST", "POST", "/api/renders", {"data": {"model": "vgg16-hed"}}, 415),
    ("body nested 10,000 deep", "POST", "/api/renders", {"data": "[" * 10_000 + "]" * 10_000, "headers": JSON}, 400),
    ("integer of 5,000 digits", "POST", "/api/renders", {"data": '{"unit": ' + "7" * 5000 + "}", "headers": JSON}, 400),
    ("invalid UTF-8", "POST", "/api/renders", {"data": b'{"model": "\xff\xfe"}', "headers": JSON}, 400),
    ("20 MB body", "POST", "/api/renders/batch", {"data": b'{"x": "' + b"a" * 20_000_000 + b'"}', "headers": JSON}, 413),
    ("malformed JSON", "POST", "/api/renders", {"data": '{"model": ', "headers": JSON}, 400),
    ("PUT", "PUT", "/api/renders", {"data": RENDER, "headers": JSON}, 405),
    ("PATCH", "PATCH", "/api/renders/" + ID, {}, 405),
    ("HEAD on an endpoint", "HEAD", "/api/status", {}, 405),
    ("POST to a static file", "POST", "/public/index.html", {"data": "{}", "headers": JSON}, 405),
    ("unknown route", "GET", "/api/nothing/here", {}, 404),
    ("unknown top-level route", "GET", "/etc/passwd", {}, 404),
    ("100 KB path", "GET", "/api/renders/" + "a" * 100_000, {}, 414),
    ("40 KB header", "GET", "/api/status", {"headers": {"X-Filler": "a" * 40_000}}, 431),
    ("bulk cancel without a filter", "DELETE", "/api/renders", {}, 400),
    ("bulk cancel of bad ids", "DELETE", "/api/renders", {"data": '{"ids": ["../x"]}', "headers": JSON}, 404),
    ("listing with a bad limit", "GET", "/api/renders?limit=-1", {}, 400),
]  # fmt: skip

TRAVERSALS = [
    "/api/models/..%2F..%2F..%2Fetc%2Fpasswd/layers",
    "/api/models/%2E%2E/layers",
    "/api/models/..%5C..%5Cwindows/layers",
    "/api/renders/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/renders/%2E%2E",
    "/api/renders?model=..%2F..%2Fetc",
    "/public/..%2F..%2F..%2Fetc%2Fpasswd",
    "/public/%2E%2E/%2E%2E/wga/serve/guard.py",
    "/public/renders/..%2F..%2Fnotebooks%2Fbackend.ipynb",
    "/public/renders/%2E%2E/%2E%2E/pyproject.toml",
    "/api/probes/..%2F..%2F..%2Fetc/layers/x/units/0",
    "/api/probes/%2E%2E/layers/%2E%2E/units/0/overlay?image=..%2F..%2Fetc%2Fpasswd",
    "/public/probes/..%2F..%2Fpyproject.toml",
]


def healthy(gateway: Gateway) -> None:
    status = requests.get(gateway.url + "/api/status", timeout=TIMEOUT)
    assert status.status_code == 200, status.text
    assert status.json()["workers_alive"] is True


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("label", "method", "path", "extra", "expected"), ATTACKS)
def test_hostile_request_answers_4xx_json_and_the_server_stays_healthy(
    gateway, label, method, path, extra, expected
):
    response = requests.request(method, gateway.url + path, timeout=TIMEOUT, **extra)
    assert response.status_code == expected, (
        f"{label}: {response.status_code} {response.text[:300]}"
    )
    assert response.headers["Content-Type"].startswith("application/json"), label
    if method != "HEAD":
        assert response.json()["error"], label
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Traceback" not in response.text and "Error " not in response.text[:6]
    healthy(gateway)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_never_leaves_the_served_folders(gateway, path):
    response = requests.get(gateway.url + path, timeout=TIMEOUT)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.json()["error"]
    assert "root:" not in response.text and "[project]" not in response.text
    healthy(gateway)


@pytest.mark.timeout(300)
def test_a_render_through_the_fast_path_and_the_recent_listing(gateway):
    """No token on loopback; a job's status_url is a static JSON file equal to the API's view."""
    created = requests.post(
        gateway.url + "/api/renders", data=RENDER, headers=JSON, timeout=TIMEOUT
    )
    assert created.status_code in (200, 202), created.text
    job = created.json()
    assert job["status_url"] == f"/public/renders/{job['id']}.json"
    deadline = 240
    for _ in range(deadline * 5):
        fast = requests.get(gateway.url + job["status_url"], timeout=TIMEOUT)
        assert fast.status_code == 200, fast.text
        if fast.json()["status"] == "done":
            break
        time.sleep(0.2)
    slow = requests.get(gateway.url + f"/api/renders/{job['id']}", timeout=TIMEOUT).json()
    assert fast.json()["status"] == slow["status"] == "done"
    assert fast.json()["url"] == slow["url"]
    listing = requests.get(gateway.url + "/api/renders?model=vgg16-hed&limit=5", timeout=TIMEOUT)
    assert job["id"] in [render["id"] for render in listing.json()["renders"]]
    status = requests.get(gateway.url + "/api/status", timeout=TIMEOUT).json()
    assert status["cache_bytes"] > 0 and status["cache_max"] > status["cache_bytes"]
    fast_status = requests.get(gateway.url + status["status_url"], timeout=TIMEOUT)
    assert fast_status.status_code == 200 and "cache_bytes" in fast_status.json()


@pytest.mark.timeout(400)
def test_off_loopback_every_endpoint_and_the_renders_need_the_token(tmp_path):
    port = free_port("0.0.0.0")
    env = serve_environment()
    env.pop("WGA_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "wga", "serve", "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        start_new_session=True,
    )  # fmt: skip
    try:
        line = ""
        while "explorer page:" not in line:
            line = process.stdout.readline()
            assert line, f"serve exited early: {process.stderr.read()[-2000:]}"
        token = re.search(r"\?token=([\w-]+)", line).group(1)
        base = f"http://127.0.0.1:{port}"
        good = {"Authorization": f"token {token}"}
        created = requests.post(base + "/api/renders", data=RENDER, headers={**JSON, **good})
        job = created.json()
        assert created.status_code in (200, 202), created.text
        guarded = [
            ("GET", "/api/models"), ("GET", "/api/models/vgg16-hed/layers"), ("GET", "/api/presets"),
            ("POST", "/api/renders"), ("POST", "/api/renders/batch"), ("GET", "/api/renders"),
            ("DELETE", "/api/renders"), ("GET", f"/api/renders/{job['id']}"),
            ("DELETE", f"/api/renders/{job['id']}"), ("GET", "/api/status"),
            ("GET", job["url"]), ("GET", job["status_url"]), ("GET", "/public/renders/_status.json"),
            ("GET", "/public/./renders/_status.json"), ("GET", "/api/nothing"),
            ("GET", "/public/probes/none/images/1.jpg"),
        ]  # fmt: skip
        for method, path in guarded:
            for headers, expected in (({}, 401), ({"Authorization": "token wrong"}, 403)):
                answer = requests.request(method, base + path, headers=headers, timeout=TIMEOUT)
                assert answer.status_code == expected, (method, path, answer.text[:200])
                assert answer.json()["error"]
        assert requests.get(f"{base}{job['status_url']}?token={token}", timeout=TIMEOUT).ok
        assert requests.get(base + "/api/status", headers=good, timeout=TIMEOUT).ok
        assert requests.get(base + "/public/index.html", timeout=TIMEOUT).ok  # the page is public
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
        assert token not in process.stderr.read(), "the token leaked into the server's log"
    finally:
        if process.poll() is None:  # Ctrl-C first: serve stops its gateway (its own session)
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
