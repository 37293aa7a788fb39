"""The feed rule: how every corpus image becomes model input, the same way for every consumer.

The probe, the atlas and the Ray executors all read images through :func:`feed`, so their numbers
are comparable and a recorded position can be recomputed later. The rule (DESIGN.md, "A corpus"):

1. the image is decoded whole (Pillow; RGB; JPEGs decoded at a reduced DCT scale when they are
   much larger than needed, which is exact enough and several times faster for WGA scans);
2. it is resized with a bilinear, antialiased filter so that its **longer side** is the model's
   default input side (:attr:`FeedRule.side` = ``spec.input_size``: 224 VGG, 299 InceptionV3),
   aspect ratio kept (the shorter side is rounded, at least 1 px);
3. it is preprocessed for the model (:func:`wga.models.preprocess`) and **padded** at the bottom
   and right with zeros in model space to a ``side × side`` square, so any batch shares one shape
   and a fixed-input model (VGG16 with its top) can take it too. Each image's valid region is
   given as its resized ``(height, width)`` (``shapes``); consumers mask positions outside it
   (:func:`valid_mask`) so padding never wins a maximum or gets sampled.

Because every image is padded to the same square on its own, an image's input does not depend on
which batch it lands in. A file that cannot be decoded is not fatal: it comes through as an
all-zero image with ``ok = False`` and its ``error``; consumers skip and list it.

Batches are ``dict``s of tensors (see :func:`feed`)::

    ids     int64   (B,)             image ids (wga.corpus.corpus: position in sorted file order)
    images  float32 (B, side, side, 3) model input, zero-padded
    shapes  int32   (B, 2)           resized (height, width): the valid region, (0, 0) if not ok
    sizes   int32   (B, 2)           original (height, width), (0, 0) if not ok
    ok      bool    (B,)             decoded?
    error   string  (B,)             why not ("" when ok)

TensorFlow is imported inside the functions that build the pipeline, so that importing this
module (e.g. for :class:`FeedRule` in ``--help`` paths) stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from wga.corpus.corpus import Corpus

if TYPE_CHECKING:
    import tensorflow as tf

    from wga.models import ModelSpec, Preprocessing

# Pillow keeps decoding a JPEG at 1/2, 1/4, 1/8 scale (draft mode) only while the result stays
# at least this many times the target: a margin so the antialiased resize still has detail.
DRAFT_MARGIN = 2


@dataclass(frozen=True)
class FeedRule:
    """The model-dependent part of the rule: the target side and the preprocessing."""

    side: int
    preprocessing: Preprocessing

    @classmethod
    def for_model(cls, spec: ModelSpec) -> FeedRule:
        return cls(int(spec.input_size), spec.preprocessing)

    def as_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "preprocessing": self.preprocessing,
            "resize": "bilinear, antialiased; longer side = side; aspect kept",
            "pad": "zeros in model space, bottom and right, to side x side",
        }


def resized_shape(height: int, width: int, side: int) -> tuple[int, int]:
    """The (height, width) of an image of that size under the feed rule."""
    scale = side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def load_resized(path: str | Path, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The image at ``path`` as float32 RGB in [0, 1], resized by the rule; and its original size.

    Raises ``OSError``/``ValueError`` (Pillow's) for a file that is not a readable image.
    """
    with Image.open(path) as image:
        width, height = image.size
        new_h, new_w = resized_shape(height, width, side)
        if image.format == "JPEG":
            image.draft("RGB", (new_w * DRAFT_MARGIN, new_h * DRAFT_MARGIN))
        rgb = image.convert("RGB")
        if rgb.size != (new_w, new_h):
            rgb = rgb.resize(
                (new_w, new_h), Image.Resampling.BILINEAR
            )  # antialiased when shrinking
        array = np.asarray(rgb, dtype=np.float32) / 255.0
    return array, (height, width)


def _decoder(corpus: Corpus, side: int) -> Any:
    root = corpus.root
    files = corpus.files()

    def decode(image_id: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, bytes]:
        try:
            array, size = load_resized(root / files[int(image_id)], side)
        except Exception as error:  # any decoder failure: skip and list, never stop the pass
            message = f"{type(error).__name__}: {str(error)[:200]}"
            empty = np.zeros((1, 1, 3), np.float32)
            return empty, np.zeros(2, np.int32), np.zeros(2, np.int32), False, message.encode()
        shape = np.asarray(array.shape[:2], np.int32)
        return array, shape, np.asarray(size, np.int32), True, b""

    return decode


def feed(
    corpus: Corpus,
    rule: FeedRule,
    ids: Sequence[int] | np.ndarray,
    batch_size: int,
    *,
    prefetch: int | None = None,
) -> tf.data.Dataset:
    """A tf.data pipeline of batches (the dict in the module docstring) over ``ids``, in order.

    Decoding runs in parallel (``num_parallel_calls=AUTOTUNE``, order kept) and batches are
    prefetched. Batch ``j`` holds ``ids[j*B:(j+1)*B]`` — all images, decoded or not — so callers
    that pass whole chunks (:func:`chunks`) in ascending order get exactly one batch per chunk.
    """
    import tensorflow as tf

    from wga.models import preprocess

    side = rule.side
    decode = _decoder(corpus, side)

    def load(image_id: tf.Tensor) -> dict[str, tf.Tensor]:
        image, shape, size, ok, error = tf.numpy_function(
            decode, [image_id], [tf.float32, tf.int32, tf.int32, tf.bool, tf.string]
        )
        image = tf.ensure_shape(image, [None, None, 3])
        model_input = preprocess(image, rule.preprocessing)
        model_input = tf.where(ok, model_input, tf.zeros_like(model_input))
        padded = tf.image.pad_to_bounding_box(model_input, 0, 0, side, side)
        return {
            "ids": tf.cast(image_id, tf.int64),
            "images": tf.ensure_shape(padded, [side, side, 3]),
            "shapes": tf.ensure_shape(shape, [2]),
            "sizes": tf.ensure_shape(size, [2]),
            "ok": tf.ensure_shape(ok, []),
            "error": tf.ensure_shape(error, []),
        }

    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(ids, dtype=np.int64))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE if prefetch is None else prefetch)


def chunks(n_images: int, batch_size: int) -> list[np.ndarray]:
    """Image ids cut into batches: chunk ``j`` is ids ``j*B … (j+1)*B - 1`` (the last may be short).

    A probe checkpoints whole chunks, so a resumed run feeds the same batches as an uninterrupted
    one; any executor (local, Ray) works chunk by chunk.
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    return [
        np.arange(start, min(start + batch_size, n_images), dtype=np.int64)
        for start in range(0, n_images, batch_size)
    ]


def valid_grid(shapes: np.ndarray, grid_hw: tuple[int, int], side: int) -> np.ndarray:
    """Per image, how many rows and columns of a ``grid_hw`` feature map lie on the image.

    A position counts when the part of the input it sits over (``side / grid`` pixels a step)
    starts inside the resized image: ``ceil(valid_pixels × grid / side)``. Works on numpy or,
    through the same arithmetic, inside a ``tf.function`` (see :func:`valid_mask`).
    """
    grid = np.asarray(grid_hw, dtype=np.int64)
    return np.ceil(np.asarray(shapes, dtype=np.int64) * grid / side).astype(np.int32)


def valid_mask(shapes: Any, grid_hw: tuple[int, int], side: int) -> Any:
    """``(B, H, W)`` bool tensor: True where a feature map position lies on its image.

    ``shapes`` is the batch's ``shapes`` (resized height, width; (0, 0) for a failed image, whose
    mask is all False). The atlas samples inside it; the probe sets everything outside it to -inf
    (or +inf for minima) before reducing.
    """
    import tensorflow as tf

    height, width = grid_hw
    shapes = tf.cast(shapes, tf.float64)
    rows = tf.math.ceil(shapes[:, 0] * height / side)
    cols = tf.math.ceil(shapes[:, 1] * width / side)
    y = tf.range(height, dtype=tf.float64)[None, :, None]
    x = tf.range(width, dtype=tf.float64)[None, None, :]
    return (y < rows[:, None, None]) & (x < cols[:, None, None])
