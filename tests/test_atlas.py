"""The activation atlas end to end on a tiny synthetic corpus with vgg16-hed.

One probe index and one atlas (3 × 3 grid, 64 px icons, few steps) are built per module and
shared; the proofs of issue 14 read them: the same seed gives the same layout and atlas.json,
cell counts plus dropped vectors equal the sampled vectors, a one-hot direction reproduces the
channel (and neuron) objective's image, and each icon activates its own direction more than the
other cells' directions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from keras import ops
from PIL import Image

from wga.cli import main as cli_main
from wga.corpus.atlas import AtlasOptions, build_atlas, executor_renderer, icon_recipe
from wga.corpus.atlas_sample import sample_layer
from wga.corpus.corpus import open_corpus
from wga.corpus.probe import run_probe
from wga.data.synthetic import make_synthetic_dataset
from wga.executors.local import LocalExecutor
from wga.models import preprocess
from wga.serve.atlases import queue_renderer
from wga.serve.queue import RenderQueue
from wga.vis.direction import cosine_weighted_dot
from wga.vis.features import feature_graph
from wga.vis.png import read_png_metadata
from wga.vis.render import BatchRender, Recipe, render
from wga.vis.store import RenderStore
from wga.vis.vectors import VectorStore

pytestmark = [pytest.mark.slow, pytest.mark.backends]

LAYER = "block2_conv2"  # 128 channels: the 192 samples whiten it with a full-rank estimate
ICON = 64
STEPS = 48
GRID = 2
PER_IMAGE = 8
OPTIONS = dict(layer=LAYER, grid=GRID, icon=ICON, steps=STEPS, seed=2, per_image=PER_IMAGE)


@pytest.fixture(scope="module")
def index(hed, tmp_path_factory):
    corpus_dir = make_synthetic_dataset(
        tmp_path_factory.mktemp("corpus"), per_class={"train": 8}, side=64, seed=1
    )
    out = tmp_path_factory.mktemp("probe") / "hed"
    return run_probe(hed, open_corpus(corpus_dir), [LAYER], out, k=2, batch_size=8, progress=False)


@pytest.fixture(scope="module")
def atlas_dir(registry, hed, index, tmp_path_factory) -> Path:
    """The atlas, built through the CLI (its registry is the session's: vgg16-hed loads once)."""
    out = tmp_path_factory.mktemp("atlas") / "hed-b2"
    args = ["atlas", "--index", str(index.root), "--layer", LAYER, "--grid", str(GRID)]
    args += ["--icon", str(ICON), "--steps", str(STEPS), "--seed", "2"]
    args += ["--per-image", str(PER_IMAGE), "--out", str(out), "--no-progress"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("wga.models.registry._default_registry", registry)
        assert cli_main(args) == 0
    return out


@pytest.fixture(scope="module")
def atlas(atlas_dir) -> dict:
    return json.loads((atlas_dir / "atlas.json").read_text())


def test_atlas_files_have_the_design_fields(atlas_dir, atlas):
    assert atlas["layer"] == LAYER and atlas["grid"] == GRID and atlas["cells"]
    picture = Image.open(atlas_dir / "atlas.png")
    assert picture.size == (GRID * ICON, GRID * ICON)
    for cell in atlas["cells"]:
        assert {"i", "j", "count", "icon", "members"} <= set(cell)
        assert cell["count"] >= 6
        icon = atlas_dir / cell["icon"]
        assert Image.open(icon).size == (ICON, ICON)
        recipe = read_png_metadata(icon)
        assert recipe["objective"] == "direction" and recipe["vector"] == cell["direction"]
        for file, y, x in cell["members"]:
            assert (Path(atlas["corpus"]) / file).is_file()
            assert 0 <= y < 200 and 0 <= x < 200  # original pixels of ≤ 96 px synthetic images
        # the icon is where the tiling says
        tile = np.asarray(picture)[cell["i"] * ICON : (cell["i"] + 1) * ICON][
            :, cell["j"] * ICON : (cell["j"] + 1) * ICON
        ]
        np.testing.assert_array_equal(tile, np.asarray(Image.open(icon).convert("RGB")))


def test_cell_counts_plus_dropped_equal_the_sampled_vectors(atlas):
    for level in atlas["levels"].values():
        counted = sum(cell["count"] for cell in level["cells"])
        assert counted + level["dropped"] == atlas["samples"]["count"]
    assert atlas["samples"]["count"] == PER_IMAGE * 24  # 8 positions of each of the 24 images


def test_same_seed_same_layout_and_atlas_json(hed, index, atlas_dir, atlas, tmp_path):
    # a rerun in the same folder reuses the layout and every icon: nothing is rendered
    again = build_atlas(
        index, hed, AtlasOptions(**OPTIONS), atlas_dir, renderer=_cached(atlas_dir), progress=False
    )
    assert again == atlas
    # from scratch in a new folder, by the default renderer (an in-process executor): the same
    # layout, the same atlas.json (icons under the same content ids), the same pictures
    options = AtlasOptions(**OPTIONS)
    fresh = build_atlas(index, hed, options, tmp_path, progress=False)
    np.testing.assert_array_equal(
        np.load(tmp_path / "layout.npz")["layout"], np.load(atlas_dir / "layout.npz")["layout"]
    )
    assert fresh == atlas
    for cell in atlas["cells"]:
        ours = np.asarray(Image.open(tmp_path / cell["icon"]))
        np.testing.assert_array_equal(ours, np.asarray(Image.open(atlas_dir / cell["icon"])))
    other = sample_layer(index, hed, LAYER, per_image=PER_IMAGE, seed=6, progress=False)
    same = sample_layer(index, hed, LAYER, per_image=PER_IMAGE, seed=5, progress=False)
    assert not np.array_equal(other.where, same.where)


def _cached(folder: Path):
    """A renderer that only finds icons already in the folder (fails if one is missing)."""
    from wga.vis.store import render_id

    def renderer(recipes):
        paths = []
        for recipe in recipes:
            name = f"icons/{render_id(recipe, recipe_weights(folder))}.png"
            assert (folder / name).is_file(), f"{name} should have been reused"
            paths.append(name)
        return paths

    return renderer


def recipe_weights(folder: Path) -> str:
    return json.loads((folder / "atlas.json").read_text())["model_fingerprint"]


def test_the_servers_queue_and_an_executor_cutting_the_same_batches_render_the_same_icons(
    hed, tmp_path
):
    """Three icons in batches of two: the server's queue handed down as the renderer
    (:func:`wga.serve.atlases.queue_renderer`) and the in-process executor write the same ids,
    records and bytes into the atlas's render store."""
    store = VectorStore(tmp_path / "executor" / "vectors")
    rng = np.random.default_rng(1)
    options = AtlasOptions(layer=LAYER, icon=64, steps=3)
    recipes = [icon_recipe("vgg16-hed", options, store.put(rng.normal(size=128))) for _ in range(3)]
    by_executor = executor_renderer(LocalExecutor(), hed, tmp_path / "executor", batch=2)
    served = VectorStore(tmp_path / "server-vectors")  # the server's own store
    queue = RenderQueue(
        tmp_path / "renders",
        loader=lambda name: hed,
        batch_factory=lambda model, group: BatchRender(model, group, vectors=served),
        max_batch=2,
    ).start()
    try:
        VectorStore(tmp_path / "queued" / "vectors").import_from(store)
        by_queue = queue_renderer(queue, hed, tmp_path / "queued", served, progress=False)
        paths = by_queue(recipes)
    finally:
        queue.stop()
    assert by_executor(recipes) == paths and all(paths)
    for path in paths:
        assert (tmp_path / "queued" / path).read_bytes() == (
            tmp_path / "executor" / path
        ).read_bytes()
        icons = RenderStore(tmp_path / "queued" / "icons")
        assert icons.lookup(Path(path).stem)["params"]["vector"] in served


def test_one_hot_direction_reproduces_the_channel_and_neuron_images(hed, tmp_path, monkeypatch):
    store = VectorStore(tmp_path / "vectors")
    monkeypatch.setenv("WGA_VECTORS_DIR", str(store.directory))
    unit = 3
    one_hot = store.put(np.eye(128, dtype="float32")[unit])

    def recipe(objective: str, **extra) -> Recipe:
        return Recipe(
            "vgg16-hed", LAYER, unit, size=ICON, steps=8, seed=2, objective=objective, **extra
        )

    channel, neuron = render(hed, [recipe("channel")])[0], render(hed, [recipe("neuron")])[0]
    as_map = render(hed, [recipe("direction_map", vector=one_hot, cos_power=0.0)])[0]
    at_centre = render(hed, [recipe("direction", vector=one_hot, cos_power=0.0)])[0]
    assert np.abs(as_map.astype(int) - channel.astype(int)).max() <= 2
    assert np.abs(at_centre.astype(int) - neuron.astype(int)).max() <= 2
    assert np.abs(channel.astype(int) - neuron.astype(int)).mean() > 5  # they do differ


def test_each_icon_activates_its_own_direction_more_than_the_others(hed, atlas_dir, atlas):
    """Rendered under jitter, an icon shows its direction near the centre, not exactly on it:
    read each direction's strongest response in the icon (as the probe reads a unit's)."""
    store = VectorStore(atlas_dir / "vectors")
    cells = [cell for cell in atlas["cells"] if cell["icon"]]
    assert len(cells) >= 2
    directions = ops.convert_to_tensor(store.stack([cell["direction"] for cell in cells]))
    images = np.stack([np.asarray(Image.open(atlas_dir / c["icon"]).convert("RGB")) for c in cells])
    inputs = preprocess(
        ops.convert_to_tensor(images.astype(np.float32) / 255.0), hed.spec.preprocessing
    )
    features = feature_graph(hed, LAYER).model(inputs)  # (icons, H, W, C)
    per_position = cosine_weighted_dot(features[:, None], directions[None, :, None, None], 2.0)
    matrix = ops.convert_to_numpy(
        ops.max(per_position, axis=(2, 3))
    )  # row: icon i; column: direction j
    off = np.eye(len(cells), dtype=bool)
    own = np.diag(matrix)
    assert np.all(own > np.where(off, -np.inf, matrix).max(axis=0)), matrix  # per direction
    assert np.all(own > np.where(off, -np.inf, matrix).max(axis=1)), matrix  # per icon


# -- the REST API over the same atlas -------------------------------------------------------------


def call(service, route: str, body=None, path=None):
    request = {"body": body if body is not None else "", "args": {}, "path": path or {}}
    request["headers"] = {}
    response = service.handle(route, json.dumps(request))
    json.loads(response.body_json())  # always valid JSON
    return response


@pytest.fixture(scope="module")
def api(registry, hed, index, atlas_dir, tmp_path_factory):
    """A backend over the atlas's folder and the probe's, with its own cache and vector store."""
    from wga.serve.api import RenderService
    from wga.serve.atlases import AtlasService
    from wga.serve.loading import ModelLoader
    from wga.serve.probes import ProbeService
    from wga.serve.queue import RenderQueue

    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WGA_VECTORS_DIR", str(cache / "vectors"))  # the queue's renders read it
        queue = RenderQueue(cache / "renders", registry.load, devices=["/CPU:0"]).start()
        service = RenderService(registry, queue)
        probes = ProbeService(cache, ModelLoader(registry), index.root.parent)
        service.routes.update(probes.routes)
        atlases = AtlasService(queue, service.loader, service.vectors, atlas_dir.parent, probes)
        service.routes.update(atlases.routes)
        yield service
        queue.stop()


def test_api_lists_the_atlas_and_serves_its_levels_with_the_cli_icons(api, atlas_dir, atlas):
    listed = call(api, "GET /api/atlases").body["atlases"]
    assert [a["name"] for a in listed] == [atlas_dir.name]
    assert listed[0]["layer"] == LAYER and listed[0]["cells"] == len(atlas["cells"])
    about = call(api, "GET /api/atlases/:atlas", path={"atlas": atlas_dir.name}).body
    assert str(atlas_dir.parent) not in json.dumps([listed, about])  # names, not server paths
    assert [level["grid"] for level in about["levels"]] == sorted(int(g) for g in atlas["levels"])
    path = {"atlas": atlas_dir.name, "grid": str(GRID)}
    level = call(api, "GET /api/atlases/:atlas/levels/:grid", path=path).body
    cached = api.queue.cache.directory
    for cell, original in zip(level["cells"], atlas["cells"], strict=True):
        assert cell["icon"] == Path(original["icon"]).stem  # the CLI's id: nothing re-rendered
        assert cell["icon_url"].endswith(f"{cell['icon']}.png")
        assert (cached / f"{cell['icon']}.png").is_file()
    again = call(api, "POST /api/atlases/:atlas/levels/:grid/icons", body={}, path=path)
    assert again.status == 200 and {r["status"] for r in again.body["renders"]} == {"done"}
    cell = level["cells"][0]
    one = call(
        api,
        "GET /api/atlases/:atlas/levels/:grid/cells/:cell",
        path={**path, "cell": f"{cell['i']}-{cell['j']}"},
    ).body
    assert one["count"] == cell["count"] and one["members"]
    for member in one["members"]:
        for key in ("image_url", "crop_url"):
            assert member[key].startswith("/public/probes/"), member
    for route, bad in (
        ("GET /api/atlases/:atlas", {"atlas": "../etc"}),
        ("GET /api/atlases/:atlas/levels/:grid", {"atlas": atlas_dir.name, "grid": "7"}),
        ("GET /api/atlases/:atlas/levels/:grid/cells/:cell", {**path, "cell": "9-9"}),
    ):
        assert call(api, route, path=bad).status == 404


def test_api_renders_a_direction_sent_inline_or_by_hash(api):
    direction = np.random.default_rng(0).uniform(0, 1, 128).round(4).tolist()
    body = {"model": "vgg16-hed", "layer": LAYER, "unit": 0, "size": 64, "steps": 4}
    body["objective"] = "direction"
    first = call(api, "POST /api/renders", body={**body, "vector": direction})
    assert first.status == 202, first.body
    reference = first.body["params"]["vector"]
    assert len(reference) == 64 and reference in VectorStore()
    assert api.queue.wait(first.body["id"], timeout=300)["status"] == "done"
    by_hash = call(api, "POST /api/renders", body={**body, "vector": reference})
    assert by_hash.status == 200 and by_hash.body["id"] == first.body["id"]
    short = call(api, "POST /api/renders", body={**body, "vector": direction[:-1]})
    assert short.status == 400 and "128 channels" in short.body["error"]
    unknown = call(api, "POST /api/renders", body={**body, "vector": "0" * 64})
    assert unknown.status == 404 and "inline" in unknown.body["error"]
    for bad in ({**body, "vector": 5}, {**body, "vector": [1, "a"]}, {**body, "cos_power": -1}):
        assert call(api, "POST /api/renders", body=bad).status == 400
