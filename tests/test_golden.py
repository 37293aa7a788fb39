"""What users get stays what it was: tiny renders and a small probe against stored golden outputs.

The golden files (``tests/data/golden``) were made by ``tests/golden.py --write``; the tolerances
(2 levels per pixel, identical image ids, values within 1e-4) hold across CPUs, so a refactoring
that changes an image or a ranking fails here, and a faster machine does not.
"""

from __future__ import annotations

import pytest
from golden import (
    PROBE_FILE,
    RENDERS_FILE,
    assert_images_close,
    assert_images_close_across_backends,
    assert_topk_close,
    compute_probe,
    compute_renders,
    load,
    tiny_loaded,
)


@pytest.fixture(scope="module")
def tiny():
    return tiny_loaded()


@pytest.mark.backends
def test_tiny_renders_match_the_golden_images(hed, tiny):
    """The golden images were made on TensorFlow; other backends are held to their own bound."""
    import keras

    renders = compute_renders({"tiny": tiny, "hed": hed})
    if keras.backend.backend() == "tensorflow":
        assert_images_close(renders, load(RENDERS_FILE))
    else:
        assert_images_close_across_backends(renders, load(RENDERS_FILE))


def test_a_small_probe_matches_the_golden_top_k(tiny, tmp_path):
    assert_topk_close(compute_probe(tiny, tmp_path), load(PROBE_FILE))
