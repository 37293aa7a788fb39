"""The REST API as functions (no gateway): every endpoint, every bad input, real engine.

Renders use the offline ``vgg16-hed`` model at 64 px with a handful of steps.
"""

from __future__ import annotations

import json

import keras
import pytest

from wga.serve.api import MAX_PRIORITY, RenderService, Response
from wga.serve.queue import RenderQueue
from wga.vis.png import read_png_metadata

LAYER = "block3_conv1"
RECIPE = {"model": "vgg16-hed", "layer": LAYER, "unit": 5, "size": 64, "steps": 4}


def call(service: RenderService, route: str, body=None, path=None, raw: str | None = None):
    request = {"body": raw if raw is not None else (body if body is not None else ""), "args": {}}
    request["path"] = path or {}
    request["headers"] = {}
    response = service.handle(route, json.dumps(request))
    json.loads(response.body_json())  # always valid JSON
    return response


@pytest.fixture(scope="module")
def queue(registry, tmp_path_factory):
    queue = RenderQueue(
        tmp_path_factory.mktemp("cache") / "renders",
        registry.load,
        devices=["/CPU:0"],
        snapshot_interval_s=0.05,
    ).start()
    yield queue
    queue.stop()


@pytest.fixture(scope="module")
def service(registry, hed, queue):
    return RenderService(registry, queue)


def test_models_lists_every_model_with_availability_and_one_default(service):
    response = call(service, "GET /api/models")
    assert response.status == 200
    models = {model["name"]: model for model in response.body["models"]}
    assert models["vgg16-hed"]["available"] is True
    assert sum(model["default"] for model in models.values()) == 1
    for model in models.values():
        assert model["reason"], f"{model['name']} has no reason"


def test_layers_lists_units_and_kinds(service):
    response = call(service, "GET /api/models/:model/layers", path={"model": "vgg16-hed"})
    assert response.status == 200
    layers = {layer["name"]: layer for layer in response.body["layers"]}
    assert layers[LAYER]["units"] == 256 and layers[LAYER]["kind"] == "conv"
    assert response.body["model"] == "vgg16-hed"


@pytest.mark.parametrize("model", ["vgg61", "../../etc/passwd", "/tmp/x.keras"])
def test_layers_of_an_unknown_model_is_404_and_never_opens_a_path(service, model):
    response = call(service, "GET /api/models/:model/layers", path={"model": model})
    assert response.status == 404
    assert "unknown model" in response.body["error"]


def test_presets_lists_names_and_allowed_ranges(service):
    body = call(service, "GET /api/presets").body
    names = [preset["name"] for preset in body["presets"]]
    assert "lucid" in names and "offert2018" in names
    assert body["default"] == "lucid"
    assert body["size"]["min"] <= 64 and body["size"]["max"] >= 1024


BAD_RENDERS = [
    ({**RECIPE, "unit": "5"}, 400, "unit must be an integer"),
    ({**RECIPE, "unit": 5.5}, 400, "unit must be an integer"),
    ({**RECIPE, "unit": True}, 400, "unit must be an integer"),
    ({**RECIPE, "unit": 256}, 400, "out of range"),
    ({**RECIPE, "unit": -1}, 400, "unit must be from 0"),
    ({k: v for k, v in RECIPE.items() if k != "unit"}, 400, "missing field 'unit'"),
    ({**RECIPE, "size": 8}, 400, "size must be from 64"),
    ({**RECIPE, "size": 100000}, 400, "size must be from 64"),
    ({**RECIPE, "size": "big"}, 400, "size must be an integer"),
    ({**RECIPE, "model": "vgg61"}, 404, "did you mean"),
    ({**RECIPE, "model": 16}, 400, "model must be a non-empty string"),
    ({**RECIPE, "layer": "block9_conv9"}, 404, "no visualisable layer"),
    ({**RECIPE, "preset": "lucyd"}, 400, "unknown preset"),
    ({**RECIPE, "steps": 0}, 400, "steps must be from 1"),
    ({**RECIPE, "seed": -3}, 400, "seed must be from 0"),
    ({**RECIPE, "priority": MAX_PRIORITY + 1}, 400, "priority must be from"),
    ({**RECIPE, "octave": 3}, 400, "unknown field(s) 'octave'"),
    ([RECIPE], 400, "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_RENDERS)
def test_bad_render_requests_get_4xx_that_say_what_to_fix(service, body, status, message):
    response = call(service, "POST /api/renders", body)
    assert response.status == status, response.body
    assert message in response.body["error"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [('{"model": "vgg16-hed", ', "not valid JSON"), ("", "has no body"), ('"text"', "JSON object")],
)
def test_malformed_json_bodies_are_400(service, raw, message):
    response = call(service, "POST /api/renders", raw=raw)
    assert response.status == 400
    assert message in response.body["error"]


@pytest.mark.parametrize("render", ["0" * 24, "nope", "../../secret"])
@pytest.mark.parametrize("route", ["GET /api/renders/:id", "DELETE /api/renders/:id"])
def test_unknown_render_ids_are_404(service, route, render):
    response = call(service, route, path={"id": render})
    assert response.status == 404
    assert "no render with id" in response.body["error"]


def test_render_is_queued_then_done_and_then_a_cache_hit(service, queue):
    first = call(service, "POST /api/renders", RECIPE)
    assert first.status == 202
    assert first.headers["Location"] == f"/api/renders/{first.body['id']}"
    assert first.body["url"] == f"/public/renders/{first.body['id']}.png"
    assert queue.wait(first.body["id"], 120)["status"] == "done"
    done = call(service, "GET /api/renders/:id", path={"id": first.body["id"]})
    assert done.status == 200 and done.body["status"] == "done" and done.body["progress"] == 1
    assert done.body["params"]["layer"] == LAYER
    png = queue.cache.png_path(first.body["id"])
    metadata = read_png_metadata(png)
    assert metadata["unit"] == 5 and metadata["model"] == "vgg16-hed" and metadata["weights"]
    again = call(service, "POST /api/renders", {**RECIPE, "steps": 4})
    assert again.status == 200 and again.body["id"] == first.body["id"]
    assert again.body["status"] == "done"


def test_the_queue_times_its_steps_and_the_layers_say_how_long_a_render_takes(service, queue):
    render = call(service, "POST /api/renders", {**RECIPE, "unit": 6, "seed": 1})
    assert queue.wait(render.body["id"], 120)["status"] == "done"
    assert queue.clock.unit_step_seconds("vgg16-hed", LAYER, 64) is not None  # the queue's own
    response = call(service, "GET /api/models/:model/layers", path={"model": "vgg16-hed"})
    layers = {layer["name"]: layer for layer in response.body["layers"]}
    assert layers[LAYER]["seconds"]["lucid"]["128"] > 0
    assert "seconds" not in layers["block5_conv3"]  # never rendered here: no guess


def test_default_steps_and_explicit_default_steps_are_the_same_render(service, queue):
    from wga.vis.presets import PRESETS

    implicit = {**RECIPE, "preset": "preview"}
    del implicit["steps"]
    explicit = {**implicit, "steps": PRESETS["preview"].default_steps}
    a = call(service, "POST /api/renders", implicit).body
    b = call(service, "POST /api/renders", explicit).body
    assert a["id"] == b["id"]
    call(service, "DELETE /api/renders/:id", path={"id": a["id"]})


def test_batch_of_units_is_queued_together(service, queue):
    body = {**{k: v for k, v in RECIPE.items() if k != "unit"}, "units": [10, 11, 12]}
    response = call(service, "POST /api/renders/batch", body)
    assert response.status == 202
    renders = response.body["renders"]
    assert [render["unit"] for render in renders] == [10, 11, 12]
    assert len({render["id"] for render in renders}) == 3
    for render in renders:
        assert queue.wait(render["id"], 120)["status"] == "done"


def test_batch_of_render_requests_is_all_or_nothing(service, queue):
    before = queue.status()["live"]
    good = {**RECIPE, "unit": 20}
    response = call(service, "POST /api/renders/batch", {"renders": [good, {**good, "unit": 999}]})
    assert response.status == 400
    assert response.body["error"].startswith("renders[1]: unit 999 is out of range")
    assert queue.status()["live"] == before
    response = call(service, "POST /api/renders/batch", {"renders": [good], "extra": 1})
    assert response.status == 400


def test_cancel_answers_cancelled_then_409(service, queue):
    view = call(service, "POST /api/renders", {**RECIPE, "unit": 30, "steps": 2000}).body
    cancelled = call(service, "DELETE /api/renders/:id", path={"id": view["id"]})
    assert cancelled.status == 200 and cancelled.body["status"] == "cancelled"
    again = call(service, "DELETE /api/renders/:id", path={"id": view["id"]})
    assert again.status == 409 and "already cancelled" in again.body["error"]


def test_a_full_queue_answers_503_with_retry_after(registry, hed, tmp_path):
    idle_queue = RenderQueue(tmp_path / "renders", registry.load, devices=["/CPU:0"], max_pending=1)
    service = RenderService(registry, idle_queue)  # not started: nothing leaves the queue
    assert call(service, "POST /api/renders", RECIPE).status == 202
    response = call(service, "POST /api/renders", {**RECIPE, "unit": 6})
    assert response.status == 503
    assert "queue is full" in response.body["error"]
    info = json.loads(response.info())
    assert int(info["headers"]["Retry-After"]) >= 1
    assert info["headers"]["Content-Type"].startswith("application/json")


def test_an_unavailable_model_is_503_with_its_reason(service, registry):
    if registry.availability("inceptionv3").available:
        pytest.skip("ImageNet weights can be had here")
    response = call(service, "POST /api/renders", {**RECIPE, "model": "inceptionv3"})
    assert response.status == 503
    assert "not available" in response.body["error"] and "vgg16-hed" in response.body["error"]


def test_status_reports_queue_workers_and_cache(service):
    body = call(service, "GET /api/status").body
    assert body["workers_alive"] is True
    assert {"queued", "running", "cache_entries", "workers", "models_loaded"} <= set(body)
    assert body["backend"] == keras.backend.backend()  # the Keras backend the renders run on


def test_a_bug_in_an_endpoint_is_a_json_500_not_an_exception(service, monkeypatch):
    def broken(request):
        raise RuntimeError("boom")

    monkeypatch.setitem(service.routes, "GET /api/status", broken)
    response = call(service, "GET /api/status")
    assert response.status == 500 and "boom" in response.body["error"]
    assert call(service, "GET /api/nothing").status == 404


def test_response_info_is_what_a_response_info_cell_prints():
    info = json.loads(Response(202, {"id": "x"}, {"Location": "/api/renders/x"}).info())
    assert info["status"] == 202
    assert info["headers"]["Location"] == "/api/renders/x"
    assert info["headers"]["Cache-Control"] == "no-store"


def test_worker_thread_output_is_kept_off_stdout(monkeypatch, capsys):
    import io
    import sys
    import threading

    from wga.quiet import keep_worker_output_off_stdout

    response_body = io.StringIO()
    monkeypatch.setattr(sys, "stdout", response_body)
    keep_worker_output_off_stdout()
    keep_worker_output_off_stdout()  # idempotent
    worker = threading.Thread(target=print, args=("progress bar",), name="wga-render-0")
    worker.start()
    worker.join()
    print('{"ok": true}')
    assert response_body.getvalue() == '{"ok": true}\n'
    assert "progress bar" in capsys.readouterr().err
