"""The artwork view in headless Chromium against the real backend with a probe index: opened from
a unit's examples, overlays switched per unit and group, similar artworks, a permalink, and an
image dropped on the page."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import numpy as np
import pytest
import test_page
from PIL import Image
from test_page import Backend, free_port, state
from test_probe_page import make_corpus

from wga.corpus.corpus import open_corpus
from wga.corpus.probe import run_probe
from wga.data.synthetic import framed, synthetic_image

artifacts = test_page.artifacts
browser = test_page.browser
page = test_page.page

pytestmark = [pytest.mark.browser, pytest.mark.gateway, pytest.mark.slow]
LAYERS = ["block3_conv1", "block4_conv2"]
PROBE = "synthetic-hed"


@pytest.fixture(scope="module")
def look_backend(tmp_path_factory, hed, artifacts) -> Iterator[Backend]:
    base = tmp_path_factory.mktemp("look-page")
    make_corpus(base / "corpus")
    run_probe(
        hed, open_corpus(base / "corpus"), LAYERS, base / "probes" / PROBE, k=4, batch_size=5,
        progress=False, border_margin=0.25,
    )  # fmt: skip
    server = Backend(free_port(), base, artifacts / "look-backend.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def wait_view(page, timeout_ms: int = 240_000) -> None:
    page.wait_for_function(
        "() => document.querySelector('#look').dataset.state === 'done'", timeout=timeout_ms
    )


HEAT_PIXELS = """() => {
  const c = document.querySelector('#look-heat');
  if (!c.width || !c.height) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
}"""


@pytest.mark.timeout(600)
def test_an_example_opens_the_artwork_view_with_overlays_similar_and_a_permalink(
    look_backend, page, artifacts
):
    page.goto(look_backend.page_url(**state(layer=LAYERS[0], unit=5, size=64, steps=4)))
    page.wait_for_selector("#artworks .artwork-list[data-kind='examples'] .artwork")
    first = page.locator("#artworks [data-kind='examples'] .artwork").nth(0)
    author = first.locator(".artwork-author").inner_text()
    first.locator(".artwork-frame").click()
    page.wait_for_selector("#look[open]")
    wait_view(page)
    assert author in page.locator("#look-catalog").inner_text()
    link = page.locator("#look-catalog a.look-wga")
    assert link.get_attribute("href").startswith("https://www.wga.hu/html/s/synth/")
    page.wait_for_function("() => document.querySelector('#look-image').naturalWidth > 0")
    tabs = page.locator("#look-layers .look-layer")
    assert [tabs.nth(i).inner_text() for i in range(tabs.count())] == LAYERS
    assert page.locator("#look-units .look-unit").count() == 8
    percentiles = page.locator("#look-units .look-pct-text").all_inner_texts()
    assert percentiles and all(text.endswith("%") for text in percentiles)
    assert page.locator("#look-groups .look-group").count() == 6
    # no overlay at first; a unit, then a group, paints the heat over the painting
    assert page.evaluate(HEAT_PIXELS) == 0
    page.locator("#look-units .look-pick").nth(0).click()
    page.wait_for_function(f"({HEAT_PIXELS})() > 0")
    assert "unit" in page.locator("#look-showing").inner_text()
    page.locator("#look-groups .look-pick").nth(1).click()
    page.wait_for_function("() => document.querySelector('#look-heat').dataset.show === 'g1'")
    assert "group 2" in page.locator("#look-showing").inner_text()
    # similar artworks, by content then by style; renders and icons arrive from the queue
    page.wait_for_selector("#look-similar .look-similar-open img")
    assert page.locator("#look-similar .look-similar-item").count() == 9  # 10 artworks, less itself
    page.click(".look-by[data-by='style']")
    page.wait_for_function("() => location.hash.includes('lby=style')")
    page.wait_for_selector("#look-similar .look-similar-open img")
    page.locator("#look-units").scroll_into_view_if_needed()
    page.wait_for_function(
        "() => document.querySelectorAll('#look-units img.look-render:not(.pending)').length >= 3",
        timeout=400_000,
    )  # the units' renders came through the queue
    page.evaluate("() => document.querySelector('.look-side').scrollTo(0, 0)")
    page.screenshot(path=str(artifacts / "look.png"))
    # the address is a permalink: a fresh page reopens the same artwork, layer and overlay
    address = page.url
    assert "look=" in address and "limage=" in address and "lshow=g1" in address
    page.goto("about:blank")
    page.goto(address)
    page.wait_for_selector("#look[open]")
    wait_view(page)
    page.wait_for_function("() => document.querySelector('#look-heat').dataset.show === 'g1'")
    # a similar artwork opens its own view
    before = page.evaluate("() => location.hash")
    page.locator("#look-similar .look-similar-open").nth(0).click()
    page.wait_for_function("before => location.hash !== before", arg=before)
    wait_view(page)
    page.keyboard.press("Escape")
    page.wait_for_function("() => !location.hash.includes('look=')")


def _dropped_image() -> bytes:
    rng = np.random.default_rng(4)
    buffer = io.BytesIO()
    Image.fromarray(framed(synthetic_image("rings", rng, side=96), rng)).save(buffer, "PNG")
    return buffer.getvalue()


DROP = """async (data) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const file = new File([bytes], 'mine.png', { type: 'image/png' });
  const transfer = new DataTransfer();
  transfer.items.add(file);
  document.body.dispatchEvent(new DragEvent('dragover', { dataTransfer: transfer, bubbles: true }));
  document.body.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
}"""


@pytest.mark.timeout(600)
def test_an_image_dropped_on_the_page_is_looked_at_against_the_probe(look_backend, page):
    page.goto(look_backend.page_url(**state()))
    page.wait_for_selector("#look-upload")
    page.evaluate(DROP, base64.b64encode(_dropped_image()).decode())
    page.wait_for_selector("#look[open]")
    wait_view(page)
    assert "lupload=" in page.url
    assert "Your image" in page.locator("#look-title").inner_text()
    page.wait_for_function("() => document.querySelector('#look-image').naturalWidth > 0")
    assert page.locator("#look-units .look-unit").count() == 8
    page.wait_for_selector("#look-similar .look-similar-open img")
    # a file that is not an image is refused with the reason, and nothing opens
    page.keyboard.press("Escape")
    page.set_input_files(
        "#look-file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}]
    )
    page.wait_for_selector(".toast.error")
    assert "JPEG, PNG or WebP" in page.locator(".toast.error").inner_text()
