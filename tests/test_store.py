"""The render store: one id and one record format for every writer (queue, bulk, atlas icons).

Images are small synthetic arrays written with the real PNG writer; no model is needed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pytest

from wga.atomic import TEMP_MARK
from wga.errors import NotFound
from wga.serve.cache import RenderCache
from wga.vis.png import read_png_metadata
from wga.vis.store import (
    ID_PATTERN,
    RenderStore,
    check_id,
    png_matches,
    render_id,
    urls,
    view_from_record,
)

WEIGHTS = "0123456789abcdef"


@dataclass(frozen=True)
class Recipe:
    model: str = "m"
    layer: str = "conv"
    unit: int = 0
    size: int = 8
    seed: int = 0
    objective: str = "channel"

    def as_dict(self) -> dict:
        return asdict(self)


def image(value: int = 7) -> np.ndarray:
    return np.full((8, 8, 3), value, np.uint8)


def metadata(recipe: Recipe) -> dict:
    return {**recipe.as_dict(), "weights": WEIGHTS}


def test_the_id_is_a_content_address_of_recipe_and_weights():
    assert render_id(Recipe(), WEIGHTS) == render_id(Recipe(), WEIGHTS)
    assert render_id(Recipe(), WEIGHTS) != render_id(Recipe(seed=1), WEIGHTS)
    assert render_id(Recipe(), WEIGHTS) != render_id(Recipe(), "f" * 16)
    assert ID_PATTERN.match(render_id(Recipe(), WEIGHTS))
    assert check_id(render_id(Recipe(), WEIGHTS))
    for bad in ("../../etc/passwd", "ABC", None, 3):
        with pytest.raises(NotFound, match="hex digits"):
            check_id(bad)


def test_add_writes_the_image_then_a_record_that_reads_back_as_a_view(tmp_path):
    store = RenderStore(tmp_path, public_url="/x/")
    recipe = Recipe()
    render = store.add(recipe, WEIGHTS, image(), metadata(recipe), started=1.0)
    assert render == render_id(recipe, WEIGHTS)
    record = json.loads(store.record_path(render).read_text())
    assert record["status"] == "done" and record["progress"] == 1.0
    assert record["params"] == recipe.as_dict() and record["fingerprint"] == WEIGHTS
    assert record["created"] == record["started"] == 1.0 <= record["finished"]
    assert record["url"] == f"/x/{render}.png"
    assert store.lookup(render) == record
    assert store.view(render) == view_from_record(record, "/x/")
    assert store.finished_png(render) == store.png_path(render)
    assert read_png_metadata(store.png_path(render))["unit"] == 0
    assert not [path for path in tmp_path.iterdir() if TEMP_MARK in path.name]


def test_a_record_without_its_image_or_not_done_is_not_found(tmp_path):
    store = RenderStore(tmp_path)
    render = store.add(Recipe(), WEIGHTS, image(), metadata(Recipe()), started=0.0)
    store.png_path(render).unlink()
    assert store.lookup(render) is None and store.finished_png(render) is None
    other = store.add(Recipe(unit=1), WEIGHTS, image(), metadata(Recipe(unit=1)), started=0.0)
    record = json.loads(store.record_path(other).read_text())
    store.record_path(other).write_text(json.dumps({**record, "status": "running"}))
    assert store.lookup(other) is None and list(store.records()) == []


def test_listing_filters_by_model_and_layer_newest_first(tmp_path):
    store = RenderStore(tmp_path)
    for unit, layer in enumerate(["a", "b", "a"]):
        recipe = Recipe(layer=layer, unit=unit)
        store.add(recipe, WEIGHTS, image(), metadata(recipe), started=0.0)
    listed = store.listing("m", "a", 10)
    assert [view["params"]["unit"] for view in listed] == [2, 0]
    assert listed[0]["url"] == urls(listed[0]["id"])["url"]
    assert store.listing("other", None, 10) == [] and len(store.listing(None, None, 2)) == 2


def test_adopt_copies_the_same_bytes_with_the_targets_urls_and_the_cache_indexes_it(tmp_path):
    icons = RenderStore(tmp_path / "icons")
    recipe = Recipe()
    render = icons.add(recipe, WEIGHTS, image(), metadata(recipe), started=0.0)
    cache = RenderCache(tmp_path / "renders", public_url="/public/renders/")
    assert cache.adopt(icons, "f" * 24) is False  # the source does not have it
    assert cache.adopt(icons, render) is True
    assert cache.png_path(render).read_bytes() == icons.png_path(render).read_bytes()
    assert cache.lookup(render)["url"] == f"/public/renders/{render}.png"
    assert cache.entries() == 1 and cache.usage()["cache_bytes"] > 0
    assert [view["id"] for view in cache.listing(None, None, 5)] == [render]
    assert RenderCache(tmp_path / "renders").entries() == 1  # and after a restart


def test_png_matches_only_the_finished_render_of_that_recipe_and_weights(tmp_path):
    store = RenderStore(tmp_path)
    recipe = Recipe(objective="auto")
    render = store.add(
        recipe, WEIGHTS, image(), {**metadata(recipe), "objective": "channel"}, started=0
    )
    path = store.png_path(render)
    assert png_matches(path, recipe, WEIGHTS)  # "auto" resolved to what the metadata records
    assert not png_matches(path, Recipe(unit=3), WEIGHTS)
    assert not png_matches(path, recipe, "f" * 16)
    store.write_png(render, image(), {**metadata(recipe), "snapshot_step": 3})
    assert not png_matches(path, recipe, WEIGHTS)
    assert not png_matches(tmp_path / "missing.png", recipe, WEIGHTS)
