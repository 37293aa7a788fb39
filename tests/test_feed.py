"""The feed seam: numpy batches without TensorFlow, one image outside a corpus, masks in numpy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wga.corpus.corpus import open_corpus
from wga.corpus.feed import EXTERNAL_ID, FeedRule, feed, feed_one, position_mask, valid_grid


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("feed")
    rng = np.random.default_rng(3)
    for index, (height, width) in enumerate([(90, 40), (33, 70), (64, 64), (120, 80), (50, 51)]):
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"im{index}.{'jpg' if index % 2 else 'png'}")
    (root / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    return root


def test_batches_are_numpy_in_the_seams_dtypes_and_shapes(folder):
    corpus = open_corpus(folder)
    batches = list(feed(corpus, FeedRule(48, "caffe"), np.arange(len(corpus)), 4))
    assert [len(b["ids"]) for b in batches] == [4, 2]
    for batch in batches:
        assert all(isinstance(value, np.ndarray) for value in batch.values())
        assert batch["ids"].dtype == np.int64
        assert batch["images"].dtype == np.float32 and batch["images"].shape[1:] == (48, 48, 3)
        assert batch["shapes"].dtype == np.int32 and batch["shapes"].shape[1:] == (2,)
        assert batch["sizes"].dtype == np.int32 and batch["ok"].dtype == bool
        assert batch["error"].dtype == object and all(isinstance(e, str) for e in batch["error"])
    last = batches[-1]
    assert last["ok"].tolist() == [True, False]
    assert last["error"][1].startswith(("UnidentifiedImageError", "OSError", "SyntaxError"))
    assert (last["images"][1] == 0).all() and last["shapes"][1].tolist() == [0, 0]


def test_order_and_content_do_not_depend_on_batching_prefetch_or_threads(folder):
    corpus = open_corpus(folder)
    rule = FeedRule(40, "torch")
    ids = np.asarray([4, 0, 2, 5, 1, 3])
    reference = next(iter(feed(corpus, rule, ids, 6, prefetch=0, workers=1)))
    for batch_size, prefetch, workers in [(1, 0, 1), (2, 3, 4), (4, None, None)]:
        parts = list(feed(corpus, rule, ids, batch_size, prefetch=prefetch, workers=workers))
        for key in ("ids", "images", "shapes", "sizes", "ok"):
            joined = np.concatenate([part[key] for part in parts])
            np.testing.assert_array_equal(joined, reference[key])
    assert reference["ids"].tolist() == ids.tolist()


def test_leaving_the_loop_early_stops_the_feed(folder):
    corpus = open_corpus(folder)
    stream = feed(corpus, FeedRule(32, "tf"), np.arange(len(corpus)), 1)
    first = next(stream)
    stream.close()  # cancels the decodes not yet started and joins the threads
    assert first["ids"].tolist() == [0]


def test_feed_one_gives_the_corpus_batch_for_a_file_and_for_its_bytes(folder):
    corpus = open_corpus(folder)
    rule = FeedRule(56, "caffe")
    batch = next(iter(feed(corpus, rule, np.arange(len(corpus)), len(corpus))))
    for image_id in range(len(corpus)):
        path = corpus.path(image_id)
        for single in (feed_one(path, rule), feed_one(path.read_bytes(), rule)):
            assert single["ids"].tolist() == [EXTERNAL_ID]
            for key in ("images", "shapes", "sizes", "ok"):
                np.testing.assert_array_equal(single[key][0], batch[key][image_id])
    bad = feed_one(b"neither a jpeg nor a png", rule)
    assert bad["ok"].tolist() == [False] and bad["error"][0]


@pytest.mark.backends
def test_numpy_preprocessing_is_the_models_bit_for_bit():
    import keras
    from keras import ops

    from wga.corpus.feed import model_array
    from wga.models import preprocess

    pixels = np.random.default_rng(0).random((5, 7, 3), dtype=np.float32)
    for mode in ("caffe", "tf", "torch", "raw"):
        tensor = ops.convert_to_numpy(preprocess(ops.convert_to_tensor(pixels), mode))
        if keras.backend.backend() == "tensorflow":
            np.testing.assert_array_equal(model_array(pixels, mode), tensor)
        else:  # XLA may divide by multiplying with the reciprocal: one float32 ulp at most
            np.testing.assert_array_max_ulp(model_array(pixels, mode), tensor, maxulp=1)


def test_position_mask_keeps_the_valid_grid_and_nothing_of_a_failed_image():
    shapes = np.asarray([[224, 100], [0, 0], [37, 224]], np.int32)
    mask = position_mask(shapes, (14, 14), 224)
    assert mask.shape == (3, 14, 14) and mask.dtype == bool
    rows_cols = valid_grid(shapes, (14, 14), 224)
    for image, (rows, cols) in enumerate(rows_cols):
        assert mask[image].sum() == rows * cols
        assert mask[image, :rows, :cols].all()
    assert rows_cols.tolist() == [[14, 7], [0, 0], [3, 14]]
