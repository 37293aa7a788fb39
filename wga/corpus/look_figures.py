"""The artwork view on paper: heat overlays of units and groups, and a contact sheet.

``python -m wga look --out DIR`` and the look notebook use these; the page draws the same maps
itself (they travel in the JSON). Files written (each through :mod:`wga.atomic`)::

    DIR/look.json                       the view (``look --json``'s document, maps included)
    DIR/overlays/<layer>-unit<U>.jpg    a unit's map over the artwork
    DIR/overlays/<layer>-group<I>.jpg   a group's map over the artwork
    DIR/contact.png                     all of it on one sheet, a block per layer: the units
                                        (value, percentile), then the groups (share, strongest
                                        units) with their icons when rendered

:func:`similar_figure` shows an artwork beside its most similar ones, by content and by style.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from wga.atomic import atomic_path, write_json_atomic
from wga.corpus.views import THUMBNAIL_SIDE, heat_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from wga.corpus.index import ProbeIndex
    from wga.corpus.look import Look
    from wga.corpus.similar import Match

OVERLAYS_DIR = "overlays"
CONTACT_FILE = "contact.png"
LOOK_FILE = "look.json"
JPEG_QUALITY = 88


def artwork_image(source: str | Path | bytes) -> Image.Image:
    """The artwork as RGB, at most :data:`wga.corpus.views.THUMBNAIL_SIDE` px a side."""
    import io

    readable: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(readable) as image:
        image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        rgb = image.convert("RGB")
    rgb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    return rgb


def _safe(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", layer)


def overlay_files(look: Look, artwork: Image.Image, out: Path) -> dict[tuple[str, str, int], Path]:
    """Every unit's and group's heat overlay; keyed ``(layer, "unit"|"group", number)``."""
    folder = out / OVERLAYS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[tuple[str, str, int], Path] = {}

    def save(key: tuple[str, str, int], heat: np.ndarray, name: str) -> None:
        target = folder / name
        with atomic_path(target) as temp:
            heat_image(artwork, heat).save(temp, format="JPEG", quality=JPEG_QUALITY)
        written[key] = target

    for layer in look.layers:
        for unit in layer.units:
            save(
                (layer.layer, "unit", unit.unit),
                unit.map,
                f"{_safe(layer.layer)}-unit{unit.unit}.jpg",
            )
        for number, group in enumerate(layer.groups):
            save(
                (layer.layer, "group", number), group.map, f"{_safe(layer.layer)}-group{number}.jpg"
            )
    return written


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def contact_sheet(
    look: Look,
    artwork: Image.Image,
    overlays: dict[tuple[str, str, int], Path],
    icons: dict[tuple[str, int], Path] | None = None,
) -> Figure:
    """One sheet: per layer a row of unit overlays and a row of group overlays (and a row of
    their icons when rendered), the artwork first in each row."""
    from wga.figures import image_grid

    icons = icons or {}
    picture = np.asarray(artwork)
    blank = np.full((8, 8, 3), 255, np.uint8)
    rows: list[list[tuple[np.ndarray, str]]] = []
    for layer in look.layers:
        units = [(picture, f"{layer.layer}: units")]
        for unit in layer.units:
            rank = "" if unit.percentile is None else f" · {unit.percentile:.1f} %ile"
            units.append(
                (
                    _rgb(overlays[(layer.layer, "unit", unit.unit)]),
                    f"{unit.unit}: {unit.value:.1f}{rank}",
                )
            )
        rows.append(units)
        if layer.groups:
            groups = [(picture, f"{layer.layer}: groups")]
            for number, group in enumerate(layer.groups):
                caption = f"{100 * group.share:.0f} % · " + ",".join(
                    str(u) for u in group.units[:3]
                )
                groups.append((_rgb(overlays[(layer.layer, "group", number)]), caption))
            rows.append(groups)
            drawn = [icons.get((layer.layer, n)) for n in range(len(layer.groups))]
            if any(path is not None for path in drawn):
                row = [(blank, "icons")]
                row += [(_rgb(p) if p else blank, f"group {n}") for n, p in enumerate(drawn)]
                rows.append(row)
    columns = max(len(row) for row in rows)
    images, titles = [], []
    for row in rows:
        row = row + [(blank, "")] * (columns - len(row))
        images += [image for image, _ in row]
        titles += [title for _, title in row]
    who = look.picture.meta.get("title") or look.picture.file
    return image_grid(images, titles, columns=columns, title=f"{look.model} looks at {who}")


def write_look(
    look: Look,
    artwork: Image.Image,
    out: str | Path,
    icons: dict[tuple[str, int], Path] | None = None,
) -> dict[str, Any]:
    """Write the view's files into ``out`` (see the module docstring); returns what was written."""
    from wga.figures import save_figure

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    overlays = overlay_files(look, artwork, folder)
    write_json_atomic(folder / LOOK_FILE, look.as_dict(unit_maps=True))
    sheet = save_figure(contact_sheet(look, artwork, overlays, icons), folder / CONTACT_FILE)
    return {"look": folder / LOOK_FILE, "contact": sheet, "overlays": sorted(overlays.values())}


def similar_figure(
    index: ProbeIndex,
    artwork: Image.Image,
    layer: str,
    rows: dict[str, list[Match]],
) -> Figure:
    """The artwork, then its most similar artworks of the corpus, one row per measure
    (``{"content": matches, "style": matches}``), each captioned with its cosine."""
    from wga.corpus.views import thumbnail_file
    from wga.figures import image_grid

    columns = 1 + max((len(matches) for matches in rows.values()), default=0)
    blank = np.full((8, 8, 3), 255, np.uint8)
    images: list[np.ndarray] = []
    titles: list[str] = []
    for by, matches in rows.items():
        images.append(np.asarray(artwork))
        titles.append(f"by {by}:")
        for match in matches:
            images.append(_rgb(thumbnail_file(index, match.image)))
            who = match.meta.get("author") or match.file
            titles.append(f"{who[:18]} · {match.score:.3f}")
        images += [blank] * (columns - 1 - len(matches))
        titles += [""] * (columns - 1 - len(matches))
    return image_grid(images, titles, columns=columns, title=f"most similar at {layer}")
