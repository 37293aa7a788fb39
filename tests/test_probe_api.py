"""The probe endpoints as functions: listing, a unit's artworks with their files, overlays, errors."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest
from PIL import Image

from wga.corpus.corpus import open_corpus
from wga.corpus.probe import run_probe
from wga.serve.api import RenderService
from wga.serve.loading import ModelLoader
from wga.serve.probes import ProbeService
from wga.serve.queue import RenderQueue

UNIT_ROUTE = "GET /api/probes/:probe/layers/:layer/units/:unit"
OVERLAY_ROUTE = "GET /api/probes/:probe/layers/:layer/units/:unit/overlay"


def call(service: RenderService, route: str, path=None, args=None):
    request = {"body": "", "args": args or {}, "path": path or {}, "headers": {}}
    response = service.handle(route, json.dumps(request))
    json.loads(response.body_json())
    return response


@pytest.fixture(scope="module")
def setup(registry, hed, tmp_path_factory):
    base = tmp_path_factory.mktemp("probe-api")
    corpus = base / "corpus"
    (corpus / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    with open(corpus / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "status", "AUTHOR", "TITLE", "DATE", "URL"])
        for index in range(6):
            image = rng.integers(0, 256, size=(40 + 4 * index, 56, 3), dtype=np.uint8)
            Image.fromarray(image).save(corpus / "images" / f"{index}.png")
            page = f"https://www.wga.hu/html/p/painter/{index}.html"
            writer.writerow(
                [f"images/{index}.png", "ok", "PAINTER, Anna", f"Work {index}", "1500", page]
            )
    probes = base / "probes"
    run_probe(
        hed,
        open_corpus(corpus),
        ["block2_conv2", "block3_pool"],
        probes / "hed-art",
        k=3,
        batch_size=4,
        progress=False,
    )
    (probes / "not-a-probe").mkdir()
    cache = base / "cache"
    queue = RenderQueue(cache / "renders", registry.load, devices=["/CPU:0"])
    service = RenderService(registry, queue)
    service.routes.update(ProbeService(cache, ModelLoader(registry), probes).routes)
    return service, cache


def test_probes_lists_the_index_folders_only_by_name(setup, tmp_path_factory):
    service, _ = setup
    response = call(service, "GET /api/probes")
    assert response.status == 200
    (probe,) = response.body["probes"]
    assert probe["name"] == "hed-art" and probe["model"] == "vgg16-hed" and probe["images"] == 6
    assert [layer["name"] for layer in probe["layers"]] == ["block2_conv2", "block3_pool"]
    assert probe["corpus"] == "corpus"
    assert str(tmp_path_factory.getbasetemp()) not in json.dumps(response.body)  # names only


def test_a_unit_gives_artworks_with_catalog_fields_crops_and_histogram(setup):
    service, cache = setup
    response = call(service, UNIT_ROUTE, {"probe": "hed-art", "layer": "block2_conv2", "unit": "3"})
    assert response.status == 200, response.body
    body = response.body
    assert len(body["examples"]) == 3 and len(body["negatives"]) == 3
    assert sum(body["histogram"]["counts"]) == 6
    for example in body["examples"] + body["negatives"]:
        assert example["author"] == "PAINTER, Anna" and example["title"].startswith("Work")
        assert example["page"].startswith("https://www.wga.hu/html/")
        for key in ("image_url", "crop_url"):
            assert example[key].startswith("/public/probes/hed-art-")
            file = cache / example[key].removeprefix("/public/")
            with Image.open(file) as image:
                assert min(image.size) >= 1
        assert example["overlay_url"].startswith(
            "/api/probes/hed-art/layers/block2_conv2/units/3/overlay?image="
        )


def test_an_overlay_is_made_in_the_background_then_served(setup):
    service, cache = setup
    unit = call(service, UNIT_ROUTE, {"probe": "hed-art", "layer": "block3_pool", "unit": "0"}).body
    image = unit["examples"][0]["image"]
    path = {"probe": "hed-art", "layer": "block3_pool", "unit": "0"}
    response = call(service, OVERLAY_ROUTE, path, {"image": [str(image)]})
    deadline = time.monotonic() + 120
    while response.status == 202 and time.monotonic() < deadline:
        time.sleep(0.2)
        response = call(service, OVERLAY_ROUTE, path, {"image": [str(image)]})
    assert response.status == 200 and response.body["status"] == "done"
    with Image.open(cache / response.body["url"].removeprefix("/public/")) as overlay:
        assert (
            overlay.size
            == Image.open(cache / unit["examples"][0]["image_url"].removeprefix("/public/")).size
        )


@pytest.mark.parametrize(
    ("path", "args", "status", "hint"),
    [
        ({"probe": "hed-arts", "layer": "block2_conv2", "unit": "0"}, None, 404, "hed-art"),
        ({"probe": "not-a-probe", "layer": "block2_conv2", "unit": "0"}, None, 404, "hed-art"),
        (
            {"probe": "../probes/hed-art", "layer": "block2_conv2", "unit": "0"},
            None,
            404,
            "hed-art",
        ),
        ({"probe": "hed-art", "layer": "block2_conv", "unit": "0"}, None, 404, "block2_conv2"),
        ({"probe": "hed-art", "layer": "block2_conv2", "unit": "128"}, None, 404, "127"),
        ({"probe": "hed-art", "layer": "block2_conv2", "unit": "-1"}, None, 400, "whole number"),
        (
            {"probe": "hed-art", "layer": "block2_conv2", "unit": "0"},
            {"image": ["../../etc"]},
            400,
            "image",
        ),
        (
            {"probe": "hed-art", "layer": "block2_conv2", "unit": "0"},
            {"image": ["99"]},
            404,
            "no image",
        ),
    ],
)
def test_bad_names_answer_json_errors_with_the_closest_names(setup, path, args, status, hint):
    service, _ = setup
    route = OVERLAY_ROUTE if args else UNIT_ROUTE
    response = call(service, route, path, args)
    assert response.status == status
    assert hint in response.body["error"]
