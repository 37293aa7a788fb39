"""Figures of a probe for notebooks and papers: a unit beside the artworks that make it fire.

The page shows the same things interactively (``static/js/artworks.js``); these are the static
versions, built from the index and the lazily cached crops and overlays of
:mod:`wga.corpus.views`, as matplotlib figures without pyplot (:mod:`wga.figures`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from wga.corpus.views import crop_file, overlay_file
from wga.figures import image_grid, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from wga.corpus.index import ProbeIndex
    from wga.models import LoadedModel


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def unit_figure(
    loaded: LoadedModel,
    index: ProbeIndex,
    layer: str,
    unit: int,
    visualisation: np.ndarray,
    count: int = 5,
) -> Figure:
    """The 2018 paper's missing figure: the unit's feature visualisation, then its top artworks
    as receptive-field crops (first row) and as whole artworks with the heat overlay (second)."""
    shown = index.examples(layer, unit)[:count]
    images, titles = [visualisation], [f"{layer} unit {unit}"]
    for example in shown:
        images.append(_rgb(crop_file(index, layer, example)))
        who = example.meta.get("author") or example.file
        titles.append(f"{who[:22]} · {example.value:.1f}")
    images.append(visualisation)
    titles.append("(the same)")
    for example in shown:
        images.append(_rgb(overlay_file(loaded, index, layer, unit, example.image)))
        titles.append((example.meta.get("title") or example.file)[:26])
    title = f"{loaded.spec.title} · {layer} unit {unit}"
    return image_grid(images, titles, columns=len(shown) + 1, title=title)


def negatives_figure(index: ProbeIndex, layer: str, unit: int, count: int = 6) -> Figure | None:
    """The artworks that drive the unit's pre-activation lowest; ``None`` where the probe could
    not record them (a post-ReLU layer such as InceptionV3's ``mixedN``)."""
    negatives = index.examples(layer, unit, negatives=True)[:count]
    if not negatives:
        return None
    crops = [_rgb(crop_file(index, layer, example)) for example in negatives]
    titles = [f"{example.value:.1f}" for example in negatives]
    return image_grid(crops, titles, columns=count, title="negative examples")


def histogram_figure(index: ProbeIndex, layer: str, unit: int) -> Figure:
    """How the unit's per-artwork maximum is distributed (log scale, as the Circuits articles
    plot it), with the top examples marked."""
    histogram = index.histogram(layer, unit)
    figure = new_figure(7, 2.6)
    axes = figure.add_subplot(1, 1, 1)
    edges = np.asarray(histogram["edges"])
    axes.bar(edges[:-1], histogram["counts"], width=np.diff(edges), align="edge")
    axes.set_yscale("symlog")
    axes.set_xlabel(f"maximum of {layer} unit {unit} over an artwork")
    axes.set_ylabel("artworks")
    for example in index.examples(layer, unit):
        axes.axvline(example.value, color="tab:orange", alpha=0.5, linewidth=1)
    figure.tight_layout()
    return figure


def class_examples_figure(
    loaded: LoadedModel, index: ProbeIndex, layer: str, per_class: int = 4
) -> Figure:
    """Each class unit's top-scoring artworks with their Grad-CAM overlays, a row per class."""
    images, titles = [], []
    for unit, name in enumerate(loaded.class_names or []):
        for example in index.examples(layer, unit)[:per_class]:
            images.append(_rgb(overlay_file(loaded, index, layer, unit, example.image)))
            titles.append(f"{name} · {example.value:.2f}")
    title = f"{loaded.spec.title}: top artworks per class"
    return image_grid(images, titles, columns=per_class, title=title)
