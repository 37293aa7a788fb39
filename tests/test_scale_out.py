"""Ray as an executor: the same PNG bytes and the same probe index as in-process, a killed
worker survived, and a clear error without the extra.

All Ray tests share the session's one local cluster (``ray_cluster`` in conftest.py); renders use
vgg16-hed at 64 px with a few steps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from wga.cli import main
from wga.corpus.atlas import (
    VECTORS_DIR,
    AtlasOptions,
    executor_renderer,
    icon_recipe,
)
from wga.corpus.corpus import open_corpus
from wga.corpus.index import ProbeIndex
from wga.corpus.probe import run_probe
from wga.corpus.receptive import DEFAULT_BORDER_MARGIN
from wga.data.synthetic import make_synthetic_dataset
from wga.executors import RAY_EXTRA_MESSAGE
from wga.executors.local import LocalExecutor
from wga.executors.ray_cluster import ACTOR_PREFIX, RayExecutor
from wga.serve.atlases import queue_renderer
from wga.serve.cache import RenderCache
from wga.serve.queue import RenderQueue
from wga.vis.bulk import bulk_render, layer_recipes
from wga.vis.png import read_png_metadata
from wga.vis.recipe import recipe_file_name
from wga.vis.render import BatchRender
from wga.vis.store import RenderStore, render_id
from wga.vis.vectors import VectorStore

LAYER = "block2_conv1"
UNITS = list(range(8))
RECIPE_ARGS = {"size": 64, "steps": 6, "seed": 3}
BATCH = 1  # 8 tasks: the run outlasts the first PNG by far


def _bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.png"))}


def _file_name(recipe) -> str:
    return recipe_file_name(recipe)


@pytest.fixture(scope="module")
def recipes(hed):
    return layer_recipes(hed, {"model": "vgg16-hed", "layer": LAYER, **RECIPE_ARGS}, UNITS)


@pytest.fixture(scope="module")
def local_pngs(hed, recipes, tmp_path_factory):
    """The reference: the same recipes rendered in this process."""
    out = tmp_path_factory.mktemp("local")
    result = bulk_render(
        LocalExecutor(), hed, recipes, out, file_name=_file_name, store=None, batch=BATCH
    )
    assert result.rendered == len(UNITS)
    return _bytes(out)


@pytest.mark.parametrize("command", ["render", "probe"])
def test_without_ray_the_flag_stops_with_one_line_naming_the_extra(command, tmp_path):
    make_synthetic_dataset(tmp_path / "corpus", per_class={"train": 1})
    args = {
        "render": ["render", "--model", "vgg16-hed", "--layer", LAYER, "--units", "all"],
        "probe": ["probe", "--corpus", str(tmp_path / "corpus"), "--layers", LAYER],
    }[command]
    args += ["--ray", "local", "--out", str(tmp_path / "out")]
    code = (
        f"import sys; sys.modules['ray'] = None\nfrom wga.cli import main\nsys.exit(main({args!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {RAY_EXTRA_MESSAGE}"]
    assert "wga[ray]" in lines[0]
    assert not (tmp_path / "out").exists()


class ActorKiller(threading.Thread):
    """SIGKILLs one renderer actor as soon as the first PNG of a run lands (a lost worker)."""

    def __init__(self, ray, folder: Path) -> None:
        super().__init__(daemon=True)
        self.ray, self.folder = ray, folder
        self.killed: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and not any(self.folder.glob("*.png")):
            time.sleep(0.02)
        names = [
            actor["name"]
            for actor in self.ray.util.list_named_actors(all_namespaces=True)
            if actor["name"].startswith(ACTOR_PREFIX)
        ]
        if self.stop.is_set() or not names:
            return
        pid = self.ray.get(self.ray.get_actor(names[0]).pid.remote(), timeout=60)
        os.kill(pid, signal.SIGKILL)
        self.killed = pid


@pytest.mark.slow
def test_bulk_render_on_ray_survives_a_killed_worker_and_writes_the_local_bytes(
    ray_cluster, hed, recipes, local_pngs, tmp_path
):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["render", "--model", "vgg16-hed", "--layer", LAYER, "--units", "0-7"]
    argv += ["--size", "64", "--steps", "6", "--seed", "3", "--batch", str(BATCH)]
    argv += ["--ray", "auto", "--workers", "2", "--cache", str(cache), "--out", str(out)]
    killer = ActorKiller(ray_cluster, out)
    killer.start()
    try:
        assert main([*argv, "--no-progress"]) == 0
    finally:
        killer.stop.set()
        killer.join(timeout=60)
    assert killer.killed, "no worker was killed mid-run"
    assert _bytes(out) == local_pngs  # every unit, the same bytes as in-process
    for recipe in recipes:
        render = render_id(recipe, hed.fingerprint)  # the id the server's queue computes
        assert (cache / f"{render}.png").read_bytes() == local_pngs[_file_name(recipe)]
        record = RenderCache(cache).lookup(render)  # as the server reads its cache
        assert record["status"] == "done" and record["params"] == recipe.as_dict()
    # resumable: a rerun renders nothing; a lost file is copied back from the cache
    (out / _file_name(recipes[0])).unlink()
    result = bulk_render(
        LocalExecutor(),
        hed,
        recipes,
        out,
        file_name=_file_name,
        store=RenderStore(cache),
        batch=BATCH,
    )
    assert (result.rendered, result.skipped, result.from_cache) == (0, len(UNITS) - 1, 1)
    assert _bytes(out) == local_pngs
    assert read_png_metadata(out / _file_name(recipes[0]))["unit"] == recipes[0].unit


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_synthetic_dataset(root, per_class={"train": 4}, side=80)  # 12 images, mixed aspects
    (root / "train" / "broken.jpg").write_bytes(b"not an image")  # skipped and listed
    return open_corpus(root)


def _same_index(a: ProbeIndex, b: ProbeIndex, layers: list[str]) -> None:
    assert a.images() == b.images()
    assert np.array_equal(a.sizes(), b.sizes())
    assert a.description["skipped"] == b.description["skipped"]
    for layer in layers:
        assert a.top(layer).equal(b.top(layer))  # values, image ids, positions: bit for bit
        negatives = a.top(layer, negatives=True)
        assert negatives is not None and negatives.equal(b.top(layer, negatives=True))
        assert np.array_equal(a.maxima(layer), b.maxima(layer), equal_nan=True)  # NaN: skipped
        assert np.array_equal(a.style(layer), b.style(layer), equal_nan=True)
        assert a.histogram(layer, 0) == b.histogram(layer, 0)


@pytest.mark.slow
def test_probe_on_ray_data_writes_the_local_index(ray_cluster, hed, small_corpus, tmp_path):
    layers = ["block1_conv2", "block2_conv1"]
    local = run_probe(
        hed,
        small_corpus,
        layers,
        tmp_path / "local",
        k=4,
        batch_size=4,
        progress=False,
        border_margin=DEFAULT_BORDER_MARGIN,  # the CLI's default
    )
    argv = ["probe", "--model", "vgg16-hed", "--corpus", str(small_corpus.root)]
    argv += ["--layers", ",".join(layers), "--top", "4", "--batch", "4", "--no-progress"]
    assert main([*argv, "--ray", "auto", "--workers", "2", "--out", str(tmp_path / "ray")]) == 0
    on_ray = ProbeIndex.open(tmp_path / "ray")
    assert on_ray.description["complete"] and len(on_ray.description["skipped"]) == 1
    _same_index(local, on_ray, layers)


@pytest.mark.slow
def test_atlas_icons_on_ray_equal_the_queue_rendered_icons(ray_cluster, hed, tmp_path):
    """Directions travel with the tasks; icons land under the queue's ids, with its bytes (the
    server's queue handed down as the renderer, :func:`wga.serve.atlases.queue_renderer`)."""
    local_dir, ray_dir = tmp_path / "local", tmp_path / "ray"
    store = VectorStore(ray_dir / VECTORS_DIR)  # the workers never see this folder
    rng = np.random.default_rng(0)
    options = AtlasOptions(layer=LAYER, icon=64, steps=4)
    channels = hed.layer(LAYER).units
    recipes = [
        icon_recipe("vgg16-hed", options, store.put(rng.normal(size=channels))) for _ in range(2)
    ]
    queue = RenderQueue(
        tmp_path / "renders",
        loader=lambda name: hed,
        batch_factory=lambda model, group: BatchRender(model, group, vectors=store),
    ).start()
    try:
        local = queue_renderer(queue, hed, local_dir, store, progress=False)(recipes)
    finally:
        queue.stop()
    on_ray = executor_renderer(RayExecutor("auto"), hed, ray_dir, workers=1, progress=False)
    assert on_ray(recipes) == local and all(local)
    for path in local:
        assert (ray_dir / path).read_bytes() == (local_dir / path).read_bytes()
