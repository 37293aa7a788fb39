"""Where a value stands among a corpus: per unit, the share of artworks whose maximum is lower.

"Fires more here than on 99.6 % of the collection": for a unit of a probed layer and a value
(the unit's spatial maximum over one artwork), the percentile is

    100 × #{valid artworks whose recorded maximum < value} / #{valid artworks}

over the index's N × C float16 matrix of per-artwork maxima (``INDEX/maxima/<i>.npy``; rows of
unread or not-yet-probed artworks are NaN and do not count). The value is rounded to float16
first, as the index stores it, so an indexed artwork's own row never counts as lower than itself.

Counting over a whole column for every unit is N × C comparisons a look (0.8 s for 100,000 ×
512 here, float16 compares are slow in numpy), so a finished index gets each layer's maxima
sorted once per unit and kept beside it (``INDEX/cache/ranks/``, C × N float16, memory-mapped):
a percentile is then one binary search per unit. An unfinished index (still being probed) is
counted directly.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wga.atomic import atomic_path

if TYPE_CHECKING:
    from wga.corpus.index import ProbeIndex

RANKS_DIR = "ranks"  # under the index's cache folder
BLOCK_UNITS = 256  # columns sorted (or counted) at once: memory stays bounded

_lock = threading.Lock()
_sorted: dict[Path, np.ndarray] = {}  # opened memory maps, by file


def percentiles_among(maxima: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per column of ``maxima`` (N × C, NaN rows ignored), the percent of rows below ``values``
    (C,) rounded to float16 — the definition, counted directly (no sorted copy)."""
    values16 = np.asarray(values, np.float32).astype(np.float16)
    units = maxima.shape[1]
    out = np.full(units, np.nan, np.float64)
    for start in range(0, units, BLOCK_UNITS):
        block = np.asarray(maxima[:, start : start + BLOCK_UNITS], np.float32)
        valid = ~np.isnan(block)
        counts = valid.sum(axis=0)
        lower = ((block < values16[start : start + BLOCK_UNITS].astype(np.float32)) & valid).sum(
            axis=0
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + block.shape[1]] = np.where(
                counts > 0, 100.0 * lower / counts, np.nan
            )
    return out


def _ranks_path(index: ProbeIndex, layer: str) -> Path:
    d = index.description
    stamp = f"{d.get('created')}\0{d.get('finished')}\0{d.get('model_fingerprint')}\0{layer}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    return index.root / "cache" / RANKS_DIR / f"{index.layer_index(layer)}-{key}.npy"


def _build_sorted(maxima: np.ndarray, target: Path) -> None:
    """Each column's non-NaN values, ascending, as rows of a C × n float16 matrix."""
    rows = np.nonzero(~np.isnan(np.asarray(maxima[:, 0], np.float32)))[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as temp:
        out = np.lib.format.open_memmap(
            temp, mode="w+", dtype=np.float16, shape=(maxima.shape[1], len(rows))
        )
        for start in range(0, maxima.shape[1], BLOCK_UNITS):
            block = np.asarray(maxima[:, start : start + BLOCK_UNITS])[rows]
            out[start : start + block.shape[1]] = np.sort(block, axis=0).T
        out.flush()
        del out


def sorted_maxima(index: ProbeIndex, layer: str) -> np.ndarray | None:
    """The layer's per-unit sorted maxima (C × n, memory-mapped), made on first use; ``None``
    for an unfinished index, or where the index folder cannot be written."""
    if not index.description.get("complete"):
        return None
    path = _ranks_path(index, layer)
    with _lock:
        found = _sorted.get(path)
        if found is not None:
            return found
        if not path.exists():
            try:
                _build_sorted(index.maxima(layer), path)
            except OSError:
                return None  # a read-only index: count directly
        matrix = np.load(path, mmap_mode="r")
        _sorted[path] = matrix
        return matrix


def unit_percentiles(index: ProbeIndex, layer: str, values: np.ndarray) -> np.ndarray:
    """Per unit of ``layer``, the percent of the index's artworks whose maximum is below
    ``values[unit]`` (see the module docstring); NaN where the index has no artwork yet."""
    values = np.asarray(values, np.float32)
    table = sorted_maxima(index, layer)
    if table is None:
        return percentiles_among(index.maxima(layer), values)
    count = table.shape[1]
    if count == 0:
        return np.full(len(values), np.nan)
    values16 = values.astype(np.float16)
    lower = np.fromiter(
        (np.searchsorted(table[unit], values16[unit], side="left") for unit in range(len(values))),
        dtype=np.int64,
        count=len(values),
    )
    return 100.0 * lower / count
