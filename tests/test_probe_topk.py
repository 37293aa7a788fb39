"""The merge of per-batch probe results: exact, order-free, one entry per image (pure numpy)."""

from __future__ import annotations

import numpy as np

from wga.corpus.topk import Reduced, TopState, batch_partial, merge


def _batches(seed: int = 0, n: int = 23, units: int = 5, grid: tuple[int, int] = (3, 4)):
    rng = np.random.default_rng(seed)
    # Rounded values make ties common: the merge must break them by image id.
    maxima = np.round(rng.normal(size=(n, units)), 1).astype(np.float32)
    minima = maxima - np.round(rng.uniform(0, 2, size=(n, units)), 1).astype(np.float32)
    argmax = rng.integers(0, grid[0] * grid[1], size=(n, units))
    argmin = rng.integers(0, grid[0] * grid[1], size=(n, units))
    sizes = np.full((n, 2), 64, np.int32)
    return maxima, minima, argmax, argmin, sizes


def _partial(rows: np.ndarray, data, k: int, grid=(3, 4)):
    maxima, minima, argmax, argmin, sizes = data
    reduced = {"l": Reduced(maxima[rows], argmax[rows], grid, minima[rows], argmin[rows])}
    return batch_partial(rows, sizes[rows], reduced, k)


def _brute(values: np.ndarray, flat: np.ndarray, k: int, largest: bool, width: int = 4):
    n, units = values.shape
    ids, ys, xs, vals = [], [], [], []
    for unit in range(units):
        order = sorted(
            range(n), key=lambda i: (-values[i, unit] if largest else values[i, unit], i)
        )
        top = order[:k]
        ids.append(top)
        vals.append(values[top, unit])
        ys.append(flat[top, unit] // width)
        xs.append(flat[top, unit] % width)
    return np.array(vals), np.array(ids), np.array(ys), np.array(xs)


def test_merged_batches_equal_a_brute_force_sort_with_ties_broken_by_image_id():
    data = _batches()
    k = 4
    state = None
    for start in range(0, 23, 5):
        state = merge(state, _partial(np.arange(start, min(start + 5, 23)), data, k))
    values, ids, ys, xs = _brute(data[0], data[2], k, True)
    top = state.layers["l"].top
    np.testing.assert_array_equal(top.values, values)
    np.testing.assert_array_equal(top.ids, ids)
    np.testing.assert_array_equal(top.ys, ys)
    np.testing.assert_array_equal(top.xs, xs)
    values, ids, ys, xs = _brute(data[1], data[3], k, False)
    bottom = state.layers["l"].bottom
    np.testing.assert_array_equal(bottom.values, values)
    np.testing.assert_array_equal(bottom.ids, ids)


def test_any_split_and_order_of_batches_gives_the_same_state_bit_for_bit():
    data = _batches(seed=1)
    k = 6
    one = merge(None, _partial(np.arange(23), data, k))
    rng = np.random.default_rng(2)
    for _ in range(5):
        order = rng.permutation(23)
        cuts = np.sort(rng.choice(np.arange(1, 23), size=4, replace=False))
        parts = [_partial(np.sort(rows), data, k) for rows in np.split(order, cuts)]
        # Two shards merged on their own, then together (as Ray workers and the driver would).
        left: TopState | None = None
        right: TopState | None = None
        for index, part in enumerate(parts):
            if index % 2:
                left = merge(left, part)
            else:
                right = merge(right, part)
        assert merge(left, right).equal(one)
        assert merge(right, left).equal(one)


def test_an_image_merged_twice_appears_once_per_unit_and_short_lists_stay_empty():
    data = _batches(seed=3, n=3)
    k = 5
    part = _partial(np.arange(3), data, k)
    state = merge(merge(None, part), part)
    top = state.layers["l"].top
    for row in top.ids:
        real = row[row >= 0]
        assert len(real) == len(set(real.tolist())) == 3
        assert (row[3:] == -1).all()
    assert np.isneginf(top.values[:, 3:]).all()


def test_partials_survive_a_round_trip_through_flat_arrays():
    from wga.corpus.topk import Partial

    data = _batches(seed=4, n=6)
    part = _partial(np.arange(6), data, 3)
    part.skipped[9] = "OSError: truncated"
    again = Partial.from_arrays(part.to_arrays())
    assert again.state.equal(part.state)
    assert again.skipped == {9: "OSError: truncated"}
    np.testing.assert_array_equal(again.maxima["l"], part.maxima["l"])
