"""The training input pipeline: a dataset folder → batched, preprocessed ``tf.data`` streams.

A dataset folder is laid out as :mod:`wga.data.layout` says (``wga dataset`` makes one; a plain
``train/<class>/`` + ``val/<class>/`` tree reads too).

What the 2018 notebook got wrong and this module does instead:

* augmentation touches the **training split only** (``ImageDataGenerator`` augmented the
  validation images too, so its validation numbers measured augmented images);
* images keep their **aspect ratio**: the shorter side is resized, then a square is cropped
  (random for training, centred for evaluation) instead of squashing a portrait into a square;
* decoding and resizing happen **once**: the resized images are cached (memory or a file), only
  the cheap random crop, flip and colour jitter run every epoch, and batches are prefetched;
* **class weights** come from the counts (``class_weight='auto'`` did nothing in Keras 2).

TensorFlow is imported inside the functions that build pipelines: ``wga finetune --help`` and
reading a dataset must not start it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wga.data.layout import CLASSES_FILE, COUNTS_FILE, IMAGE_SUFFIXES, SPLITS
from wga.errors import InvalidInput, NotFound
from wga.models import Preprocessing, preprocess

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)


# Train-time resize: shorter side = crop side × 256/224, the margin of the ImageNet recipe
# (Krizhevsky et al. 2012; keras-cv/torchvision reference training), room for the random crop.
TRAIN_RESIZE_RATIO = 256 / 224
# The random crop takes 80–100 % of the shorter side (the 2018 code zoomed by ±0.2).
MIN_CROP_FRACTION = 0.8
# Longer sides beyond 2:1 are centre-cropped before caching: panoramas would bloat the cache.
MAX_ASPECT = 2.0
# Mild colour jitter: colour carries meaning in art (school, period), so keep it small.
BRIGHTNESS_DELTA = 0.08
SATURATION_RANGE = (0.9, 1.1)
# Cache decoded images in memory below this estimate, otherwise in a file next to the run.
MEMORY_CACHE_LIMIT_BYTES = 3 * 1024**3


@dataclass(frozen=True)
class ImageDataset:
    """A dataset folder read from disk: classes, counts, and the files of each split."""

    root: Path
    classes: list[str]
    counts: dict[str, dict[str, int]]

    @property
    def splits(self) -> list[str]:
        """The splits that hold at least one image, in the order train, val, test."""
        return [split for split in SPLITS if sum(self.counts.get(split, {}).values()) > 0]

    def files(self, split: str) -> tuple[list[str], np.ndarray]:
        """Image paths of ``split`` (sorted, so runs are reproducible) and their labels."""
        folder = self.root / split
        if not folder.is_dir():
            raise NotFound(
                f"the dataset {self.root} has no {split!r} split ({folder} is missing); "
                "build it with python -m wga dataset"
            )
        paths: list[str] = []
        labels: list[int] = []
        for label, name in enumerate(self.classes):
            class_dir = folder / name
            if not class_dir.is_dir():
                continue
            found = sorted(
                str(path)
                for path in class_dir.iterdir()
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
            )
            paths.extend(found)
            labels.extend([label] * len(found))
        return paths, np.asarray(labels, dtype="int32")

    def class_counts(self, split: str) -> np.ndarray:
        """Images per class in ``split``, in label order."""
        counts = self.counts.get(split, {})
        return np.asarray([int(counts.get(name, 0)) for name in self.classes], dtype="int64")


def read_dataset(root: str | Path) -> ImageDataset:
    """Read ``classes.json`` and ``counts.json``; counts are recomputed from the files if absent.

    A plain ``train/<class>/``, ``val/<class>/`` tree without ``classes.json`` reads as well
    (classes: the sorted folder names of ``train/``); nothing is written into it.
    Raises :class:`InvalidInput` when the folder is not a dataset or lacks train/val images.
    """
    root = Path(root)
    classes = _read_classes(root)
    counts_path = root / COUNTS_FILE
    counts: dict[str, dict[str, int]] = {}
    if counts_path.exists():
        counts = json.loads(counts_path.read_text())
    dataset = ImageDataset(root, list(classes), counts)
    # The files are the truth: counts.json may be stale after a manual edit.
    actual: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        if (root / split).is_dir():
            _, labels = dataset.files(split)
            actual[split] = {
                name: int((labels == index).sum()) for index, name in enumerate(classes)
            }
    if actual != {split: counts.get(split, {}) for split in actual}:
        if counts:
            log.warning("%s disagrees with the image files; using the files' counts", counts_path)
        dataset = ImageDataset(root, list(classes), actual)
    for split in ("train", "val"):
        if sum(dataset.counts.get(split, {}).values()) == 0:
            raise InvalidInput(
                f"the dataset {root} has no {split} images; fine-tuning needs a train and a "
                "val split (python -m wga dataset … --val 0.1)"
            )
    empty = [name for name in classes if dataset.counts["train"].get(name, 0) == 0]
    if empty:
        raise InvalidInput(
            f"classes without training images in {root}: {', '.join(empty)}; "
            "drop them from classes.json or add images"
        )
    return dataset


def _read_classes(root: Path) -> list[str]:
    """``classes.json``, or else the class folders of a plain ``train/`` + ``val/`` tree."""
    classes_path = root / CLASSES_FILE
    if not classes_path.exists():
        return _folder_classes(root)
    try:
        classes = json.loads(classes_path.read_text())
    except json.JSONDecodeError as error:
        raise InvalidInput(f"{classes_path} is not valid JSON: {error}") from error
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(name, str) for name in classes)
    ):
        raise InvalidInput(f"{classes_path} must be a JSON list of at least two class names")
    return list(classes)


def _folder_classes(root: Path) -> list[str]:
    """The sorted sub-folder names of ``train/`` (as Keras' ``image_dataset_from_directory``
    orders them); ``val/`` may not hold a class that ``train/`` lacks."""
    train, val = root / "train", root / "val"
    if not (train.is_dir() and val.is_dir()):
        raise NotFound(
            f"{root} is not a dataset: it has no {CLASSES_FILE} and no train/ and val/ folders "
            "of class folders; build one with python -m wga dataset --source DIR --by TYPE "
            "--classes a,b,c --out DS, or arrange images as train/<class>/ and val/<class>/"
        )
    classes = sorted(path.name for path in train.iterdir() if path.is_dir())
    if len(classes) < 2:
        raise InvalidInput(
            f"{train} must hold at least two class folders (train/<class>/image.jpg), "
            f"found {len(classes)}"
        )
    unknown = sorted(path.name for path in val.iterdir() if path.is_dir())
    unknown = [name for name in unknown if name not in classes]
    if unknown:
        raise InvalidInput(
            f"{val} has class folders that {train} lacks: {', '.join(unknown)}; "
            "give every class training images or remove those folders"
        )
    return classes


def class_weights(counts: np.ndarray) -> dict[int, float]:
    """``n / (k · n_c)`` per class ("balanced" weighting): rare classes count as much in total."""
    counts = np.asarray(counts, dtype="float64")
    if counts.min() <= 0:
        raise InvalidInput("every class needs at least one training image to weight it")
    weights = counts.sum() / (len(counts) * counts)
    return {index: float(weight) for index, weight in enumerate(weights)}


def cache_bytes_estimate(count: int, size: int, *, training: bool) -> int:
    """About how many bytes the cached (uint8) images of one split will take."""
    side = round(size * TRAIN_RESIZE_RATIO) if training else size
    return int(count * side * side * 1.4 * 3)  # a typical 1.4 aspect after the resize


def _decode(path: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    data = tf.io.read_file(path)
    # decode_image handles JPEG and PNG; expand_animations=False gives a static 3-D tensor.
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_shorter_side(image: tf.Tensor, side: int) -> tf.Tensor:
    """Aspect-preserving resize so that the shorter side is ``side``; longer side ≤ 2 × side."""
    import tensorflow as tf

    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(side, tf.float32) / tf.reduce_min(shape)
    new_shape = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), side)
    resized = tf.image.resize(image, new_shape, method="area", antialias=True)
    limit = round(side * MAX_ASPECT)
    height, width = tf.minimum(new_shape[0], limit), tf.minimum(new_shape[1], limit)
    resized = tf.image.resize_with_crop_or_pad(resized, height, width)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """The centred ``size``² square of an image whose shorter side is ``size``; float in [0, 1]."""
    import tensorflow as tf

    cropped = tf.image.resize_with_crop_or_pad(image, size, size)
    return tf.cast(cropped, tf.float32) / 255.0


def augment(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """Training-only augmentation: random crop (80–100 % of the shorter side), flip, colour.

    ``image`` is uint8 with shorter side ≥ ``size``; returns float ``size``² in [0, 1].
    Stateless random ops keyed by ``seed``, so a run is reproducible.
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, num=6)
    shape = tf.shape(image)
    short = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    fraction = tf.random.stateless_uniform([], seeds[0], MIN_CROP_FRACTION, 1.0)
    crop = tf.maximum(tf.cast(short * fraction, tf.int32), 1)
    crop = tf.minimum(crop, tf.minimum(shape[0], shape[1]))
    window = tf.image.stateless_random_crop(image, tf.stack([crop, crop, 3]), seeds[1])
    window = tf.image.resize(window, (size, size), method="bilinear", antialias=True) / 255.0
    window = tf.image.stateless_random_flip_left_right(window, seeds[2])
    window = tf.image.stateless_random_brightness(window, BRIGHTNESS_DELTA, seeds[3])
    window = tf.image.stateless_random_saturation(window, *SATURATION_RANGE, seeds[4])
    return tf.clip_by_value(window, 0.0, 1.0)


def make_dataset(
    paths: list[str],
    labels: np.ndarray,
    *,
    num_classes: int,
    size: int,
    batch_size: int,
    preprocessing: Preprocessing,
    training: bool,
    seed: int = 0,
    cache: str | Path | bool = True,
    repeat_index: bool = False,
) -> tf.data.Dataset:
    """Batches of ``(preprocessed images, one-hot labels)``.

    ``training=True``: shuffled every epoch, resized with a margin, randomly cropped and
    augmented (:func:`augment`). ``training=False``: file order, centre crop, no randomness at
    all — val and test images are exactly what a user would feed the model.
    ``cache``: ``True`` in memory, a path for a file cache, ``False`` none. The cache holds the
    decoded, resized uint8 images, so decoding happens once per run.
    ``repeat_index`` makes the elements ``(images, labels, index)`` for evaluation.
    """
    import tensorflow as tf

    if not paths:
        raise InvalidInput("no images to feed: the split is empty")
    autotune = tf.data.AUTOTUNE
    side = round(size * TRAIN_RESIZE_RATIO) if training else size
    indices = np.arange(len(paths), dtype="int64")
    data = tf.data.Dataset.from_tensor_slices((list(paths), labels.astype("int32"), indices))

    def load(path: tf.Tensor, label: tf.Tensor, index: tf.Tensor) -> tuple[Any, ...]:
        return resize_shorter_side(_decode(path), side), label, index

    data = data.map(load, num_parallel_calls=autotune, deterministic=True)
    if cache is not False:
        data = data.cache("" if cache is True else str(cache))
    data = _augmented(data, size, seed, len(paths)) if training else _centred(data, size)

    def finish(images: tf.Tensor, label: tf.Tensor, index: tf.Tensor) -> tuple[Any, ...]:
        model_input = preprocess(images, preprocessing)
        one_hot = tf.one_hot(label, num_classes)
        return (model_input, one_hot, index) if repeat_index else (model_input, one_hot)

    data = data.batch(batch_size, drop_remainder=False)
    data = data.map(finish, num_parallel_calls=autotune)
    return data.prefetch(autotune)


def _augmented(data: tf.data.Dataset, size: int, seed: int, count: int) -> tf.data.Dataset:
    """Shuffled every epoch; each element randomly cropped and augmented (:func:`augment`)."""
    import tensorflow as tf

    data = data.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    # A fresh seed pair per element and epoch: the epoch counter comes from a random
    # stream that advances every iteration of the dataset.
    epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    data = tf.data.Dataset.zip((data, epoch_seeds))

    def crop(element: tuple[Any, ...], pair: tf.Tensor) -> tuple[Any, ...]:
        image, label, index = element
        return augment(image, size, pair), label, index

    return data.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)


def _centred(data: tf.data.Dataset, size: int) -> tf.data.Dataset:
    """File order, a centre crop, no randomness at all."""
    import tensorflow as tf

    def crop_center(image: tf.Tensor, label: tf.Tensor, index: tf.Tensor) -> tuple[Any, ...]:
        return center_crop(image, size), label, index

    return data.map(crop_center, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def choose_cache(count: int, size: int, *, training: bool, folder: Path, name: str) -> str | bool:
    """Memory for small splits, a cache file under ``folder`` for large ones."""
    if cache_bytes_estimate(count, size, training=training) <= MEMORY_CACHE_LIMIT_BYTES:
        return True
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{name}*"):
        stale.unlink()  # a half-written cache from an interrupted run would be read as complete
    return str(folder / name)


def load_images01(paths: list[str], size: int) -> np.ndarray:
    """Centre-cropped images in [0, 1] as one array, exactly as evaluation sees them."""
    import tensorflow as tf

    images = [
        center_crop(resize_shorter_side(_decode(tf.constant(path)), size), size).numpy()
        for path in paths
    ]
    return np.stack(images).astype("float32")


def color_correlation(paths: list[str], *, sample: int = 256, side: int = 64) -> np.ndarray:
    """The square root of the images' RGB covariance, normalised like Lucid's ImageNet matrix.

    Lucid decorrelates colours with ``U·sqrt(S)`` of the ImageNet pixel covariance, divided by
    its largest column norm (``shared/notes/featurevis.md``); the same from the training images
    suits a fine-tuned model better. Columns are ordered by variance, the first (luminance)
    made positive.
    """
    from PIL import Image

    if not paths:
        raise InvalidInput("no images to measure colour statistics on")
    rng = np.random.default_rng(0)
    chosen = paths if len(paths) <= sample else list(rng.choice(paths, sample, replace=False))
    pixels = []
    for path in chosen:
        with Image.open(path) as image:
            image.draft("RGB", (side, side))  # JPEG: decode at reduced size, much faster
            small = image.convert("RGB").resize((side, side))
        pixels.append(np.asarray(small, dtype="float64").reshape(-1, 3) / 255.0)
    covariance = np.cov(np.concatenate(pixels), rowvar=False)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    vectors = vectors * np.where(vectors.sum(axis=0) < 0, -1.0, 1.0)
    sqrt = vectors * np.sqrt(values)
    norm = float(np.max(np.linalg.norm(sqrt, axis=0)))
    if not math.isfinite(norm) or norm == 0.0:
        raise InvalidInput("the training images have no colour variance (all one colour?)")
    return (sqrt / norm).astype("float32")
