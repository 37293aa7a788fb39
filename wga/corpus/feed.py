"""The feed rule: how every corpus image becomes model input, the same way for every consumer.

The probe, the atlas, the artwork view and the executors all read images through :func:`feed`
(or :func:`feed_one` for one image outside a corpus), so their numbers are comparable and a
recorded position can be recomputed later. The rule (DESIGN.md, "A corpus"):

1. the image is decoded whole (Pillow; RGB; JPEGs decoded at a reduced DCT scale when they are
   much larger than needed, which is exact enough and several times faster for WGA scans);
2. it is resized with a bilinear, antialiased filter so that its **longer side** is the model's
   default input side (:attr:`FeedRule.side` = ``spec.input_size``: 224 VGG, 299 InceptionV3),
   aspect ratio kept (the shorter side is rounded, at least 1 px);
3. it is preprocessed for the model (:func:`model_array`, the numpy twin of
   :func:`wga.models.preprocess`) and **padded** at the bottom and right with zeros in model
   space to a ``side × side`` square, so any batch shares one shape and a fixed-input model
   (VGG16 with its top) can take it too. Each image's valid region is given as its resized
   ``(height, width)`` (``shapes``); consumers mask positions outside it (:func:`position_mask`)
   so padding never wins a maximum or gets sampled.

Because every image is padded to the same square on its own, an image's input does not depend on
which batch it lands in. A file that cannot be decoded is not fatal: it comes through as an
all-zero image with ``ok = False`` and its ``error``; consumers skip and list it.

Batches are ``dict``s of **numpy arrays** (never backend tensors: the feed is the same on
TensorFlow, JAX and PyTorch, and nothing here imports any of them)::

    ids     int64   (B,)               image ids (wga.corpus.corpus: position in sorted file order)
    images  float32 (B, side, side, 3) model input, zero-padded
    shapes  int32   (B, 2)             resized (height, width): the valid region, (0, 0) if not ok
    sizes   int32   (B, 2)             original (height, width), (0, 0) if not ok
    ok      bool    (B,)               decoded?
    error   object  (B,)               why not, as str ("" when ok)

Decoding runs in a thread pool (Pillow releases the GIL while it decodes and resizes, numpy while
it preprocesses), a few batches ahead of the consumer (``prefetch``).
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image

from wga.corpus.corpus import Corpus
from wga.errors import InvalidInput

if TYPE_CHECKING:
    from wga.models import ModelSpec, Preprocessing

# Pillow keeps decoding a JPEG at 1/2, 1/4, 1/8 scale (draft mode) only while the result stays
# at least this many times the target: a margin so the antialiased resize still has detail.
DRAFT_MARGIN = 2
# Batches decoded ahead of the consumer: enough to hide a slow JPEG behind the model's step.
DEFAULT_PREFETCH = 2
# Decoding threads: Pillow scales with cores until memory bandwidth; more only adds contention.
MAX_WORKERS = 8

ImageSource = str | os.PathLike[str] | bytes | BinaryIO
EXTERNAL_ID = -1  # the ``ids`` entry of an image fed by feed_one (it is in no corpus)


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


def load_resized(source: ImageSource, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The image (a file, its bytes, or an open binary file) as float32 RGB in [0, 1], resized
    by the rule; and its original size.

    Raises ``OSError``/``ValueError`` (Pillow's) for something that is not a readable image.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
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


def model_array(images01: np.ndarray, mode: Preprocessing) -> np.ndarray:
    """:func:`wga.models.preprocess` in numpy, float32 op for float32 op, so the feed's input is
    bit for bit the one the backend op would give (a test holds the two together)."""
    from wga.models.preprocessing import CAFFE_BGR_MEAN, TORCH_RGB_MEAN, TORCH_RGB_STD

    images = np.asarray(images01, np.float32)
    if mode == "tf":
        return images * np.float32(2.0) - np.float32(1.0)
    if mode == "raw":
        return images * np.float32(255.0)
    if mode == "caffe":
        return images[..., ::-1] * np.float32(255.0) - np.asarray(CAFFE_BGR_MEAN, np.float32)
    if mode == "torch":
        mean = np.asarray(TORCH_RGB_MEAN, np.float32)
        return (images - mean) / np.asarray(TORCH_RGB_STD, np.float32)
    raise InvalidInput(f"unknown preprocessing {mode!r}: use one of caffe, tf, torch, raw")


@dataclass(frozen=True)
class _Decoded:
    image: np.ndarray  # (side, side, 3) float32, model input, zero-padded
    shape: tuple[int, int]
    size: tuple[int, int]
    error: str  # "" when decoded


def _decode(source: ImageSource, rule: FeedRule) -> _Decoded:
    padded = np.zeros((rule.side, rule.side, 3), np.float32)
    try:
        array, size = load_resized(source, rule.side)
    except Exception as error:  # any decoder failure: skip and list, never stop the pass
        return _Decoded(padded, (0, 0), (0, 0), f"{type(error).__name__}: {str(error)[:200]}")
    height, width = array.shape[:2]
    padded[:height, :width] = model_array(array, rule.preprocessing)
    return _Decoded(padded, (height, width), size, "")


def _batch(ids: Sequence[int], decoded: Sequence[_Decoded]) -> dict[str, np.ndarray]:
    errors = np.empty(len(decoded), dtype=object)
    errors[:] = [d.error for d in decoded]
    return {
        "ids": np.asarray(ids, np.int64),
        "images": np.stack([d.image for d in decoded]),
        "shapes": np.asarray([d.shape for d in decoded], np.int32).reshape(-1, 2),
        "sizes": np.asarray([d.size for d in decoded], np.int32).reshape(-1, 2),
        "ok": np.asarray([not d.error for d in decoded], bool),
        "error": errors,
    }


def default_workers() -> int:
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))


def feed(
    corpus: Corpus,
    rule: FeedRule,
    ids: Sequence[int] | np.ndarray,
    batch_size: int,
    *,
    prefetch: int | None = None,
    workers: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Batches (the dict in the module docstring) over ``ids``, in order.

    Images decode in ``workers`` threads while up to ``prefetch`` further batches
    (:data:`DEFAULT_PREFETCH`) wait for the consumer. Batch ``j`` holds
    ``ids[j*B:(j+1)*B]`` — all images, decoded or not — so callers that pass whole chunks
    (:func:`chunks`) in ascending order get exactly one batch per chunk. Leaving the loop early
    cancels the decodes not yet started.
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    order = [int(i) for i in np.asarray(ids, np.int64).reshape(-1)]
    if not order:
        return
    root = corpus.root
    files = corpus.files()
    ahead = (DEFAULT_PREFETCH if prefetch is None else max(0, prefetch)) + 1
    pool = ThreadPoolExecutor(workers or default_workers(), thread_name_prefix="wga-feed")
    pending: deque[Future[_Decoded]] = deque()
    submitted = 0
    try:
        for start in range(0, len(order), batch_size):
            end = min(start + batch_size, len(order))
            limit = min(len(order), start + ahead * batch_size)
            while submitted < limit:
                path = root / files[order[submitted]]
                pending.append(pool.submit(_decode, path, rule))
                submitted += 1
            decoded = [pending.popleft().result() for _ in range(end - start)]
            yield _batch(order[start:end], decoded)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def feed_one(source: ImageSource, rule: FeedRule) -> dict[str, np.ndarray]:
    """One image outside a corpus (a file, uploaded bytes, an open binary file) as a feed batch
    of one.

    The same rule and the same dict as :func:`feed` (``ids`` is ``[-1]``): an uploaded artwork
    is compared with the corpus on exactly the probe's input. A file that cannot be decoded gives
    ``ok = [False]`` and its ``error``, as in a corpus pass.
    """
    source = Path(source) if isinstance(source, str | os.PathLike) else source
    return _batch([EXTERNAL_ID], [_decode(source, rule)])


class ChunkFeed:
    """``{"ids": chunk}`` → the feed's batch of those images: how an executor's rows (one chunk
    of image ids each) become model input, wherever the CPUs are (a Ray task, or a thread of
    this process). Picklable: it carries the corpus root and the rule; the listing is read again
    where it runs."""

    def __init__(self, root: str | Path, rule: FeedRule) -> None:
        self.root = str(root)
        self.rule = rule
        self._corpus: Corpus | None = None

    def __call__(self, row: dict[str, Any]) -> dict[str, np.ndarray]:
        from wga.corpus.corpus import open_corpus

        if self._corpus is None:
            self._corpus = open_corpus(self.root)
        ids = np.asarray(row["ids"], np.int64)
        return next(iter(feed(self._corpus, self.rule, ids, len(ids), prefetch=0)))

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "rule": self.rule, "_corpus": None}


def chunk_rows(chunks: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Chunks of image ids as the rows of an executor's dataset pass (one batch each)."""
    return [{"ids": np.asarray(chunk, np.int64)} for chunk in chunks]


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
    starts inside the resized image: ``ceil(valid_pixels × grid / side)``.
    """
    grid = np.asarray(grid_hw, dtype=np.int64)
    return np.ceil(np.asarray(shapes, dtype=np.int64) * grid / side).astype(np.int32)


def position_mask(shapes: np.ndarray, grid_hw: tuple[int, int], side: int) -> np.ndarray:
    """``(B, H, W)`` bool: True where a feature map position lies on its image.

    ``shapes`` is the batch's ``shapes`` (resized height, width; (0, 0) for a failed image, whose
    mask is all False). Computed on the driver side, in numpy: the atlas samples inside it; the
    probe's compiled reduction takes it as an input and sets everything outside it to -inf (or
    +inf for minima) before reducing.
    """
    height, width = grid_hw
    valid = valid_grid(shapes, grid_hw, side)
    rows = np.arange(height)[None, :, None] < valid[:, 0, None, None]
    cols = np.arange(width)[None, None, :] < valid[:, 1, None, None]
    return rows & cols
