"""The page's atlas view in headless Chromium against the real backend with an atlas.

A tiny corpus (synthetic paintings with catalog fields) is probed and laid out as an atlas with
vgg16-hed in this process (2 × 2 grid with icons, and a 3 × 3 level without: the page asks the
render queue for those); the backend finds both through $WGA_PROBES_DIR and $WGA_ATLASES_DIR.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import test_page
from test_page import Backend, free_port, state
from test_probe_page import make_corpus

from wga.corpus.atlas import AtlasOptions, build_atlas
from wga.corpus.corpus import open_corpus
from wga.corpus.probe import run_probe

artifacts = test_page.artifacts
browser = test_page.browser
page = test_page.page

pytestmark = [pytest.mark.browser, pytest.mark.gateway, pytest.mark.slow]
LAYER = "block2_conv2"
NAME = "synthetic-b2"
ALL_LOADED = (
    "() => { const t = [...document.querySelectorAll('#atlas-plane .atlas-tile img')];"
    " return t.length > 0 && t.every(i => i.complete && i.naturalWidth > 0); }"
)


@pytest.fixture(scope="module")
def atlas_backend(tmp_path_factory, hed, artifacts) -> Iterator[Backend]:
    base = tmp_path_factory.mktemp("atlas-page")
    make_corpus(base / "corpus")
    index = run_probe(
        hed, open_corpus(base / "corpus"), [LAYER], base / "probes" / "synthetic", progress=False
    )
    options = AtlasOptions(LAYER, grid=2, icon=64, steps=4, per_image=12, levels=(2, 3))
    build_atlas(index, hed, options, base / "atlases" / NAME, progress=False)
    server = Backend(free_port(), base, artifacts / "atlas-backend.log")  # ./probes, ./atlases
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(400)
def test_atlas_view_zooms_renders_missing_icons_and_opens_a_cell_by_permalink(
    atlas_backend, page, artifacts
):
    page.goto(atlas_backend.page_url(**state(atlas=NAME)))
    page.wait_for_selector("#atlas[open] #atlas-plane .atlas-tile")
    page.wait_for_function(ALL_LOADED)  # the CLI's icons, published into the render cache
    assert "alevel=2" in page.url
    # a level the CLI rendered no icons for: the page asks the queue, icons arrive
    page.click("#atlas-levels [data-grid='3']")
    page.wait_for_function("() => location.hash.includes('alevel=3')")
    page.wait_for_selector("#atlas-plane .atlas-tile")
    page.wait_for_function(ALL_LOADED, timeout=180_000)
    assert page.locator("#atlas-plane .atlas-tile.pending").count() == 0
    # zoom and pan
    page.click("#atlas-zoom-in")
    assert "scale(2)" in page.locator("#atlas-plane").get_attribute("style")
    page.click("#atlas-zoom-out")
    # a cell: its icon large, its count, its artworks (crops, catalog fields)
    tile = page.locator("#atlas-plane .atlas-tile").first
    key = tile.get_attribute("data-cell")
    tile.click()
    page.wait_for_selector("#atlas-cell:not([hidden]) .atlas-member img.atlas-crop")
    assert "sampled activations" in page.locator("#atlas-cell .atlas-count").inner_text()
    assert "MASTER of the" in page.locator("#atlas-cell .atlas-members").inner_text()
    page.wait_for_function(
        "() => { const i = document.querySelector('#atlas-cell .atlas-icon-large');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    assert f"acell={key}" in page.url
    page.screenshot(path=str(artifacts / "atlas.png"))
    # the address is a permalink: a fresh page opens the same atlas, level and cell
    permalink = page.url
    page.goto("about:blank")
    page.goto(permalink)
    page.wait_for_selector(f"#atlas[open] #atlas-plane .atlas-tile.selected[data-cell='{key}']")
    page.wait_for_selector("#atlas-cell:not([hidden]) .atlas-count")
    assert page.locator("#atlas-levels [aria-pressed='true']").get_attribute("data-grid") == "3"
    # closing the view forgets it in the address
    page.click("#atlas-close")
    page.wait_for_function("() => !location.hash.includes('atlas=')")


def test_atlas_button_lists_the_atlases(atlas_backend, page):
    page.goto(atlas_backend.page_url(**state()))
    page.click("#open-atlas")
    page.wait_for_selector("#atlas[open] #atlas-plane .atlas-tile")
    options = page.locator("#atlas-pick option")
    assert options.count() == 1 and NAME in options.first.inner_text()
