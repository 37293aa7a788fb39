"""Where every sampled activation sits on the atlas: a 2-D UMAP layout, gridded into cells.

The constants are the Activation Atlas's (Carter et al., 2019): UMAP with 50 neighbours,
``min_dist`` 0.05 and the cosine metric (activations differ in direction more than in length);
the layout normalised to its 1st–99th percentile plus a 10 % margin, so a few outliers do not
squeeze everyone else into a corner; grids of 20, 40 and 80 cells a side; cells with 5 members or
fewer dropped (their mean is noise and their icon would be too).

Everything is deterministic for a seed: UMAP runs single-threaded with a fixed ``random_state``
(its parallel mode is not reproducible), and cells and members come out in a fixed order.

Grid convention: ``i`` is the row (0 at the top, from the layout's second coordinate), ``j`` the
column (0 at the left, from the first coordinate).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from wga.errors import InvalidInput
from wga.paths import keep_compiled_code_out_of_packages

UMAP_NEIGHBORS = 50
UMAP_MIN_DIST = 0.05
UMAP_METRIC = "cosine"
PERCENTILES = (1.0, 99.0)
MARGIN = 0.1  # of the percentile range, on each side
GRIDS: tuple[int, ...] = (20, 40, 80)
MIN_MEMBERS = 6  # cells with 5 members or fewer are dropped
MEMBERS_KEPT = 12  # nearest member artworks kept per cell (distinct images)
MIN_SAMPLES = 8  # below this UMAP has no neighbourhood to speak of


def embed(vectors: np.ndarray, seed: int, neighbors: int = UMAP_NEIGHBORS) -> np.ndarray:
    """UMAP of ``vectors`` ``(N, C)`` to ``(N, 2)`` float32; the same seed gives the same layout.

    ``neighbors`` shrinks to ``N - 1`` for small samples (a tiny test corpus).
    """
    # umap-learn imports numba (and TensorFlow, for its parametric variant): seconds, so it
    # stays out of module import, which the page server and ``--help`` pay for.
    keep_compiled_code_out_of_packages()  # numba's cache: not inside site-packages
    import umap

    count = len(vectors)
    if count < MIN_SAMPLES:
        raise InvalidInput(
            f"an atlas needs at least {MIN_SAMPLES} sampled activations, got {count}: "
            "use a larger corpus or more samples per image"
        )
    reducer = umap.UMAP(
        n_neighbors=max(2, min(neighbors, count - 1)),
        min_dist=UMAP_MIN_DIST,
        metric=UMAP_METRIC,
        random_state=int(seed),
        n_jobs=1,
    )
    data = np.asarray(vectors, dtype="float32")
    with warnings.catch_warnings():
        # "n_jobs value 1 overridden to 1 by setting random_state", and numba's chatter
        warnings.simplefilter("ignore")
        layout = reducer.fit_transform(data)
    return np.asarray(layout, dtype="float32")


def normalise(layout: np.ndarray, percentiles=PERCENTILES, margin: float = MARGIN) -> np.ndarray:
    """Each axis mapped to [0, 1]: its percentile range plus ``margin`` fills the square, points
    beyond it are clipped onto the edge."""
    low = np.percentile(layout, percentiles[0], axis=0)
    high = np.percentile(layout, percentiles[1], axis=0)
    span = np.maximum(high - low, 1e-12)
    low, high = low - margin * span, high + margin * span
    return np.clip((layout - low) / (high - low), 0.0, 1.0).astype("float32")


def grid_positions(unit_layout: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``i`` and column ``j`` of every point of a normalised layout on a ``grid`` side."""
    cells = np.minimum((unit_layout * grid).astype("int64"), grid - 1)
    return cells[:, 1], cells[:, 0]


@dataclass(frozen=True)
class Cell:
    """One kept cell: its place, how many samples fell in it, their mean activation, and the
    samples (indices into the sample) nearest that mean, from distinct images."""

    i: int
    j: int
    count: int
    mean: np.ndarray  # (C,) float32
    members: tuple[int, ...]


@dataclass(frozen=True)
class Level:
    """The cells of one grid, and how many samples fell in cells that were dropped."""

    grid: int
    cells: tuple[Cell, ...]
    dropped: int


def _nearest_members(
    vectors: np.ndarray, indices: np.ndarray, mean: np.ndarray, images: np.ndarray, keep: int
) -> tuple[int, ...]:
    """The members most like the cell's mean (cosine), one per image, best first."""
    chosen = vectors[indices].astype("float32")
    norms = np.linalg.norm(chosen, axis=1) * max(float(np.linalg.norm(mean)), 1e-12)
    similarity = chosen @ mean / np.maximum(norms, 1e-12)
    order = np.lexsort((indices, -similarity))  # best first; ties by sample index
    kept: list[int] = []
    seen: set[int] = set()
    for position in order:
        index = int(indices[position])
        image = int(images[index])
        if image in seen:
            continue
        seen.add(image)
        kept.append(index)
        if len(kept) >= keep:
            break
    return tuple(kept)


def grid_level(
    unit_layout: np.ndarray,
    vectors: np.ndarray,
    images: np.ndarray,
    grid: int,
    *,
    min_members: int = MIN_MEMBERS,
    keep: int = MEMBERS_KEPT,
) -> Level:
    """Bin a normalised layout into a ``grid`` × ``grid`` level: cells in row-major order."""
    if grid < 1:
        raise InvalidInput(f"grid must be ≥ 1 cells a side, got {grid}")
    rows, cols = grid_positions(unit_layout, grid)
    flat = rows * grid + cols
    order = np.argsort(flat, kind="stable")
    keys, starts, counts = np.unique(flat[order], return_index=True, return_counts=True)
    cells: list[Cell] = []
    dropped = 0
    for key, start, count in zip(keys.tolist(), starts.tolist(), counts.tolist(), strict=True):
        if count < min_members:
            dropped += count
            continue
        members = order[start : start + count]
        mean = vectors[members].astype("float32").mean(axis=0)
        nearest = _nearest_members(vectors, members, mean, images, keep)
        cells.append(Cell(key // grid, key % grid, count, mean, nearest))
    return Level(grid, tuple(cells), dropped)
