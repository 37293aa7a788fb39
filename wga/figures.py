"""Figures made of images: galleries of units, side-by-side comparisons, written to files.

Render the images with :func:`wga.vis.render.render_to_files` (which keeps each recipe in its
PNG), then compose them here.

The notebooks show these inline and save them next to the rendered PNGs, so a figure in a paper
can be traced to the recipes in those PNGs' metadata. Matplotlib figures are built without
pyplot (no global state, safe in threads and headless). Without pyplot, IPython has no display
for a bare ``Figure`` (a notebook would show ``<Figure size …>``), so :func:`new_figure` teaches
the running IPython, if any, to show figures as PNG.
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wga.atomic import atomic_path
from wga.errors import InvalidInput

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TILE_INCHES = 2.4  # one image's side in a gallery; titles take the rest
DPI = 100


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure with its own Agg canvas (no pyplot, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    _show_figures_in_ipython(Figure)
    return figure


def _figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _show_figures_in_ipython(figure_type: type) -> None:
    """Register a PNG display for figures in the running IPython (a notebook); else nothing."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    shell.display_formatter.formatters["image/png"].for_type(figure_type, _figure_png)


def save_figure(figure: Figure, path: str | os.PathLike[str], dpi: int = DPI) -> Path:
    """Write ``figure`` atomically (temp file, then rename); the format follows the suffix."""
    with atomic_path(path) as temp:
        figure.savefig(temp, dpi=dpi, bbox_inches="tight", facecolor=figure.get_facecolor())
    return Path(path)


def image_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    titles: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    title: str | None = None,
    tile_inches: float = TILE_INCHES,
) -> Figure:
    """A gallery: one tile per image (uint8 or float in [0, 1]), each with an optional caption."""
    images = list(images)
    if not images:
        raise InvalidInput("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise InvalidInput(f"{len(titles)} titles for {len(images)} images: give one per image")
    columns = columns or min(len(images), 6)
    rows = math.ceil(len(images) / columns)
    caption = 0.3 if titles else 0.0
    heading = 0.5 if title else 0.0
    figure = new_figure(columns * tile_inches, rows * (tile_inches + caption) + heading)
    if title:
        figure.suptitle(title)
    for index, image in enumerate(images):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(np.asarray(image), interpolation="lanczos")
        axes.set_axis_off()
        if titles:
            axes.set_title(titles[index], fontsize=9)
    figure.tight_layout()
    return figure


def side_by_side(
    left: np.ndarray,
    right: np.ndarray,
    left_title: str,
    right_title: str,
    *,
    title: str | None = None,
    tile_inches: float = 4.0,
) -> Figure:
    """Two images at the same scale, e.g. one unit before and after fine-tuning."""
    return image_grid(
        [left, right], [left_title, right_title], columns=2, title=title, tile_inches=tile_inches
    )
