"""REST endpoints for activation atlases (folders made by ``python -m wga atlas``).

* ``GET /api/atlases`` — the atlases under ``./atlases`` (or ``$WGA_ATLASES_DIR``): name, model,
  layer, probe, grids, icon size, cells and samples.
* ``GET /api/atlases/:atlas`` — its parameters and levels (grid, cells, dropped), no cells.
* ``GET /api/atlases/:atlas/levels/:grid`` — the cells of one level: ``i``, ``j``, ``count``,
  ``direction`` (the hash of the vector its icon maximises), ``icon`` (render id), ``icon_url``
  (``null`` until rendered) and ``members`` (``file``, ``y``, ``x`` in the original image's
  pixels, best first).
* ``GET /api/atlases/:atlas/levels/:grid/cells/:cell`` (``cell`` = ``i-j``) — one cell with its
  icon and its member artworks as the probe shows a unit's: ``image_url`` (the whole artwork),
  ``crop_url`` (the layer's receptive field around the sampled position), and the catalog's
  ``author``, ``title``, ``date`` and ``page`` (when the atlas's probe is served here).
* ``POST /api/atlases/:atlas/levels/:grid/icons`` ``{"cells": [[i, j], …]?, "priority"?}`` —
  renders the icons of those cells (default: every cell still without one) through the render
  queue, below a person's own renders (priority −1 by default), so the page stays responsive
  while an atlas fills in; answers each cell's render view.

Icons the CLI rendered live in the atlas folder's render store (``icons/``); the first request
copies them into the render cache (:meth:`wga.vis.store.RenderStore.adopt`: same content ids, so
the queue sees them as done) and the atlas's directions into the
server's vector store, where the queue's renders find them. Names are folder names only (no
path ever comes from a request).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wga.corpus.atlas import (
    ATLAS_FILE,
    ICON_PRIORITY,
    ICONS_DIR,
    VECTORS_DIR,
    AtlasOptions,
    IconRenderer,
    open_atlas,
)
from wga.corpus.atlas import icon_recipe as _icon_recipe
from wga.errors import InvalidInput, NotFound, closest_names
from wga.paths import atlases_dir
from wga.serve.http import Response, client_key, json_body, reject_unknown
from wga.serve.http import integer as _integer
from wga.vis.store import RenderStore, render_id
from wga.vis.vectors import VectorStore

if TYPE_CHECKING:
    from wga.models import LoadedModel
    from wga.serve.loading import ModelLoader
    from wga.serve.probes import ProbeService
    from wga.serve.queue import RenderQueue

_NAME = re.compile(r"^[A-Za-z0-9_.+=-]{1,200}$")
MAX_ICON_CELLS = 1024  # one request; a whole 80 × 80 level is asked for in pages of cells


def queue_renderer(
    queue: RenderQueue,
    loaded: LoadedModel,
    folder: str | os.PathLike[str],
    vectors: VectorStore,
    *,
    priority: int = ICON_PRIORITY,
    progress: bool = True,
) -> IconRenderer:
    """Icons through a running render queue (the server's, handed down to
    :func:`wga.corpus.atlas.build_atlas`): the atlas's directions go into ``vectors`` (the store
    the queue's renders read), the icons are rendered below a person's own renders and copied
    from the render cache into the atlas's store ``folder/icons`` — the same ids and bytes as
    :func:`wga.corpus.atlas.executor_renderer`. Returns each recipe's PNG path relative to
    ``folder`` (``None`` for one that failed)."""

    def render(recipes: Sequence[Any]) -> list[str | None]:
        from tqdm.auto import tqdm

        if not recipes:
            return []
        vectors.import_from(VectorStore(Path(folder) / VECTORS_DIR))
        icons = RenderStore(Path(folder) / ICONS_DIR)
        views = queue.submit_many(list(recipes), loaded.fingerprint, priority)
        results: list[str | None] = []
        with tqdm(total=len(views), unit="icon", disable=not progress, desc="icons") as bar:
            for view in views:
                final = queue.wait(view["id"], timeout=7 * 24 * 3600.0)
                done = final["status"] == "done" and icons.adopt(queue.cache, view["id"])
                results.append(f"{ICONS_DIR}/{view['id']}.png" if done else None)
                bar.update(1)
        return results

    return render


def options_of(atlas: dict[str, Any]) -> AtlasOptions:
    """The options an atlas was built with (what its icons' recipes need)."""
    objective = atlas.get("objective", {})
    return AtlasOptions(
        layer=atlas["layer"],
        grid=int(atlas["grid"]),
        icon=int(atlas["icon_size"]),
        steps=int(atlas["steps"]),
        seed=int(atlas["seed"]),
        preset=atlas.get("preset"),
        whiten=bool(objective.get("whiten", True)),
        cos_power=float(objective.get("cos_power", 2.0)),
        levels=tuple(int(g) for g in atlas["grids"]),
    )


class AtlasService:
    """The atlas endpoints over a folder of atlases, the server's render queue and model loader,
    and the vector store its renders read."""

    def __init__(
        self,
        queue: RenderQueue,
        loader: ModelLoader,
        vectors: VectorStore,
        folder: str | os.PathLike[str] | None = None,
        probes: ProbeService | None = None,
    ) -> None:
        self.queue = queue
        self.loader = loader
        self.probes = probes
        self.folder = Path(folder) if folder is not None else atlases_dir()
        self.vectors = vectors
        self._imported: set[Path] = set()
        self._lock = threading.Lock()

    @property
    def routes(self) -> dict[str, Callable[[dict[str, Any]], Response]]:
        return {
            "GET /api/atlases": self.list_atlases,
            "GET /api/atlases/:atlas": self.get_atlas,
            "GET /api/atlases/:atlas/levels/:grid": self.get_level,
            "GET /api/atlases/:atlas/levels/:grid/cells/:cell": self.get_cell,
            "POST /api/atlases/:atlas/levels/:grid/icons": self.render_icons,
        }

    # -- finding atlases ----------------------------------------------------------------------
    def _names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(
            path.name
            for path in self.folder.iterdir()
            if _NAME.match(path.name) and (path / ATLAS_FILE).is_file()
        )

    def _open(self, name: Any) -> tuple[Path, dict[str, Any]]:
        names = self._names()
        if not isinstance(name, str) or name not in names:
            hint = (
                closest_names(str(name), names)
                if names
                else (
                    "there are none yet in the server's atlases folder: build one with "
                    "`python -m wga atlas --out atlases/NAME` where wga serve runs (or --atlases)"
                )
            )
            raise NotFound(f"no atlas {str(name)[:80]!r}: {hint} (GET /api/atlases)")
        folder = self.folder / name
        atlas = open_atlas(folder)
        self._import_vectors(folder)
        return folder, atlas

    def _import_vectors(self, folder: Path) -> None:
        with self._lock:
            if folder in self._imported:
                return
            self.vectors.import_from(VectorStore(folder / VECTORS_DIR))
            self._imported.add(folder)

    @staticmethod
    def _summary(name: str, atlas: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "model": atlas["model"],
            "layer": atlas["layer"],
            "probe": atlas.get("probe"),
            "grid": atlas["grid"],
            "grids": atlas["grids"],
            "icon_size": atlas["icon_size"],
            "cells": len(atlas["cells"]),
            "samples": atlas["samples"]["count"],
            "image": f"/api/atlases/{name}",
        }

    def list_atlases(self, request: dict[str, Any]) -> Response:
        found = []
        for name in self._names():
            try:
                found.append(self._summary(name, open_atlas(self.folder / name)))
            except (ValueError, KeyError, NotFound):
                continue  # a folder being written, or not an atlas of this version
        return Response(200, {"atlases": found})

    def get_atlas(self, request: dict[str, Any]) -> Response:
        name = request["path"].get("atlas")
        _, atlas = self._open(name)
        levels = [
            {"grid": int(grid), "cells": len(level["cells"]), "dropped": level["dropped"]}
            for grid, level in sorted(atlas["levels"].items(), key=lambda kv: int(kv[0]))
        ]
        body = {
            **self._summary(name, atlas),
            "seed": atlas["seed"],
            "steps": atlas["steps"],
            "preset": atlas.get("preset"),
            "objective": atlas.get("objective"),
            "layout": atlas.get("layout"),
            "samples": atlas["samples"],
            "levels": levels,
        }
        return Response(200, body)

    # -- a level's cells ----------------------------------------------------------------------
    def _level(self, atlas: dict[str, Any], grid: Any) -> dict[str, Any]:
        levels = atlas["levels"]
        if str(grid) not in levels:
            raise NotFound(
                f"atlas has no level {str(grid)[:20]!r}: its grids are "
                f"{', '.join(sorted(levels, key=int))}"
            )
        return levels[str(grid)]

    def _icon_id(self, atlas: dict[str, Any], options: AtlasOptions, direction: str) -> str:
        recipe = _icon_recipe(atlas["model"], options, direction)
        return render_id(recipe, atlas["model_fingerprint"])

    def _publish(self, folder: Path, render: str) -> bool:
        """Copy an icon the CLI rendered into the render cache; whether the cache has it now."""
        return self.queue.cache.adopt(RenderStore(folder / ICONS_DIR), render)

    def _cell_view(
        self, folder: Path, atlas: dict[str, Any], options: AtlasOptions, cell: dict[str, Any]
    ) -> dict[str, Any]:
        render = url = None
        if cell.get("direction"):
            render = self._icon_id(atlas, options, cell["direction"])
            if self._publish(folder, render):
                url = f"{self.queue.public_url}{render}.png"
        return {
            "i": cell["i"],
            "j": cell["j"],
            "count": cell["count"],
            "direction": cell.get("direction"),
            "icon": render,
            "icon_url": url,
            "members": [{"file": f, "y": y, "x": x} for f, y, x in cell["members"]],
        }

    def get_level(self, request: dict[str, Any]) -> Response:
        folder, atlas = self._open(request["path"].get("atlas"))
        level = self._level(atlas, request["path"].get("grid"))
        options = options_of(atlas)
        cells = [self._cell_view(folder, atlas, options, cell) for cell in level["cells"]]
        body = {
            "atlas": request["path"].get("atlas"),
            "model": atlas["model"],
            "layer": atlas["layer"],
            "grid": level["grid"],
            "dropped": level["dropped"],
            "icon_size": atlas["icon_size"],
            "cells": cells,
        }
        return Response(200, body)

    def get_cell(self, request: dict[str, Any]) -> Response:
        name = request["path"].get("atlas")
        folder, atlas = self._open(name)
        level = self._level(atlas, request["path"].get("grid"))
        text = str(request["path"].get("cell"))
        match = re.fullmatch(r"(\d{1,4})-(\d{1,4})", text)
        found = [
            c
            for c in level["cells"]
            if match and (c["i"], c["j"]) == tuple(map(int, match.groups()))
        ]
        if not found:
            raise NotFound(
                f"no cell {text[:20]!r} in level {level['grid']} of atlas {name!r}: cells are "
                "named i-j (row-column), as listed by GET /api/atlases/:atlas/levels/:grid"
            )
        cell = found[0]
        view = self._cell_view(folder, atlas, options_of(atlas), cell)
        view["members"] = self._artworks(atlas, cell)
        return Response(
            200, {"atlas": name, "layer": atlas["layer"], "grid": level["grid"], **view}
        )

    def _artworks(self, atlas: dict[str, Any], cell: dict[str, Any]) -> list[dict[str, Any]]:
        """The cell's members with the probe's thumbnail and crop URLs and catalog fields."""
        members = [{"file": f, "y": y, "x": x} for f, y, x in cell["members"]]
        probe = atlas.get("probe")
        if self.probes is None or probe not in self.probes.names() or "member_ids" not in cell:
            return members
        index = self.probes.index(probe)
        return [
            {**member, **self.probes.artwork(index, atlas["layer"], image, (gy, gx))}
            for member, (image, gy, gx) in zip(members, cell["member_ids"], strict=True)
        ]

    def render_icons(self, request: dict[str, Any]) -> Response:
        name = request["path"].get("atlas")
        folder, atlas = self._open(name)
        level = self._level(atlas, request["path"].get("grid"))
        body = json_body(request) if request.get("body") else {}
        reject_unknown(body, ("cells", "priority"))
        priority = _integer(body, "priority", ICON_PRIORITY, -100, 100)
        by_place = {(c["i"], c["j"]): c for c in level["cells"] if c.get("direction")}
        wanted = body.get("cells")
        if wanted is None:
            chosen = list(by_place.values())
        else:
            if not isinstance(wanted, list) or len(wanted) > MAX_ICON_CELLS:
                raise InvalidInput(
                    f"cells must be a list of at most {MAX_ICON_CELLS} [i, j] pairs of the level"
                )
            chosen = []
            for pair in wanted:
                key = tuple(pair) if isinstance(pair, list) and len(pair) == 2 else None
                if key not in by_place:
                    raise InvalidInput(
                        f"no cell {str(pair)[:40]} in level {level['grid']}: give [i, j] of a "
                        "cell listed by GET /api/atlases/:atlas/levels/:grid"
                    )
                chosen.append(by_place[key])
        chosen = chosen[:MAX_ICON_CELLS]
        options = options_of(atlas)
        model = self.loader.registry_name(atlas["model"])
        loaded = self.loader.available(model)
        if loaded.fingerprint != atlas["model_fingerprint"]:
            raise InvalidInput(
                f"atlas {name!r} was made with other weights of {model!r} than the server has: "
                "rebuild it with `python -m wga atlas`"
            )
        recipes = [_icon_recipe(model, options, cell["direction"]) for cell in chosen]
        for recipe in recipes:
            self._publish(folder, render_id(recipe, loaded.fingerprint))
        views = (
            self.queue.submit_many(recipes, loaded.fingerprint, priority, client_key(request))
            if recipes
            else []
        )
        renders = [
            {"i": cell["i"], "j": cell["j"], **view}
            for cell, view in zip(chosen, views, strict=True)
        ]
        status = 200 if all(view["status"] == "done" for view in renders) else 202
        return Response(status, {"renders": renders})
