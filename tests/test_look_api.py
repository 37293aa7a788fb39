"""The artwork-view endpoints as functions: views, similar artworks, uploads and their attacks."""

from __future__ import annotations

import base64
import csv
import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from wga.corpus.corpus import open_corpus
from wga.corpus.look import look, picture_from_index
from wga.corpus.probe import run_probe
from wga.corpus.similar import similar
from wga.data.synthetic import SYNTHETIC_CLASSES, synthetic_image
from wga.serve.api import RenderService
from wga.serve.loading import ModelLoader
from wga.serve.looks import LookService
from wga.serve.probes import ProbeService
from wga.serve.queue import RenderQueue
from wga.serve.uploads import MAX_UPLOAD_BYTES

ARTWORK = "GET /api/probes/:probe/images/:id"
pytestmark = pytest.mark.backends  # run again on JAX by make test
SIMILAR = "GET /api/probes/:probe/images/:id/similar"
UPLOAD = "POST /api/looks"
LOOK = "GET /api/looks/:id"
LAYERS = ["block2_pool", "block3_pool"]


def call(service, route, path=None, args=None, body=""):
    request = {"body": body, "args": args or {}, "path": path or {}, "headers": {}}
    response = service.handle(route, json.dumps(request))
    json.loads(response.body_json())  # always JSON
    return response


def ready(service, route, path=None, args=None, timeout=240.0):
    """Poll a 202 route until it answers otherwise (as the page does)."""
    deadline = time.monotonic() + timeout
    while True:
        response = call(service, route, path, args)
        if response.status != 202:
            return response
        assert response.headers.get("Retry-After") == "1"
        assert time.monotonic() < deadline, "the view never came"
        time.sleep(0.2)


def upload_body(data: bytes, content_type: str) -> dict:
    return {"content_type": content_type, "data": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def setup(registry, hed, tmp_path_factory):
    base = tmp_path_factory.mktemp("look-api")
    corpus = base / "corpus"
    (corpus / "images").mkdir(parents=True)
    rng = np.random.default_rng(5)
    with open(corpus / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "status", "AUTHOR", "TITLE", "DATE", "URL"])
        for index in range(6):
            kind = SYNTHETIC_CLASSES[index % 4]
            Image.fromarray(synthetic_image(kind, rng, 64)).save(corpus / f"images/{index}.png")
            page = f"https://www.wga.hu/html/p/painter/{index}.html"
            writer.writerow([f"images/{index}.png", "ok", "PAINTER, Anna", kind, "1500", page])
    probes = base / "probes"
    run_probe(hed, open_corpus(corpus), LAYERS, probes / "hed-art", k=3, progress=False)
    static = base / "static"
    queue = RenderQueue(static / "renders", registry.load, devices=["/CPU:0"])
    service = RenderService(registry, queue)
    probe_service = ProbeService(static, ModelLoader(registry), probes)
    service.routes.update(probe_service.routes)
    service.routes.update(LookService(static, probe_service, service.vectors).routes)
    return service, static, probe_service.index("hed-art"), corpus


def test_the_artwork_view_is_the_look_document_with_urls(setup, hed):
    service, static, index, _ = setup
    path = {"probe": "hed-art", "id": "2"}
    first = call(service, ARTWORK, path, {"top": ["4"], "groups": ["3"]})
    assert first.status == 202 and first.body == {"status": "pending"}
    view = ready(service, ARTWORK, path, {"top": ["4"], "groups": ["3"]})
    assert view.status == 200, view.body
    body = view.body
    expected = look(hed, picture_from_index(index, 2), LAYERS, index=index, top=4, groups=3)
    assert body["model"] == "vgg16-hed" and body["probe"] == "hed-art"
    assert body["render_model"] == "vgg16-hed"
    image = body["image"]
    assert image["id"] == 2 and image["file"] == "images/2.png"
    assert image["author"] == "PAINTER, Anna" and image["page"].startswith("https://www.wga.hu/")
    assert (static / image["image_url"].removeprefix("/public/")).is_file()
    assert [layer["layer"] for layer in body["layers"]] == LAYERS
    for layer, mine in zip(body["layers"], expected.layers, strict=True):
        assert [u["unit"] for u in layer["units"]] == [u.unit for u in mine.units]
        for unit in layer["units"]:
            assert 0 <= unit["percentile"] <= 100
            assert unit["overlay_url"].endswith(f"/units/{unit['unit']}/overlay?image=2")
            assert np.asarray(unit["map"]).shape == tuple(layer["region"])
        assert len(layer["groups"]) == 3
        for group in layer["groups"]:
            recipe = group["recipe"]
            assert recipe["objective"] == "direction" and recipe["vector"] == group["direction"]
            assert group["direction"] in service.vectors  # the page can render the icon
            assert np.min(group["map"]) >= 0
    # the same request again: answered at once from the kept view
    assert call(service, ARTWORK, path, {"top": ["4"], "groups": ["3"]}).status == 200


def test_similar_artworks_of_an_indexed_artwork(setup):
    service, _, index, _ = setup
    response = call(
        service, SIMILAR, {"probe": "hed-art", "id": "1"}, {"layer": ["block3_pool"], "k": ["3"]}
    )
    assert response.status == 200, response.body
    body = response.body
    assert body["layer"] == "block3_pool" and body["by"] == "content"
    expected = similar(index, "block3_pool", k=3, image=1)
    assert [(r["id"], r["score"]) for r in body["results"]] == [
        (m.image, m.score) for m in expected
    ]
    assert all(r["image_url"].startswith("/public/probes/") for r in body["results"])


@pytest.mark.parametrize(
    ("route", "path", "args", "status", "words"),
    [
        (ARTWORK, {"probe": "nope", "id": "1"}, {}, 404, "hed-art"),
        (ARTWORK, {"probe": "hed-art", "id": "99"}, {}, 404, "ids run 0"),
        (ARTWORK, {"probe": "hed-art", "id": "../1"}, {}, 400, "whole number"),
        (ARTWORK, {"probe": "hed-art", "id": "1"}, {"layers": ["block3_pol"]}, 404, "block3_pool"),
        (ARTWORK, {"probe": "hed-art", "id": "1"}, {"sort": ["size"]}, 400, "sort"),
        (ARTWORK, {"probe": "hed-art", "id": "1"}, {"top": ["0"]}, 400, "top"),
        (SIMILAR, {"probe": "hed-art", "id": "1"}, {"by": ["colour"]}, 400, "content"),
        (SIMILAR, {"probe": "hed-art", "id": "1"}, {"layer": ["block9"]}, 404, "block3_pool"),
        (LOOK, {"id": "f" * 24}, {"probe": ["hed-art"]}, 404, "upload it again"),
        (LOOK, {"id": "../../etc"}, {}, 404, "hex digits"),
    ],
)
def test_unknown_names_answer_4xx_with_a_hint(setup, route, path, args, status, words):
    service = setup[0]
    response = call(service, route, path, args)
    assert response.status == status, response.body
    assert words in response.body["error"]


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def _claiming(png: bytes, width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width × height`` (a decompression bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    patched = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return png[:8] + patched + png[8 + len(patched) :]


def test_an_upload_is_looked_at_against_the_probe_with_similar_artworks(setup, corpus_files):
    service, static, index, corpus = setup
    data = (corpus / "images/3.png").read_bytes()
    created = call(service, UPLOAD, body=upload_body(data, "image/png"))
    assert created.status == 201, created.body
    upload = created.body["id"]
    assert created.body["url"] == f"/api/looks/{upload}" and len(upload) == 24
    again = call(service, UPLOAD, body=upload_body(data, "image/png"))
    assert (again.status, again.body["id"]) == (200, upload)  # the same bytes: one file
    stored = list((static / "looks/uploads").iterdir())
    assert [p.name for p in stored] == [f"{upload}.png"]
    response = ready(service, LOOK, {"id": upload}, {"probe": ["hed-art"], "groups": ["2"]})
    assert response.status == 200, response.body
    body = response.body
    assert body["image"]["upload"] == upload and body["image"]["id"] is None
    assert (static / body["image"]["image_url"].removeprefix("/public/")).read_bytes() == data
    # the same pixels as artwork 3: the same units, and artwork 3 is the most similar by content
    expected = look(hed_model(setup), picture_from_index(index, 3), LAYERS, index=index, groups=2)
    for layer, mine in zip(body["layers"], expected.layers, strict=True):
        assert [u["unit"] for u in layer["units"]] == [u.unit for u in mine.units]
        for by in ("content", "style"):
            best = body["similar"][layer["layer"]][by]["results"][0]
            assert best["id"] == 3 and best["score"] == pytest.approx(1.0, abs=1e-3), by


def hed_model(setup):
    return setup[0].loader.get("vgg16-hed")


@pytest.fixture()
def corpus_files(setup):
    """Every file under the static folder before the test, to prove nothing else was written."""
    static = setup[1]
    before = {p for p in static.rglob("*") if p.is_file()}
    yield before
    after = {p for p in static.rglob("*") if p.is_file()}
    written = {p.relative_to(static).parts[0] for p in after - before}
    assert written <= {"looks", "probes"}, written  # uploads and thumbnails of the artworks


def test_uploads_that_are_not_acceptable_images_answer_4xx_and_write_nothing(setup):
    service, static = setup[0], setup[1]
    folder = static / "looks/uploads"
    before = sorted(folder.iterdir()) if folder.exists() else []
    jpeg = io.BytesIO()
    Image.fromarray(synthetic_image("stripes", np.random.default_rng(0), 96)).save(jpeg, "JPEG")
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    cases = [
        (upload_body(b"\0" * (MAX_UPLOAD_BYTES + 1), "image/png"), 413, "20 MB"),
        (upload_body(_claiming(_png(4, 4), 8000, 8000), "image/png"), 413, "megapixels"),
        (upload_body(_claiming(_png(4, 4), 30000, 30000), "image/png"), 413, "megapixels"),
        (upload_body(gif.getvalue(), "image/gif"), 415, "image/jpeg"),
        (upload_body(gif.getvalue(), "image/png"), 415, "not a JPEG, PNG or WebP"),
        (upload_body(b"hello", "text/plain"), 415, "image/jpeg"),
        (upload_body(jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "image/jpeg"), 400, "truncated"),
        (upload_body(_png(4, 4)[:-30], "image/png"), 400, "truncated"),
        ({"content_type": "image/png", "data": "not base64!"}, 400, "base64"),
        ({"url": "http://example.com/a.png"}, 415, "request body"),
        (upload_body(b"", "image/png"), 400, "no body"),
    ]
    for body, status, words in cases:
        response = call(service, UPLOAD, body=body)
        assert response.status == status, (words, response.body)
        assert words in response.body["error"], response.body
    after = sorted(folder.iterdir()) if folder.exists() else []
    assert after == before
