"""The per-batch probe result and its merge: streaming top-k that any executor can shard.

A probe is ``driver loop(partials) → merge → index writer`` (:mod:`wga.corpus.probe`,
:mod:`wga.corpus.index`). This module is the pure middle, free of TensorFlow, so that workers
anywhere (the local loop, Ray Data ``map_batches`` actors) compute :class:`Partial` results and
the driver folds them with :func:`merge`:

* :func:`batch_partial` turns one batch's per-image reductions — for each layer the spatial
  maximum of every unit and its flat position (and the minimum, where the pre-activation is
  reachable) — into a :class:`Partial`: per layer and sign a :class:`TopK` (values, image ids,
  y, x on the layer's grid), plus the per-image maxima rows that the writer puts in the N × C
  matrix.
* :func:`merge` ``(running, partial) → running`` concatenates the running k with the batch's k
  per unit and keeps the best k. It is associative and commutative and its result does not
  depend on how images were split into batches or shards, bit for bit: candidates are ranked
  by value, **ties broken by the smaller image id**, and an image seen twice for one unit (a
  retried shard) keeps only its best entry, so no image appears twice in a unit's list.

Sizes: a :class:`TopK` is ``4 × C × k`` numbers; for k = 16 and 10,000 units ≈ 2 MB per sign.
numpy's ``lexsort`` over ``C × 2k`` candidates is exact (stable, tie-aware) and costs far less
than the forward pass that produced them, so it is used instead of ``tf.math.top_k``, whose tie
order follows the concatenation order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

EMPTY_ID = -1  # an unused slot (fewer than k images seen so far)
_ID_LAST = np.iinfo(np.int64).max  # sort key that puts empty slots after every real image


@dataclass
class TopK:
    """Per unit, the ``k`` best (value, image id, y, x), best first; empty slots have id -1.

    ``largest`` True: the highest values (the examples); False: the lowest (the negatives).
    ``y``/``x`` index the layer's feature-map grid (0, 0 for units without positions).
    """

    values: np.ndarray  # (C, k) float32
    ids: np.ndarray  # (C, k) int64
    ys: np.ndarray  # (C, k) int32
    xs: np.ndarray  # (C, k) int32
    largest: bool = True

    @property
    def units(self) -> int:
        return int(self.values.shape[0])

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    @classmethod
    def empty(cls, units: int, k: int, largest: bool = True) -> TopK:
        fill = -np.inf if largest else np.inf
        return cls(
            np.full((units, k), fill, np.float32),
            np.full((units, k), EMPTY_ID, np.int64),
            np.zeros((units, k), np.int32),
            np.zeros((units, k), np.int32),
            largest,
        )

    def equal(self, other: TopK) -> bool:
        """Bit-identical (NaN-free values compared exactly)."""
        return (
            self.largest == other.largest
            and np.array_equal(self.values, other.values)
            and np.array_equal(self.ids, other.ids)
            and np.array_equal(self.ys, other.ys)
            and np.array_equal(self.xs, other.xs)
        )


def _best(
    values: np.ndarray, ids: np.ndarray, ys: np.ndarray, xs: np.ndarray, k: int, largest: bool
) -> TopK:
    """The best ``k`` of candidate columns per unit row, one entry per image, ties by id."""
    units, n = values.shape
    if n < k:  # pad with empty slots so every TopK has exactly k columns
        pad = TopK.empty(units, k - n, largest)
        values = np.concatenate([values, pad.values], axis=1)
        ids = np.concatenate([ids, pad.ids], axis=1)
        ys = np.concatenate([ys, pad.ys], axis=1)
        xs = np.concatenate([xs, pad.xs], axis=1)
    rank = -values if largest else values.copy()  # ascending rank = better first; NaN sorts last
    id_key = np.where(ids < 0, _ID_LAST, ids)
    # One entry per image and unit: sort by (id, rank) and void every repeat of an id.
    by_id = np.lexsort((rank, id_key), axis=-1)
    sorted_ids = np.take_along_axis(id_key, by_id, axis=-1)
    repeat = np.zeros_like(sorted_ids, dtype=bool)
    repeat[:, 1:] = (sorted_ids[:, 1:] == sorted_ids[:, :-1]) & (sorted_ids[:, 1:] != _ID_LAST)
    if repeat.any():
        rows = np.nonzero(repeat)[0]
        cols = by_id[repeat]
        rank = rank.copy()
        id_key = id_key.copy()
        rank[rows, cols] = np.inf
        id_key[rows, cols] = _ID_LAST
    order = np.lexsort((id_key, rank), axis=-1)[:, :k]  # by rank, then by image id
    take = lambda a: np.take_along_axis(a, order, axis=-1)  # noqa: E731
    kept_ids = take(id_key)
    empty = kept_ids == _ID_LAST
    fill = -np.inf if largest else np.inf
    return TopK(
        np.where(empty, np.float32(fill), take(values)).astype(np.float32),
        np.where(empty, EMPTY_ID, kept_ids).astype(np.int64),
        np.where(empty, 0, take(ys)).astype(np.int32),
        np.where(empty, 0, take(xs)).astype(np.int32),
        largest,
    )


def merge_topk(a: TopK, b: TopK) -> TopK:
    """The best ``max(a.k, b.k)`` of both, per unit (associative, commutative, exact)."""
    if a.largest != b.largest or a.units != b.units:
        raise ValueError("cannot merge top-k lists of different signs or unit counts")
    return _best(
        np.concatenate([a.values, b.values], axis=1),
        np.concatenate([a.ids, b.ids], axis=1),
        np.concatenate([a.ys, b.ys], axis=1),
        np.concatenate([a.xs, b.xs], axis=1),
        max(a.k, b.k),
        a.largest,
    )


@dataclass
class LayerTop:
    """One layer's running lists: ``top`` (highest maxima) and ``bottom`` (lowest minima, if any)."""

    top: TopK
    bottom: TopK | None = None


@dataclass
class TopState:
    """What the driver keeps while merging: per layer its :class:`LayerTop`."""

    layers: dict[str, LayerTop]

    def equal(self, other: TopState) -> bool:
        if self.layers.keys() != other.layers.keys():
            return False
        for name, mine in self.layers.items():
            theirs = other.layers[name]
            if not mine.top.equal(theirs.top):
                return False
            if (mine.bottom is None) != (theirs.bottom is None):
                return False
            if mine.bottom is not None and not mine.bottom.equal(theirs.bottom):  # type: ignore[arg-type]
                return False
        return True


@dataclass
class Reduced:
    """One layer's per-image reduction of a batch (what a worker computes on the device).

    ``max``/``argmax``: (B, C) spatial maximum of each unit and its flat position ``y * W + x``
    on the ``grid`` (H, W), over the image's kept positions only; ``min``/``argmin`` likewise for
    layers whose pre-activation is reachable, else None; ``mean``/``std``: (B, C) the style
    statistics (per channel, over the kept positions, of the layer's output), or None.
    """

    max: np.ndarray
    argmax: np.ndarray
    grid: tuple[int, int]
    min: np.ndarray | None = None
    argmin: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None


@dataclass
class Partial:
    """One batch's result: enough to merge (``state``) and to fill the index's per-image rows.

    ``ids`` are the decoded images of the batch (failed ones are in ``skipped``, id → error);
    ``sizes`` their original (height, width); ``maxima[layer]`` their (B, C) spatial maxima;
    ``style[layer]`` their (B, 2C) style statistics (mean, then standard deviation), when made.
    """

    ids: np.ndarray  # (B,) int64
    sizes: np.ndarray  # (B, 2) int32
    state: TopState
    maxima: dict[str, np.ndarray]
    skipped: dict[int, str] = field(default_factory=dict)
    style: dict[str, np.ndarray] = field(default_factory=dict)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat numpy arrays (for Ray's object store or any pickle-free transport)."""
        arrays: dict[str, np.ndarray] = {
            "ids": self.ids,
            "sizes": self.sizes,
            "skipped_ids": np.asarray(list(self.skipped), np.int64),
            "skipped_errors": np.asarray(list(self.skipped.values()), dtype=object),
        }
        for name, layer in self.state.layers.items():
            arrays[f"maxima/{name}"] = self.maxima[name]
            if name in self.style:
                arrays[f"style/{name}"] = self.style[name]
            for sign, top in (("top", layer.top), ("bottom", layer.bottom)):
                if top is None:
                    continue
                for part in ("values", "ids", "ys", "xs"):
                    arrays[f"{sign}/{part}/{name}"] = getattr(top, part)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Partial:
        names = [key.split("/", 1)[1] for key in arrays if key.startswith("maxima/")]
        layers: dict[str, LayerTop] = {}
        for name in names:
            tops = {}
            for sign in ("top", "bottom"):
                if f"{sign}/values/{name}" in arrays:
                    tops[sign] = TopK(
                        *(
                            np.asarray(arrays[f"{sign}/{p}/{name}"])
                            for p in ("values", "ids", "ys", "xs")
                        ),
                        largest=sign == "top",
                    )
            layers[name] = LayerTop(tops["top"], tops.get("bottom"))
        skipped = {
            int(i): str(e)
            for i, e in zip(arrays["skipped_ids"], arrays["skipped_errors"], strict=True)
        }
        return cls(
            np.asarray(arrays["ids"], np.int64),
            np.asarray(arrays["sizes"], np.int32),
            TopState(layers),
            {name: np.asarray(arrays[f"maxima/{name}"]) for name in names},
            skipped,
            {
                name: np.asarray(arrays[f"style/{name}"])
                for name in names
                if f"style/{name}" in arrays
            },
        )


def _candidates(
    values: np.ndarray, flat: np.ndarray, ids: np.ndarray, width: int, k: int, largest: bool
) -> TopK:
    """(B, C) per-image values and flat positions → the batch's best k per unit."""
    units = values.shape[1]
    ys, xs = np.divmod(flat.astype(np.int64), max(width, 1))
    return _best(
        np.ascontiguousarray(values.T, np.float32),
        np.broadcast_to(ids[None, :], (units, ids.shape[0])).astype(np.int64),
        ys.T.astype(np.int32),
        xs.T.astype(np.int32),
        k,
        largest,
    )


def batch_partial(
    ids: np.ndarray,
    sizes: np.ndarray,
    reduced: Mapping[str, Reduced],
    k: int,
    *,
    ok: np.ndarray | None = None,
    errors: Iterable[str] | None = None,
) -> Partial:
    """The :class:`Partial` of one batch (pure numpy; rows with ``ok`` False are skipped)."""
    ids = np.asarray(ids, np.int64)
    keep = np.ones(len(ids), bool) if ok is None else np.asarray(ok, bool)
    skipped = {
        int(i): str(e)
        for i, e, good in zip(ids, errors or [""] * len(ids), keep, strict=True)
        if not good
    }
    good_ids = ids[keep]
    layers: dict[str, LayerTop] = {}
    maxima: dict[str, np.ndarray] = {}
    style: dict[str, np.ndarray] = {}
    for name, part in reduced.items():
        width = part.grid[1]
        top = _candidates(part.max[keep], part.argmax[keep], good_ids, width, k, True)
        bottom = None
        if part.min is not None and part.argmin is not None:
            bottom = _candidates(part.min[keep], part.argmin[keep], good_ids, width, k, False)
        layers[name] = LayerTop(top, bottom)
        maxima[name] = np.asarray(part.max[keep], np.float32)
        if part.mean is not None and part.std is not None:
            statistics = np.concatenate([np.asarray(part.mean), np.asarray(part.std)], axis=1)
            style[name] = statistics[keep].astype(np.float32)
    sizes = np.asarray(sizes, np.int32)[keep]
    return Partial(good_ids, sizes, TopState(layers), maxima, skipped, style)


def merge(running: TopState | None, partial: Partial | TopState) -> TopState:
    """Fold a batch's (or a shard's) lists into the running ones; ``None`` starts a new state.

    Any grouping or order of the same partials gives the same state, bit for bit.
    """
    incoming = partial.state if isinstance(partial, Partial) else partial
    if running is None:
        return TopState(dict(incoming.layers))
    if running.layers.keys() != incoming.layers.keys():
        raise ValueError(
            f"cannot merge results for layers {sorted(incoming.layers)} into {sorted(running.layers)}"
        )
    merged: dict[str, LayerTop] = {}
    for name, mine in running.layers.items():
        theirs = incoming.layers[name]
        bottom = None
        if mine.bottom is not None and theirs.bottom is not None:
            bottom = merge_topk(mine.bottom, theirs.bottom)
        merged[name] = LayerTop(merge_topk(mine.top, theirs.top), bottom)
    return TopState(merged)
