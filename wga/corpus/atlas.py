"""An activation atlas of one layer over a probed corpus: sample → layout → cells → icons → files.

The pipeline (Carter et al., 2019, for the user's own corpus and model):

1. **sample** the layer at random positions of every artwork (:mod:`wga.corpus.atlas_sample`,
   stored inside the probe index);
2. **lay out** the vectors with UMAP and bin them into grids of 20, 40 and 80 cells a side
   (:mod:`wga.corpus.atlas_layout`);
3. give every kept cell a **direction**: its mean activation, whitened by the layer's inverse
   activation correlation, stored by hash (:mod:`wga.vis.vectors`);
4. render the icons of the chosen grid with the ``direction`` objective (dot × cos², at the
   centre position) **through a renderer handed in** — by default on an executor
   (:mod:`wga.executors`: this process, or a Ray cluster), into the atlas's render store
   (:mod:`wga.vis.store`: batched, content-addressed, so a rerun finds its icons done); the
   server hands down its render queue instead; the finer levels' icons are rendered on demand,
   by the page;
5. write ``atlas.json`` (atomic) and ``atlas.png``.

Output folder::

    DIR/atlas.json      the atlas: parameters, and per level the cells (i, j, count, icon,
                        members [file, y, x], member_ids [image id, grid y, grid x] in the
                        probe index, direction)
    DIR/atlas.png       the chosen grid's icons, tiled
    DIR/layout.npz      the UMAP layout of the sample (reused by a rerun with the same sample/seed)
    DIR/vectors/        the cells' directions, <sha256>.npy
    DIR/icons/          the icons: a render store (<render id>.png with its recipe, and its record)

``atlas.json`` holds nothing that changes between runs (no time stamps), so the same seed gives
the same file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wga.atomic import atomic_path, write_json_atomic
from wga.corpus.atlas_layout import (
    GRIDS,
    MARGIN,
    MIN_MEMBERS,
    PERCENTILES,
    UMAP_METRIC,
    UMAP_MIN_DIST,
    UMAP_NEIGHBORS,
    Level,
    embed,
    grid_level,
    normalise,
)
from wga.corpus.atlas_sample import CAP, PER_IMAGE, Sample, sample_layer
from wga.corpus.index import Example, ProbeIndex, original_position
from wga.corpus.probe import model_reference
from wga.errors import InvalidInput
from wga.vis.backends import backend_name
from wga.vis.objective_table import COSINE_POWER
from wga.vis.presets import DEFAULT_PRESET
from wga.vis.store import RenderStore
from wga.vis.vectors import VectorStore, unit, whiten, whitening_matrix

if TYPE_CHECKING:
    from wga.executors import Executor
    from wga.models import LoadedModel

ATLAS_VERSION = 1
ATLAS_FILE = "atlas.json"
ATLAS_IMAGE = "atlas.png"
LAYOUT_FILE = "layout.npz"
ICONS_DIR = "icons"
VECTORS_DIR = "vectors"
ICON_SIZE = 80  # the article's icons: 80–96 px
ICON_STEPS = 128  # the article: 128–1024 steps; 128 keeps a CPU atlas of 400 icons in minutes
ICON_PRIORITY = -1  # below a person's own renders: the page stays responsive
MAX_GRID = 200


@dataclass(frozen=True)
class AtlasOptions:
    """Everything that decides an atlas (with the probe index and the model's weights)."""

    layer: str
    grid: int = GRIDS[0]
    icon: int = ICON_SIZE
    steps: int = ICON_STEPS
    seed: int = 0
    preset: str | None = None  # None: the render default
    per_image: int = PER_IMAGE
    cap: int = CAP
    whiten: bool = True
    cos_power: float = COSINE_POWER
    levels: tuple[int, ...] = field(default=GRIDS)

    def __post_init__(self) -> None:
        if not 1 <= self.grid <= MAX_GRID:
            raise InvalidInput(f"--grid must be 1 … {MAX_GRID} cells a side, got {self.grid}")
        if self.steps < 1:
            raise InvalidInput(f"--steps must be at least 1, got {self.steps}")

    @property
    def grids(self) -> list[int]:
        """Every level the atlas keeps: the standard ones and the chosen grid."""
        return sorted({*self.levels, self.grid})


# -- layout ------------------------------------------------------------------------------------


def _layout_key(sample: Sample, seed: int) -> str:
    return json.dumps(
        {
            "sample": sample.fingerprint(),
            "seed": int(seed),
            "umap": [UMAP_NEIGHBORS, UMAP_MIN_DIST, UMAP_METRIC],
        },
        sort_keys=True,
    )


def layout_for(sample: Sample, seed: int, out: Path) -> np.ndarray:
    """The sample's raw UMAP layout, from ``out/layout.npz`` when it was made for this sample
    and seed, else computed and stored there."""
    path = out / LAYOUT_FILE
    key = _layout_key(sample, seed)
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) == key and len(stored["layout"]) == len(sample.vectors):
                return stored["layout"]
    except (OSError, ValueError, KeyError):
        pass
    layout = embed(np.asarray(sample.vectors), seed)
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        np.savez(handle, layout=layout, key=np.array(key))
    return layout


# -- directions and icons ------------------------------------------------------------------------


def cell_directions(
    levels: dict[int, Level], sample: Sample, store: VectorStore, whitened: bool
) -> dict[int, list[str | None]]:
    """Per level and cell, the hash of the direction its icon maximises (``None`` for a cell
    whose mean is zero: nothing to point at)."""
    matrix = whitening_matrix(np.asarray(sample.vectors)) if whitened else None
    out: dict[int, list[str | None]] = {}
    for grid, level in levels.items():
        hashes: list[str | None] = []
        for cell in level.cells:
            if not np.any(cell.mean):
                hashes.append(None)
                continue
            vector = whiten(cell.mean, matrix) if matrix is not None else unit(cell.mean)
            hashes.append(store.put(vector))
        out[grid] = hashes
    return out


def icon_recipe(model: str, options: AtlasOptions, direction: str) -> Any:
    """The render recipe of one icon: the direction objective at the centre position."""
    from wga.vis.recipe import Recipe

    extra = {} if options.preset is None else {"preset": options.preset}
    return Recipe(
        model=model,
        layer=options.layer,
        unit=0,
        size=options.icon,
        steps=options.steps,
        seed=options.seed,
        objective="direction",
        vector=direction,
        cos_power=float(options.cos_power),
        **extra,
    )


IconRenderer = Callable[[Sequence[Any]], list[str | None]]


def executor_renderer(
    executor: Executor,
    loaded: LoadedModel,
    folder: str | os.PathLike[str],
    *,
    workers: int | None = None,
    batch: int | None = None,
    progress: bool = True,
) -> IconRenderer:
    """Icons on an executor (in this process, or a Ray cluster with ``--ray``) into the atlas's
    render store ``folder/icons`` (``<render id>.png`` and its record), so a rerun, the page and
    any other executor all find them. Batches of ``batch`` recipes (default: as the render
    queue cuts them on this machine, :func:`wga.vis.budget.local_batch`, so the server's queue
    and every executor render the same bytes). The directions are read from ``folder/vectors``
    here and travel with the render tasks: workers need no shared disk.

    Returns each recipe's PNG path relative to ``folder``; a failing render stops the call (a
    rerun keeps every icon already done).
    """

    def render(recipes: Sequence[Any]) -> list[str | None]:
        from wga.vis.budget import local_batch
        from wga.vis.bulk import store_render

        if not recipes:
            return []
        result = store_render(
            executor,
            loaded,
            recipes,
            RenderStore(Path(folder) / ICONS_DIR),
            batch=batch or local_batch(int(recipes[0].size)),
            workers=workers,
            progress=progress,
            vectors=VectorStore(Path(folder) / VECTORS_DIR),
        )
        return [f"{ICONS_DIR}/{path.name}" for path in result.files]

    return render


# -- the atlas -----------------------------------------------------------------------------------


def _members(cell_members: Sequence[int], sample: Sample, files: list[str]) -> list[list[Any]]:
    rows = []
    for index in cell_members:
        image, _, _, y, x = (int(v) for v in sample.where[index])
        rows.append([files[image], y, x])
    return rows


def _level_json(
    level: Level,
    directions: list[str | None],
    icons: list[str | None] | None,
    sample: Sample,
    files: list[str],
) -> dict[str, Any]:
    cells = []
    for position, cell in enumerate(level.cells):
        cells.append(
            {
                "i": cell.i,
                "j": cell.j,
                "count": cell.count,
                "icon": icons[position] if icons is not None else None,
                "direction": directions[position],
                "members": _members(cell.members, sample, files),
                "member_ids": [
                    [int(sample.where[m][0]), int(sample.where[m][1]), int(sample.where[m][2])]
                    for m in cell.members
                ],
            }
        )
    return {"grid": level.grid, "cells": cells, "dropped": level.dropped}


def tile(out: Path, level: dict[str, Any], icon: int) -> np.ndarray:
    """The level's icons tiled on a white square (an empty cell stays white)."""
    from PIL import Image

    grid = int(level["grid"])
    canvas = np.full((grid * icon, grid * icon, 3), 255, dtype="uint8")
    for cell in level["cells"]:
        if not cell["icon"]:
            continue
        with Image.open(out / cell["icon"]) as image:
            pixels = np.asarray(image.convert("RGB").resize((icon, icon)))
        top, left = cell["i"] * icon, cell["j"] * icon
        canvas[top : top + icon, left : left + icon] = pixels
    return canvas


def build_atlas(
    index: ProbeIndex | str | os.PathLike[str],
    loaded: LoadedModel,
    options: AtlasOptions,
    out: str | os.PathLike[str],
    *,
    renderer: IconRenderer | None = None,
    executor: Executor | None = None,
    workers: int | None = None,
    progress: bool = True,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Build (or finish) the atlas in ``out``; returns the ``atlas.json`` document.

    The sampling pass runs on ``executor`` (default: this process; ``workers``: how many on Ray);
    ``renderer`` renders the icon recipes (default: :func:`executor_renderer` on the same
    executor, into ``out/icons``; the server hands down its render queue instead,
    :func:`wga.serve.atlases.queue_renderer`). ``timings`` (if given) receives the seconds spent
    sampling, laying out and rendering.
    """
    index = index if isinstance(index, ProbeIndex) else ProbeIndex.open(index)
    if index.description.get("model_fingerprint") not in (None, loaded.fingerprint):
        raise InvalidInput(
            f"the probe {index.root} was made with other weights than {loaded.name!r}: "
            "use the model it was made with, or probe the corpus again"
        )
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    clock = timings if timings is not None else {}
    started = time.perf_counter()
    sample = sample_layer(
        index,
        loaded,
        options.layer,
        per_image=options.per_image,
        cap=options.cap,
        seed=options.seed,
        executor=executor,
        workers=workers,
        progress=progress,
    )
    clock["sampling"] = time.perf_counter() - started
    started = time.perf_counter()
    unit_layout = normalise(layout_for(sample, options.seed, folder))
    vectors = np.asarray(sample.vectors)
    levels = {g: grid_level(unit_layout, vectors, sample.images, g) for g in options.grids}
    clock["layout"] = time.perf_counter() - started
    store = VectorStore(folder / VECTORS_DIR)
    directions = cell_directions(levels, sample, store, options.whiten)
    started = time.perf_counter()
    if renderer is None:
        from wga.executors.local import LocalExecutor

        executor = executor or LocalExecutor()
        renderer = executor_renderer(executor, loaded, folder, workers=workers, progress=progress)
    icons = _icons(renderer, model_reference(loaded), options, directions[options.grid])
    clock["icons"] = time.perf_counter() - started
    files = [image["file"] for image in index.images()]
    document = _describe(index, loaded, options, sample)
    document["levels"] = {
        str(grid): _level_json(
            level, directions[grid], icons if grid == options.grid else None, sample, files
        )
        for grid, level in levels.items()
    }
    chosen = document["levels"][str(options.grid)]
    document["cells"] = chosen["cells"]
    document["dropped"] = chosen["dropped"]
    _write(folder, document, tile(folder, chosen, options.icon))
    return document


def _icons(
    render: IconRenderer, model: str, options: AtlasOptions, directions: list[str | None]
) -> list[str | None]:
    """The icon file of every cell of the chosen grid (``None`` where there is no direction or
    the render failed), rendered in one call so that the renderer can batch them."""
    wanted = [(k, d) for k, d in enumerate(directions) if d is not None]
    rendered = render([icon_recipe(model, options, d) for _, d in wanted])
    icons: list[str | None] = [None] * len(directions)
    for (position, _), path in zip(wanted, rendered, strict=True):
        icons[position] = path
    return icons


def _describe(
    index: ProbeIndex, loaded: LoadedModel, options: AtlasOptions, sample: Sample
) -> dict[str, Any]:
    """The atlas's parameters: everything that decided it (no time stamps: the same seed gives
    the same file)."""
    return {
        "version": ATLAS_VERSION,
        "model": index.description.get("model", loaded.name),
        "model_fingerprint": loaded.fingerprint,
        "backend": backend_name(),
        "layer": options.layer,
        "probe": index.name,
        "index": str(index.root.resolve()),
        "corpus": index.description.get("corpus"),
        "seed": options.seed,
        "grid": options.grid,
        "grids": options.grids,
        "icon_size": options.icon,
        "steps": options.steps,
        "preset": options.preset or DEFAULT_PRESET,
        "objective": {
            "name": "direction",
            "cos_power": options.cos_power,
            "whiten": options.whiten,
        },
        "samples": {
            "count": len(sample.where),
            "per_image": options.per_image,
            "cap": options.cap,
            "images": len(np.unique(sample.images)),
            "channels": int(sample.vectors.shape[1]),
        },
        "layout": {
            "umap": {
                "n_neighbors": UMAP_NEIGHBORS,
                "min_dist": UMAP_MIN_DIST,
                "metric": UMAP_METRIC,
            },
            "percentiles": list(PERCENTILES),
            "margin": MARGIN,
            "min_members": MIN_MEMBERS,
        },
        "image": ATLAS_IMAGE,
    }


def _write(folder: Path, document: dict[str, Any], canvas: np.ndarray) -> None:
    """``atlas.png``, then ``atlas.json`` (both atomic): a reader never sees a json whose picture
    is missing."""
    from PIL import Image

    with atomic_path(folder / ATLAS_IMAGE) as temp:
        Image.fromarray(canvas).save(temp, format="PNG")
    write_json_atomic(folder / ATLAS_FILE, document)


def member_examples(index: ProbeIndex, layer: str, cell: dict[str, Any]) -> list[Example]:
    """A cell's member artworks as the probe's examples (position, receptive-field crop box in
    the original image's pixels, catalog fields), for crops and thumbnails
    (:func:`wga.corpus.views.crop_file`); the layer must be one the probe recorded."""
    field = index.field(layer)
    images = index.images()
    examples = []
    for image, gy, gx in cell.get("member_ids", []):
        height, width = (int(v) for v in index.sizes()[image])
        y, x, box = original_position(field, gy, gx, (height, width), index.side)
        meta = {k: v for k, v in images[image].items() if k != "file"}
        examples.append(Example(image, images[image]["file"], 0.0, y, x, box, (gy, gx), meta))
    return examples


def open_atlas(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``atlas.json`` of an atlas folder."""
    from wga.errors import NotFound

    path = Path(folder) / ATLAS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(
            f"no atlas at {str(folder)!r} (no {ATLAS_FILE}): build one with "
            "`python -m wga atlas --index INDEX --layer L --out DIR`"
        ) from None
