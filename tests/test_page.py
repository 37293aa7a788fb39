"""The explorer page, driven in headless Chromium against the real backend (`python -m wga serve`).

The backend runs as a subprocess on a free port with the offline model `vgg16-hed` and a tiny
"fine-tuned run" (random weights, one 2048-channel layer like InceptionV3's mixed10, three named
classes) in a temporary runs folder. Renders are tiny (64 px, few steps) and use a seed drawn
per test session, so they are fresh (not cache hits) and the progress can be watched.

Screenshots are kept under $WGA_ARTIFACTS (default: a pytest temp folder) for people to look at.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from serving import kill_tree, serve_environment

from wga.paths import page_dir

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-gpu",
]
MODEL = "vgg16-hed"
WIDE_RUN = "wide-run"  # the temporary fine-tuned model with a 2048-unit layer
WIDE_LAYER = "wide_conv"
WIDE_UNITS = 2048  # InceptionV3 mixed10's channel count
CLASSES = ["portrait", "landscape", "still-life"]
PREVIEW = {"psize": 64, "psteps": 4}  # grid previews: tiny and cheap
DETAIL_SIZE = 64
DETAIL_STEPS = 48  # enough steps that snapshots can be seen arriving
SEED = random.randrange(1, 1_000_000)  # fresh renders each session (the cache would answer)
# The backend requires a token (as one bound off-loopback does), so every test shows that the
# page works with one: it comes in the page's address, the page keeps it for its requests.
TOKEN = "page-test-" + secrets.token_hex(8)
SERVER_START_S = 180  # TensorFlow import + model load + gateway start on a busy 2-core machine

pytestmark = [pytest.mark.browser, pytest.mark.gateway, pytest.mark.slow]


def chromium_path() -> str | None:
    explicit = os.environ.get("WGA_CHROMIUM")
    if explicit and Path(explicit).exists():
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# the backend


def make_wide_run(runs: Path) -> None:
    """A fine-tuned-run folder the registry lists as a model: random weights, one 2048-channel
    conv layer and a 3-class Dense head with class names (tiny, so it renders in milliseconds)."""
    import keras

    folder = runs / WIDE_RUN
    folder.mkdir(parents=True, exist_ok=True)
    inputs = keras.Input((None, None, 3))
    # Downsample 8× first, as InceptionV3 does before mixed10 (8×8 at 299 px): 2048 full-size
    # channels would cost a gigabyte per batch of previews.
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu", name="stem_conv")(
        inputs
    )
    x = keras.layers.MaxPooling2D(2, name="stem_pool")(x)
    x = keras.layers.Conv2D(WIDE_UNITS, 1, activation="relu", name=WIDE_LAYER)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(CLASSES), name="predictions")(x)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    (folder / "model.json").write_text(
        json.dumps({"title": "wide test run", "preprocessing": "tf", "input_size": 64})
    )
    (folder / "classes.json").write_text(json.dumps(CLASSES))


@dataclass
class Backend:
    """`python -m wga serve` started in ``home`` (its runs/, probes/, atlases/, cache/), in its
    own process group (killed as a group, by its pid)."""

    port: int
    home: Path
    log: Path
    proc: subprocess.Popen | None = None
    starts: int = field(default=0)

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def page_url(self, **state: object) -> str:
        query = urlencode({k: v for k, v in state.items()})
        return f"{self.origin}/public/index.html?token={TOKEN}#{query}"

    def start(self, while_starting: Callable[[], None] | None = None) -> None:
        env = serve_environment()
        command = [sys.executable, "-m", "wga", "serve", "--host", "127.0.0.1"]
        # The page opened as a file (origin "null") may call the API: --allow-origin null.
        command += ["--port", str(self.port), "--token", TOKEN, "--allow-origin", "null"]
        self.starts += 1
        with self.log.open("a") as log:
            log.write(f"\n=== start {self.starts}: {' '.join(command)}\n")
            self.proc = subprocess.Popen(
                command, cwd=self.home, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        if while_starting is not None:
            while_starting()
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the backend exited ({self.proc.returncode}): see {self.log}")
            try:
                if self.api("GET", "/api/models", timeout=5).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the backend did not answer within {SERVER_START_S} s: see {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def kill(self) -> None:
        """SIGKILL the whole server (launcher, gateway, kernel) at once: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            kill_tree(self.proc.pid)
            self.proc.wait(timeout=15)

    def api(self, method: str, path: str, **kwargs: object) -> requests.Response:
        options = {"timeout": 30, **kwargs}
        options["headers"] = {"Authorization": f"token {TOKEN}", **options.get("headers", {})}
        return requests.request(method, f"{self.origin}{path}", **options)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("WGA_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("page-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Backend]:
    server = Backend(free_port(), tmp_path_factory.mktemp("home"), artifacts / "backend.log")
    server.start(while_starting=lambda: make_wide_run(server.runs))  # listed on each request
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        pytest.fail("no Chromium: run scripts/ensure_chromium.sh (or set WGA_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, artifacts: Path, request: pytest.FixtureRequest):
    """A fresh page (own storage) that records uncaught script errors; screenshot at the end."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    tab.screenshot(path=str(artifacts / f"{request.node.name}.png"))
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def state(**extra: object) -> dict[str, object]:
    """URL state for a test: the offline model, tiny previews, this session's seed."""
    return {"model": MODEL, **PREVIEW, "seed": SEED, **extra}


def wait_done(page, pane: str = "#pane-a", timeout_ms: int = 90_000) -> None:
    page.wait_for_function(
        "sel => document.querySelector(sel).dataset.status === 'done'", arg=pane, timeout=timeout_ms
    )


def png_text_chunks(data: bytes) -> dict[str, str]:
    """The tEXt / zTXt / iTXt chunks of a PNG (what a saved file says about itself)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks: dict[str, str] = {}
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"tEXt":
            key, _, text = body.partition(b"\0")
            chunks[key.decode("latin-1")] = text.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            chunks[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _, _, rest = rest.partition(b"\0")
            _, _, text = rest.partition(b"\0")
            chunks[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode()
    return chunks


def png_size(data: bytes) -> tuple[int, int]:
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.timeout(300)
def test_model_picker_disables_unavailable_models_and_says_why(backend, page):
    page.goto(backend.page_url(**state()))
    page.wait_for_selector(f"#model option[value='{MODEL}']", state="attached")
    models = backend.api("GET", "/api/models").json()["models"]
    options = page.eval_on_selector_all(
        "#model option", "os => os.map(o => ({value: o.value, disabled: o.disabled}))"
    )
    assert {o["value"]: o["disabled"] for o in options} == {
        m["name"]: not m["available"] for m in models
    }
    assert page.input_value("#model") == MODEL
    unavailable = [m for m in models if not m["available"]]
    if unavailable:  # offline here: the ImageNet models, each with the reason shown on request
        page.click("#model-reason summary")
        reasons = page.inner_text("#model-reason ul")
        assert unavailable[0]["reason"] in reasons
    assert page.get_attribute("#connection", "data-state") == "online"


@pytest.mark.timeout(300)
def test_picking_a_layer_fills_the_grid_with_rendered_previews(backend, page, artifacts):
    page.goto(backend.page_url(**state()))
    page.wait_for_selector("#layer-list button[data-layer='block5_pool']")
    page.fill("#layer-filter", "block3")
    assert page.locator("#layer-list button").count() == 4  # block3_conv1..3 and block3_pool
    page.click("#layer-list button[data-layer='block3_conv1']")
    assert page.locator("#grid .tile").count() == 256
    assert "256 units" in page.inner_text("#grid-title")
    assert "layer=block3_conv1" in page.url
    # The first screenful renders (low priority, small, in batches) and shows the real PNGs.
    page.wait_for_function(
        "document.querySelectorAll('#grid .tile[data-state=done]').length >= 12", timeout=120_000
    )
    first = page.locator("#grid .tile[data-unit='0'] img")
    assert first.evaluate("img => img.complete && img.naturalWidth") == PREVIEW["psize"]
    # Far-away tiles were not requested at all.
    assert page.locator("#grid .tile[data-unit='255']").get_attribute("data-state") == "idle"
    page.screenshot(path=str(artifacts / "grid.png"))


@pytest.mark.timeout(300)
def test_unit_view_shows_live_progress_and_saves_the_real_png(backend, page, artifacts):
    page.goto(backend.page_url(**state(layer="block2_conv1", size=DETAIL_SIZE, steps=DETAIL_STEPS)))
    page.click("#grid .tile[data-unit='5']")
    page.wait_for_selector("#detail[open]")
    assert "unit=5" in page.url
    # Follow the progress bar and the image while the render runs.
    progress: list[float] = []
    sources: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, value, src = page.evaluate(
            """() => [document.querySelector('#pane-a').dataset.status,
                      document.querySelector('#pane-a progress').value,
                      document.querySelector('#pane-a img').getAttribute('src')]"""
        )
        progress.append(value)
        if src:
            sources.add(src)
        if status in ("done", "failed"):
            break
        time.sleep(0.05)
    assert status == "done", page.inner_text("#pane-a")
    assert progress[-1] == 1
    assert any(0 < p < 1 for p in progress), f"no intermediate progress seen: {progress[-5:]}"
    assert progress == sorted(progress), "progress went backwards"
    assert any("snap=" in s for s in sources), f"no snapshot was shown: {sources}"
    # The download link and the <img> are the backend's PNG itself, recipe inside.
    href = page.get_attribute("#pane-a .pane-download", "href")
    assert re.search(rf"/public/renders/[\w-]+\.png\?token={TOKEN}$", href), href
    assert page.get_attribute("#pane-a img", "src") == href
    with page.expect_download() as download_info:
        page.click("#pane-a .pane-download")
    download = download_info.value
    assert download.suggested_filename == (
        f"{MODEL}_block2_conv1_unit5_{DETAIL_SIZE}px_lucid_{DETAIL_STEPS}steps_seed{SEED}.png"
    )
    data = Path(download.path()).read_bytes()
    assert data == requests.get(href, timeout=30).content
    assert png_size(data) == (DETAIL_SIZE, DETAIL_SIZE)
    recipe_text = json.dumps(png_text_chunks(data))
    assert "block2_conv1" in recipe_text and str(SEED) in recipe_text
    assert "block2_conv1" in page.inner_text("#pane-a .recipe-list")
    page.screenshot(path=str(artifacts / "unit.png"))
    # → and ← step through units; Esc closes and the URL forgets the unit.
    page.keyboard.press("ArrowRight")
    page.wait_for_function("location.hash.includes('unit=6')")
    assert "unit 6" in page.inner_text("#detail-title")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("location.hash.includes('unit=5')")
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail", state="hidden")
    assert "unit=" not in page.url


@pytest.mark.timeout(300)
def test_permalink_reopens_the_same_unit_view(backend, page):
    link = backend.page_url(
        **state(layer="block1_conv2", unit=9, size=DETAIL_SIZE, preset="offert2018", steps=4)
    )
    page.goto(link)
    page.wait_for_selector("#detail[open]")
    assert TOKEN not in page.url  # kept by the page, not left in the address (nor permalinks)
    assert page.inner_text("#detail-title") == f"{MODEL} · block1_conv2 · unit 9"
    assert page.input_value("#detail-size") == str(DETAIL_SIZE)
    assert page.input_value("#preset") == "offert2018"
    assert page.get_attribute("#layer-list button[aria-current='true']", "data-layer") == (
        "block1_conv2"
    )
    wait_done(page)
    recipe = page.inner_text("#pane-a .recipe-list")
    assert "offert2018" in recipe and "block1_conv2" in recipe


@pytest.mark.timeout(300)
def test_bad_request_shows_the_api_error_message(backend, page):
    too_many = 1_000_000  # steps beyond what the backend allows
    body = {"model": MODEL, "layer": "block1_conv1", "unit": 0, "size": DETAIL_SIZE,
            "steps": too_many}  # fmt: skip
    answer = backend.api("POST", "/api/renders", json=body)
    assert answer.status_code == 400
    message = answer.json()["error"]
    page.goto(backend.page_url(**state(layer="block1_conv1", unit=0, size=DETAIL_SIZE, steps=4)))
    page.wait_for_selector("#detail[open]")
    page.fill("#detail-steps", str(too_many))
    page.click("#render-again")
    page.locator("#toasts .toast", has_text=message).wait_for()
    assert page.inner_text("#pane-a .pane-error") == message
    assert page.get_attribute("#pane-a", "data-status") == "failed"
    # What the page can check itself it explains itself: a unit out of range, an unknown preset.
    page.goto(backend.page_url(**state(layer="block1_conv1", unit=64, preset="no-such-preset")))
    page.locator("#toasts .toast", has_text="units 0 to 63").wait_for()
    page.locator("#toasts .toast", has_text="Unknown preset 'no-such-preset'").wait_for()
    assert not page.locator("#detail[open]").count()
    assert page.input_value("#preset") == "lucid"


@pytest.mark.timeout(300)
def test_compare_mode_renders_two_presets_side_by_side(backend, page):
    page.goto(backend.page_url(**state(layer="block1_conv1", unit=3, size=DETAIL_SIZE, steps=4)))
    page.wait_for_selector("#detail[open]")
    page.check("#compare-toggle")
    page.select_option("#compare-preset", "offert2018")
    assert "cmp=1" in page.url and "cpreset=offert2018" in page.url
    wait_done(page, "#pane-a")
    wait_done(page, "#pane-b")
    a = page.get_attribute("#pane-a img", "src")
    b = page.get_attribute("#pane-b img", "src")
    assert a != b
    assert "offert2018" in page.inner_text("#pane-b .recipe-list")


@pytest.mark.timeout(400)
def test_wide_layer_loads_lazily_and_every_unit_is_reachable(backend, page):
    rounds: list[list[int]] = []  # the units of each render request the page sent

    def record(request) -> None:
        if request.method == "POST" and "/api/renders" in request.url:
            payload = request.post_data_json
            rounds.append([item["unit"] for item in payload.get("renders", [payload])])

    page.on("request", record)
    page.goto(backend.page_url(**{**state(), "model": WIDE_RUN, "layer": WIDE_LAYER}))
    page.wait_for_selector(f"#grid .tile[data-unit='{WIDE_UNITS - 1}']", state="attached")
    assert page.locator("#grid .tile").count() == WIDE_UNITS
    page.wait_for_function(
        "document.querySelectorAll('#grid .tile[data-state=done]').length >= 8", timeout=120_000
    )
    first_screen = {unit for batch in rounds for unit in batch}
    assert 0 < len(first_screen) < 200, f"{len(first_screen)} previews requested for one screen"
    assert all(len(batch) <= 64 for batch in rounds), "previews are requested in small batches"
    # Jump to the end: the last tile gets rendered too, the middle is never requested.
    page.locator("#grid-panel").evaluate("el => el.scrollTop = el.scrollHeight")
    page.wait_for_function(
        f"document.querySelector(\"#grid .tile[data-unit='{WIDE_UNITS - 1}']\").dataset.state"
        " === 'done'",
        timeout=120_000,
    )
    requested = {unit for batch in rounds for unit in batch}
    assert WIDE_UNITS // 2 not in requested
    assert len(requested) < 400
    # The keyboard reaches any unit too: the unit box opens the unit view.
    page.fill("#goto-unit", str(WIDE_UNITS - 1))
    page.press("#goto-unit", "Enter")
    page.wait_for_selector("#detail[open]")
    assert f"unit {WIDE_UNITS - 1}" in page.inner_text("#detail-title")
    page.keyboard.press("Escape")
    # Class layers name their units.
    page.click("#layer-list button[data-layer='predictions']")
    page.wait_for_selector("#grid .tile[data-unit='2']")
    assert "still-life" in page.get_attribute("#grid .tile[data-unit='2']", "aria-label")
    page.wait_for_function("document.querySelectorAll('#grid .tile[data-state=done]').length == 3")


@pytest.mark.timeout(600)
def test_page_reconnects_after_the_backend_restarts(backend, page):
    page.goto(backend.page_url(**state(layer="block1_conv1", size=DETAIL_SIZE, steps=4)))
    page.wait_for_selector("#connection[data-state='online']")
    backend.stop()
    page.wait_for_selector("#connection[data-state='offline']", timeout=30_000)
    assert page.is_visible("#banner")
    backend.start()
    page.wait_for_selector("#connection[data-state='online']", timeout=60_000)
    assert page.is_hidden("#banner")
    # Work goes on: a unit opened after the restart renders.
    page.click("#grid .tile[data-unit='1']")
    wait_done(page)


@pytest.mark.timeout(400)
def test_a_render_survives_a_backend_crash_and_the_page_waits_for_it(backend, page):
    """The server is SIGKILLed mid-render and started again: the unit view keeps polling (no
    error, no "failed"), the same job finishes, and its image is shown."""
    page.goto(backend.page_url(**state(layer="block2_conv1", unit=11, size=DETAIL_SIZE,
                                       steps=400)))  # fmt: skip
    page.wait_for_selector("#detail[open]")
    page.evaluate(
        """() => { window.seen = new Set();
            const record = () => { window.seen.add(document.querySelector('#pane-a').dataset.status);
              for (const t of document.querySelectorAll('.toast.error')) window.seen.add('toast: ' + t.textContent); };
            new MutationObserver(record).observe(document.body, {subtree: true, childList: true,
              attributes: true, attributeFilter: ['data-status']}); }"""
    )  # fmt: skip
    page.wait_for_function(
        "() => document.querySelector('#pane-a progress').value > 0.02", timeout=120_000
    )
    running = backend.api("GET", "/api/status").json()["running"]
    (render_id,) = [job["id"] for job in running if job["params"]["unit"] == 11]
    backend.kill()
    page.wait_for_selector("#connection[data-state='offline']", timeout=30_000)
    backend.start()
    wait_done(page, timeout_ms=300_000)
    src = page.get_attribute("#pane-a img", "src")
    assert f"/public/renders/{render_id}.png" in src  # the job accepted before the crash
    seen = page.evaluate("() => [...window.seen]")
    assert "failed" not in seen and not [s for s in seen if s.startswith("toast:")], seen
    assert backend.api("GET", f"/api/renders/{render_id}").json()["status"] == "done"


@pytest.mark.timeout(300)
def test_page_opened_as_a_file_talks_to_the_api_through_cors(backend, page):
    page.goto(
        f"{(page_dir() / 'index.html').as_uri()}?token={TOKEN}#{urlencode(state(api=backend.origin))}"
    )
    page.click("#layer-list button[data-layer='block1_conv1']")
    page.wait_for_function("document.querySelectorAll('#grid .tile[data-state=done]').length >= 4")
    src = page.get_attribute("#grid .tile[data-state=done] img", "src")
    assert src.startswith(f"{backend.origin}/public/renders/")
    assert page.input_value("#api-address") == backend.origin
