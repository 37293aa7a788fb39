"""The atlas layout on synthetic activations: UMAP determinism, normalisation, cells (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from wga.corpus.atlas_layout import embed, grid_level, normalise
from wga.errors import InvalidInput


@pytest.fixture(scope="module")
def clusters() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four well-separated clusters of 16-d non-negative 'activations' from 60 'images'."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 1, (4, 16)) * (rng.uniform(size=(4, 16)) > 0.5)
    labels = np.repeat(np.arange(4), 50)
    vectors = np.maximum(centres[labels] + rng.normal(0, 0.05, (200, 16)), 0).astype("float16")
    images = rng.integers(0, 60, 200)
    return vectors, images, labels


@pytest.fixture(scope="module")
def layout(clusters) -> np.ndarray:
    return embed(clusters[0], seed=3)


def test_same_seed_same_layout_and_clusters_stay_together(clusters, layout):
    vectors, _, labels = clusters
    again = embed(vectors, seed=3)
    np.testing.assert_array_equal(layout, again)
    assert layout.shape == (200, 2) and layout.dtype == np.float32
    centres = np.stack([layout[labels == k].mean(axis=0) for k in range(4)])
    spread = max(np.linalg.norm(layout[labels == k] - centres[k], axis=1).mean() for k in range(4))
    gaps = min(np.linalg.norm(centres[a] - centres[b]) for a in range(4) for b in range(a + 1, 4))
    assert gaps > 2 * spread


def test_normalise_fills_the_square_with_a_margin_and_clips_outliers():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(1000, 2)) * [10.0, 1.0] + [5.0, -3.0]
    points[0] = [1e6, -1e6]
    unit = normalise(points)
    assert unit.min() >= 0.0 and unit.max() <= 1.0
    assert unit[0, 0] == 1.0 and unit[0, 1] == 0.0
    inner = (unit > 0.05) & (unit < 0.95)
    assert inner.mean() > 0.97  # the 1–99 % range plus 10 % margin: only the tails reach edges
    np.testing.assert_allclose(np.percentile(unit, [1, 99], axis=0), [[1 / 12] * 2, [11 / 12] * 2])


def test_cells_count_every_sample_once_and_keep_members_nearest_their_mean(clusters, layout):
    vectors, images, _ = clusters
    unit = normalise(layout)
    for grid in (2, 5, 20):
        level = grid_level(unit, vectors, images, grid)
        assert sum(cell.count for cell in level.cells) + level.dropped == len(vectors)
        assert all(cell.count >= 6 for cell in level.cells)
        keys = [(cell.i, cell.j) for cell in level.cells]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        for cell in level.cells:
            assert 0 <= cell.i < grid and 0 <= cell.j < grid
            members = list(cell.members)
            assert len({int(images[m]) for m in members}) == len(members)
            assert len(members) == min(
                12, len({int(images[m]) for m in _in_cell(unit, grid, cell)})
            )
            np.testing.assert_allclose(
                cell.mean, vectors[_in_cell(unit, grid, cell)].astype("float32").mean(axis=0)
            )
    tiny = grid_level(unit, vectors, images, 80)
    assert tiny.dropped > 0  # fine grids leave sparse cells
    again = grid_level(normalise(embed(vectors, seed=3)), vectors, images, 20)
    assert [(c.i, c.j, c.count, c.members) for c in again.cells] == [
        (c.i, c.j, c.count, c.members) for c in grid_level(unit, vectors, images, 20).cells
    ]


def _in_cell(unit: np.ndarray, grid: int, cell) -> np.ndarray:
    cells = np.minimum((unit * grid).astype(int), grid - 1)
    return np.flatnonzero((cells[:, 1] == cell.i) & (cells[:, 0] == cell.j))


def test_too_few_samples_is_a_clear_error():
    with pytest.raises(InvalidInput, match="at least"):
        embed(np.ones((3, 4), "float32"), seed=0)


def test_sampled_positions_avoid_the_border_are_distinct_and_reproducible():
    from wga.corpus.atlas_sample import _chosen_images, positions_for

    for rows, cols in ((14, 9), (3, 3), (5, 40)):
        chosen = positions_for(7, rows, cols, per_image=6, seed=1)
        assert chosen == positions_for(7, rows, cols, per_image=6, seed=1)
        assert len(set(chosen)) == len(chosen) == min(6, (rows - 2) * (cols - 2))
        assert all(1 <= y < rows - 1 and 1 <= x < cols - 1 for y, x in chosen)
    assert positions_for(7, 14, 9, 6, seed=1) != positions_for(8, 14, 9, 6, seed=1)
    assert positions_for(7, 2, 1, per_image=4, seed=0) == [(0, 0), (1, 0)]  # tiny: all of it
    assert positions_for(7, 0, 0, per_image=4, seed=0) == []
    ids = np.arange(1000)
    capped = _chosen_images(ids, per_image=2, cap=500, seed=3)
    assert len(capped) == 250 and len(set(capped.tolist())) == 250
    np.testing.assert_array_equal(capped, _chosen_images(ids, 2, 500, seed=3))
    np.testing.assert_array_equal(_chosen_images(ids, 2, 10_000, seed=3), ids)
