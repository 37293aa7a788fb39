"""The page's artworks views in headless Chromium against the real backend with a probe index.

A tiny corpus (synthetic paintings with catalog fields) is probed with vgg16-hed in this process;
the backend (`python -m wga serve`) finds the index through $WGA_PROBES_DIR.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import test_page
from PIL import Image
from test_page import Backend, free_port, state

from wga.corpus.corpus import open_corpus
from wga.corpus.probe import run_probe
from wga.data.synthetic import SYNTHETIC_CLASSES, synthetic_image

# The page tests' fixtures (a Chromium per module, a fresh page per test, the artifacts folder).
artifacts = test_page.artifacts
browser = test_page.browser
page = test_page.page

pytestmark = [pytest.mark.browser, pytest.mark.gateway, pytest.mark.slow]
LAYER = "block3_conv1"
K = 4


def make_corpus(root: Path) -> None:
    """A `wga download`-style folder: 10 synthetic paintings with author, title, date, page."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(11)
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "status", "AUTHOR", "TITLE", "DATE", "URL"])
        for index in range(10):
            kind = SYNTHETIC_CLASSES[index % len(SYNTHETIC_CLASSES)]
            file = f"images/{kind}-{index}.jpg"
            Image.fromarray(synthetic_image(kind, rng, side=120)).save(root / file, quality=92)
            page_url = f"https://www.wga.hu/html/s/synth/{kind}{index}.html"
            writer.writerow(
                [
                    file,
                    "ok",
                    f"MASTER of the {kind.title()}",
                    f"{kind.title()} no. {index}",
                    f"c. 15{index}0",
                    page_url,
                ]
            )


@pytest.fixture(scope="module")
def probe_backend(tmp_path_factory, hed, artifacts) -> Iterator[Backend]:
    base = tmp_path_factory.mktemp("probe-page")
    make_corpus(base / "corpus")
    run_probe(
        hed,
        open_corpus(base / "corpus"),
        [LAYER],
        base / "probes" / "synthetic-hed",
        k=K,
        batch_size=5,
        progress=False,
    )
    server = Backend(free_port(), base, artifacts / "probe-backend.log")  # finds ./probes
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(400)
def test_unit_view_shows_top_artworks_overlay_negatives_and_histogram(
    probe_backend, page, artifacts
):
    page.goto(probe_backend.page_url(**state(layer=LAYER, unit=7, size=64, steps=8)))
    page.wait_for_selector("#detail[open]")
    page.wait_for_selector("#artworks .artwork-list[data-kind='examples'] .artwork")
    examples = page.locator("#artworks [data-kind='examples'] .artwork")
    assert examples.count() == K
    first = examples.nth(0)
    assert "MASTER of the" in first.inner_text()
    link = first.locator("a.artwork-title")
    assert link.get_attribute("href").startswith("https://www.wga.hu/html/s/synth/")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#artworks .artwork-crop')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.locator("#artworks [data-kind='negatives'] .artwork").count() == K
    assert page.locator("#artworks svg.artwork-histogram rect").count() == 64
    # Hover: the whole artwork, then its heat overlay once the backend has made it.
    first.locator(".artwork-frame").hover()
    page.wait_for_selector("#artworks .artwork-popover:not([hidden]) img.artwork-whole")
    page.wait_for_selector("#artworks .artwork-popover img.heat", timeout=120_000)
    page.wait_for_function(
        "() => { const i = document.querySelector('#artworks img.heat'); return i.complete && i.naturalWidth > 0; }"
    )
    page.wait_for_function(
        "document.querySelector('#pane-a').dataset.status === 'done'", timeout=120_000
    )
    page.screenshot(path=str(artifacts / "artworks.png"))


@pytest.mark.timeout(300)
def test_grid_switches_between_optimised_and_artwork_thumbnails(probe_backend, page):
    page.goto(probe_backend.page_url(**state(layer=LAYER)))
    page.wait_for_selector("#grid .tile[data-unit='0']")
    switch = page.locator("#thumbs")
    switch.wait_for(state="visible")
    assert switch.input_value() == "optimised"
    switch.select_option("artworks")
    page.wait_for_function(
        "document.querySelectorAll('#grid .tile .tile-art').length >= 8", timeout=120_000
    )
    art = page.locator("#grid .tile[data-unit='0'] .tile-art")
    assert art.is_visible()
    switch.select_option("optimised")
    assert not art.is_visible()
    # A layer the probe did not record has no switch.
    page.click("#layer-list button[data-layer='block1_conv1']")
    page.wait_for_selector("#thumbs", state="hidden")
