"""Bulk rendering: every unit of a layer to PNG files, resumable, in-process or on a Ray cluster.

``python -m wga render --units all`` comes here. The units are cut into tasks of ``batch`` recipes
(one :class:`~wga.vis.render.BatchRender` each, the same cut whatever runs them, so a Ray run and
a local run compute every image in the same batch and write the same bytes). Workers — one in
this process, or one Ray actor per GPU / CPU slot — load the model once and keep its compiled
steps (the engine caches them per loaded model); they send images back and the driver writes:

* ``OUT/<layer>-<unit>.png`` with the recipe in its text chunks (what ``render`` always wrote);
* the same image into a render store (:class:`wga.vis.store.RenderStore`: by default the
  server's render cache folder) under its render id, so the explorer shows bulk renders at once.

Resumable: a unit whose PNG in ``OUT`` already carries this recipe and these weights is skipped;
one the store already holds is copied from there instead of rendered again.

The store is opened as a plain :class:`~wga.vis.store.RenderStore`, not as the server's
:class:`~wga.serve.cache.RenderCache`: the cache's start-up sweep (temporary files, unfinished
jobs) would race a server running on the same folder. A running server finds the entries on
lookup (``POST /api/renders`` answers 200 at once) and indexes them at its next start.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wga.atomic import atomic_path
from wga.errors import InvalidInput
from wga.executors import Executor, WorkerSpec
from wga.vis.recipe import Recipe, check_recipes, recipes_from_request
from wga.vis.store import RenderStore, png_matches, render_id
from wga.vis.vectors import VectorStore

if TYPE_CHECKING:
    from wga.models import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_BULK_BATCH = 16  # units per task: on a CPU larger batches are no faster per unit

Rendered = tuple[Recipe, np.ndarray, dict[str, Any]]


@dataclass(frozen=True)
class RenderTask:
    """Recipes of one batch key, with the direction vectors they name (by hash): a worker on
    another machine has no access to the driver's vector store."""

    recipes: tuple[Recipe, ...]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


class RendererWorker:
    """One renderer: the model loaded once, then any number of same-key recipe batches.

    Built inside each worker (a Ray actor) from picklable arguments: a model name (registry
    name, run name, or a ``.keras`` path every worker can read); in this process around the
    driver's loaded model. Directions that come with a task go into a vector store of the
    worker's own (a temporary folder).
    """

    def __init__(self, model: str | LoadedModel) -> None:
        from wga.models import default_registry

        self.loaded = default_registry().load(model) if isinstance(model, str) else model
        self._store_dir: tempfile.TemporaryDirectory[str] | None = None
        self._store: VectorStore | None = None

    def _vectors(self, task: RenderTask) -> VectorStore | None:
        if not task.vectors:
            return None
        if self._store is None:
            self._store_dir = tempfile.TemporaryDirectory(prefix="wga-vectors-")
            self._store = VectorStore(self._store_dir.name)
        for reference, values in task.vectors.items():
            if reference not in self._store and self._store.put(values) != reference:
                raise InvalidInput(f"direction {reference[:12]}… arrived changed")
        return self._store

    def __call__(self, task: RenderTask) -> list[Rendered]:
        from wga.vis.render import BatchRender

        batch = BatchRender(self.loaded, list(task.recipes), vectors=self._vectors(task))
        batch.run(batch.total_steps)
        images = batch.images()
        return [(recipe, images[i], batch.metadata(i)) for i, recipe in enumerate(batch.recipes)]


def renderer_spec(model: str, loaded: LoadedModel | None = None) -> WorkerSpec:
    """The :class:`WorkerSpec` of a renderer of ``model`` (also what atlas icons run on); with
    ``loaded``, the in-process worker renders on it (no second copy of the model)."""
    here = RendererWorker(loaded) if loaded is not None else None
    return WorkerSpec(RendererWorker, (model,), gpu=True, here=here)


def tasks(
    recipes: Sequence[Recipe], batch: int, vectors: VectorStore | None = None
) -> list[RenderTask]:
    """``recipes`` cut into same-batch-key tasks of at most ``batch``, in a fixed order (so any
    executor renders every image in the same batch), each with the directions it names."""
    from wga.vis.render import group_by_batch, max_batch_size

    out: list[RenderTask] = []
    for group in group_by_batch(recipes):
        step = max(1, min(int(batch), max_batch_size(group[0].size)))
        for i in range(0, len(group), step):
            chunk = tuple(group[i : i + step])
            references = {recipe.vector for recipe in chunk if recipe.vector is not None}
            if references:
                store = vectors if vectors is not None else VectorStore()
                out.append(RenderTask(chunk, {ref: store.get(ref) for ref in references}))
            else:
                out.append(RenderTask(chunk))
    return out


def render_batches(
    executor: Executor,
    model: str,
    recipes: Sequence[Recipe],
    *,
    batch: int = DEFAULT_BULK_BATCH,
    workers: int | None = None,
    vectors: VectorStore | None = None,
    loaded: LoadedModel | None = None,
) -> Iterator[list[Rendered]]:
    """Render ``recipes`` on ``executor``; yields each task's images as it finishes (any order).

    The seam for every caller that renders many recipes of one model (bulk render, atlas icons);
    directions are read from ``vectors`` (default: the shared store) and travel with the tasks.
    ``loaded``: the driver's copy of ``model``, which an in-process executor renders on.
    """
    work = tasks(recipes, batch, vectors)
    spec = renderer_spec(model, loaded)
    yield from executor.map_unordered(spec, work, workers=workers)


@dataclass
class BulkResult:
    """What a bulk render did: files in ``OUT`` by unit order, and how each was obtained."""

    files: list[Path] = field(default_factory=list)
    rendered: int = 0
    skipped: int = 0
    from_cache: int = 0
    seconds: float = 0.0

    @property
    def units_per_second(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else 0.0


def layer_recipes(
    loaded: LoadedModel, fields: dict[str, Any], units: Sequence[int] | None = None
) -> list[Recipe]:
    """Recipes for ``units`` (default: every unit) of ``fields["layer"]``, from request-style
    ``fields`` (:func:`wga.vis.recipe.recipes_from_request`), checked against the model."""
    info = loaded.layer(fields["layer"])  # NotFound with the closest names
    chosen = list(range(info.units)) if units is None else list(units)
    recipes = recipes_from_request(fields, chosen)
    check_recipes(recipes, loaded)
    return recipes


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as temp:
        shutil.copyfile(source, temp)


def _render(
    executor: Executor,
    loaded: LoadedModel,
    todo: Sequence[Recipe],
    save: Callable[[Recipe, np.ndarray, dict[str, Any]], None],
    *,
    batch: int,
    workers: int | None,
    progress: bool,
    vectors: VectorStore | None,
) -> float:
    """Render ``todo`` on ``executor``, handing every image to ``save`` as its task finishes;
    the seconds it took."""
    from tqdm.auto import tqdm

    if not todo:
        return 0.0
    started = time.monotonic()
    model, desc = todo[0].model, f"{todo[0].layer} on {executor.name}"
    with tqdm(total=len(todo), unit="unit", disable=not progress, desc=desc) as bar:
        options = {"batch": batch, "workers": workers, "vectors": vectors, "loaded": loaded}
        for finished in render_batches(executor, model, todo, **options):
            for recipe, image, metadata in finished:
                save(recipe, image, metadata)
            bar.update(len(finished))
    return time.monotonic() - started


def bulk_render(
    executor: Executor,
    loaded: LoadedModel,
    recipes: Sequence[Recipe],
    out_dir: str | Path,
    *,
    file_name: Callable[[Recipe], str],
    store: RenderStore | None = None,
    batch: int = DEFAULT_BULK_BATCH,
    workers: int | None = None,
    progress: bool = False,
    vectors: VectorStore | None = None,
) -> BulkResult:
    """Render what is missing of ``recipes`` into ``out_dir`` (and ``store``); see the module
    docstring. ``loaded`` is the driver's copy of the model: its fingerprint names the weights
    in ids and metadata, and an in-process executor renders on it (remote workers load the model
    by ``recipes[0].model`` themselves)."""
    from wga.vis.png import save_png

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint = loaded.fingerprint
    result = BulkResult(files=[folder / file_name(recipe) for recipe in recipes])
    todo: list[Recipe] = []
    for recipe, path in zip(recipes, result.files, strict=True):
        if path.exists() and png_matches(path, recipe, fingerprint):
            result.skipped += 1
            continue
        cached = store.finished_png(render_id(recipe, fingerprint)) if store else None
        if cached is not None:
            _copy(cached, path)
            result.from_cache += 1
            continue
        todo.append(recipe)
    started = time.time()

    def save(recipe: Recipe, image: np.ndarray, metadata: dict[str, Any]) -> None:
        save_png(folder / file_name(recipe), image, metadata)
        if store is not None:
            store.add(recipe, fingerprint, image, metadata, started=started)
        result.rendered += 1

    options = {"batch": batch, "workers": workers, "progress": progress, "vectors": vectors}
    result.seconds = _render(executor, loaded, todo, save, **options)
    return result


def store_render(
    executor: Executor,
    loaded: LoadedModel,
    recipes: Sequence[Recipe],
    store: RenderStore,
    *,
    batch: int = DEFAULT_BULK_BATCH,
    workers: int | None = None,
    progress: bool = False,
    vectors: VectorStore | None = None,
) -> BulkResult:
    """Render what ``store`` lacks of ``recipes`` into it, each render id once (an atlas's
    icons); ``files`` are the store's PNGs of ``recipes``, in order."""
    fingerprint = loaded.fingerprint
    ids = [render_id(recipe, fingerprint) for recipe in recipes]
    result = BulkResult(files=[store.png_path(render) for render in ids])
    todo: dict[str, Recipe] = {}
    for recipe, render in zip(recipes, ids, strict=True):
        if render in todo:
            continue
        if store.lookup(render) is not None:
            result.skipped += 1
            continue
        todo[render] = recipe
    started = time.time()

    def save(recipe: Recipe, image: np.ndarray, metadata: dict[str, Any]) -> None:
        store.add(recipe, fingerprint, image, metadata, started=started)
        result.rendered += 1

    options = {"batch": batch, "workers": workers, "progress": progress, "vectors": vectors}
    result.seconds = _render(executor, loaded, list(todo.values()), save, **options)
    return result
