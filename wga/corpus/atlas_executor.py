"""Atlas icons on any :mod:`wga.executors` executor (``wga atlas --ray ADDRESS``).

:func:`wga.corpus.atlas.build_atlas` takes an icon renderer (recipes → PNG paths). The default one
runs an in-process render queue; this one hands the icon recipes to renderer workers — Ray actors
that keep the model and its compiled steps, one per GPU or CPU slot — through the same seam as
bulk renders (:func:`wga.vis.bulk.render_batches`; the directions travel with the tasks). The
driver writes each icon into the atlas's ``icons/`` folder exactly as the queue would (same
content id, same record), so a rerun, local or on Ray, finds every icon done.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wga.executors import Executor
from wga.serve.jobs import render_id
from wga.vis.bulk import DEFAULT_BULK_BATCH, CacheFolder, render_batches
from wga.vis.vectors import VectorStore

if TYPE_CHECKING:
    from wga.corpus.atlas import IconRenderer
    from wga.models import LoadedModel


def executor_renderer(
    executor: Executor,
    loaded: LoadedModel,
    icons_dir: Path,
    store: VectorStore,
    *,
    workers: int | None = None,
    batch: int = DEFAULT_BULK_BATCH,
    progress: bool = True,
) -> IconRenderer:
    """An icon renderer for :func:`~wga.corpus.atlas.build_atlas` that runs on ``executor``."""
    from wga.corpus.atlas import ICONS_DIR

    def render(recipes: Sequence[Any]) -> list[str | None]:
        from tqdm.auto import tqdm

        cache = CacheFolder(icons_dir)
        ids = [render_id(recipe, loaded.fingerprint) for recipe in recipes]
        todo = [r for r, i in zip(recipes, ids, strict=True) if cache.finished_png(i) is None]
        if todo:
            started = time.time()
            label = f"icons on {executor.name}"
            with tqdm(total=len(todo), unit="icon", disable=not progress, desc=label) as bar:
                model = todo[0].model
                for finished in render_batches(
                    executor, model, todo, batch=batch, workers=workers, vectors=store
                ):
                    for recipe, image, metadata in finished:
                        cache.add(recipe, loaded.fingerprint, image, metadata, started=started)
                    bar.update(len(finished))
        return [f"{ICONS_DIR}/{i}.png" if cache.finished_png(i) is not None else None for i in ids]

    return render
