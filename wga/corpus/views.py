"""Where a unit fires: crops, activation maps, heat overlays and Grad-CAM, made lazily and cached.

An index stores, per example, the image id and a position on the layer's grid; everything a
person looks at is derived from that on first request and kept in a cache folder (the index's
``cache/`` by default; the server passes a folder under its static root so the page can load
the files). Cached names carry every input (layer, unit, image, position), so a file is either
right or absent; files are written through :mod:`wga.atomic`.

* :func:`crop_file` — the unit's receptive field around the maximum (``Example.crop``, computed
  from the model's layers by :mod:`wga.corpus.receptive`), clipped to the artwork;
* :func:`activation_map` — the unit's map over one whole artwork, fed by the feed rule exactly as
  the probe fed it (so ``map[y, x]`` reproduces a recorded value);
* :func:`overlay_file` — that map, upsampled to the artwork, as a heat overlay: what matters for
  deep layers whose receptive field covers the whole image;
* :func:`grad_cam` — for class units (no spatial map of their own): Grad-CAM (Selvaraju et al.
  2017) on the last spatial layer before the class layer.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from wga.atomic import atomic_path
from wga.corpus.feed import FeedRule, ImageSource, feed_one
from wga.errors import NotFound

if TYPE_CHECKING:
    from wga.corpus.index import Example, ProbeIndex
    from wga.models import LoadedModel

THUMBNAIL_SIDE = 512  # whole artworks on the page
CROP_SIDE = 224  # crops are scaled to at most this side
OVERLAY_ALPHA = 0.6  # heat over the artwork where the unit is at its maximum
HEAT_COLORMAP = "inferno"
JPEG_QUALITY = 88


def cache_dir_for(index: ProbeIndex) -> Path:
    return index.root / "cache"


def image_path(index: ProbeIndex, image_id: int) -> Path:
    """The artwork file of ``image_id``, resolved inside the corpus root (never outside it)."""
    images = index.images()
    if not 0 <= image_id < len(images):
        raise NotFound(
            f"probe {index.name!r} has no image {image_id}: ids run 0 … {len(images) - 1}"
        )
    root = Path(index.description["corpus"]).resolve()
    path = (root / images[image_id]["file"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(
            f"the artwork {images[image_id]['file']!r} is no longer in the corpus {str(root)!r}"
        )
    return path


def _save_jpeg(image: Image.Image, target: Path) -> Path:
    with atomic_path(target) as temp:
        image.convert("RGB").save(temp, format="JPEG", quality=JPEG_QUALITY)
    return target


def _fit(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def thumbnail_file(index: ProbeIndex, image_id: int, cache: Path | None = None) -> Path:
    """The whole artwork, at most :data:`THUMBNAIL_SIDE` px."""
    target = (cache or cache_dir_for(index)) / "images" / f"{image_id}.jpg"
    if not target.exists():
        with Image.open(image_path(index, image_id)) as image:
            image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            _save_jpeg(_fit(image.convert("RGB"), THUMBNAIL_SIDE), target)
    return target


def crop_file(index: ProbeIndex, layer: str, example: Example, cache: Path | None = None) -> Path:
    """The receptive-field crop of ``example`` (original pixels), at most :data:`CROP_SIDE` px."""
    top, left, bottom, right = example.crop
    name = f"{example.image}-{top}-{left}-{bottom}-{right}.jpg"
    target = (cache or cache_dir_for(index)) / "crops" / name
    if not target.exists():
        with Image.open(image_path(index, example.image)) as image:
            region = image.convert("RGB").crop((left, top, right, bottom))
            _save_jpeg(_fit(region, CROP_SIDE), target)
    return target


def model_input(
    path: ImageSource, rule: FeedRule
) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """One image as the feed makes it: ``(1, side, side, 3)`` model input, resized and original size.

    Exactly :func:`wga.corpus.feed.feed_one` (same resize, same preprocessing, zero pad), so a map
    computed here reproduces the probe's recorded values. Raises ``OSError`` for a file that is
    not a readable image.
    """
    batch = feed_one(path, rule)
    if not batch["ok"][0]:
        raise OSError(batch["error"][0])
    shape, size = batch["shapes"][0], batch["sizes"][0]
    return batch["images"], (int(shape[0]), int(shape[1])), (int(size[0]), int(size[1]))


def _layer_model(loaded: LoadedModel, layer: str) -> Any:
    from wga.corpus.probe import build_probe_model
    from wga.vis.features import ModelScopedCache

    global _layer_models
    if _layer_models is None:
        _layer_models = ModelScopedCache()
    return _layer_models.get(
        loaded, ("probe-layer", layer), lambda: build_probe_model(loaded, [layer])[0]
    )


_layer_models: Any = None


def activation_map(
    loaded: LoadedModel, index: ProbeIndex, layer: str, unit: int, image_id: int
) -> np.ndarray:
    """The unit's recorded values (pre-activation where the probe used it) over one artwork.

    Shape: the layer's grid restricted to the image's valid region (the padding cut off).
    """
    from wga.corpus.feed import valid_grid

    info = index.check_unit(layer, unit)
    rule = FeedRule(index.side, index.description["feed"]["preprocessing"])
    batch, shape, _ = model_input(image_path(index, image_id), rule)
    from keras import ops

    output = ops.convert_to_numpy(_layer_model(loaded, layer)(batch, training=False))
    output = np.asarray(output, np.float32)
    if output.ndim == 2:
        return output[0, unit].reshape(1, 1)
    rows, cols = valid_grid(np.asarray([shape]), tuple(info["grid"]), rule.side)[0]
    return output[0, :rows, :cols, unit]


def grad_cam(
    loaded: LoadedModel, index: ProbeIndex, layer: str, unit: int, image_id: int
) -> np.ndarray:
    """Grad-CAM of a class unit over one artwork: ReLU(Σ_c mean(∂logit/∂A_c) · A_c) on the grid of
    the last spatial layer before ``layer``, restricted to the image's valid region.

    The model is cut in two at that layer: the body gives the feature maps ``A``; the head maps
    ``A`` to the class layer's input, and the logit is its affine part (a softmax, if any, is left
    out), so the gradient is taken by the backend's autodiff with respect to ``A`` alone.
    """
    from keras import ops

    from wga.corpus.feed import valid_grid
    from wga.corpus.inference import value_and_gradient
    from wga.models.surgery import cut

    index.check_unit(layer, unit)
    model = loaded.model
    names = [la.name for la in model.layers]
    spatial = [la for la in model.layers[: names.index(layer)] if len(tuple(la.output.shape)) == 4]
    if not spatial:
        raise NotFound(f"layer {layer!r} has no spatial layer before it for Grad-CAM")
    last, dense = spatial[-1], model.get_layer(layer)
    body = cut(model, last.name)
    head = cut(model, dense.input, start=last.output)
    rule = FeedRule(index.side, index.description["feed"]["preprocessing"])
    batch, shape, _ = model_input(image_path(index, image_id), rule)
    features = np.asarray(ops.convert_to_numpy(body(batch, training=False)), np.float32)

    def logit(maps: Any) -> Any:
        pooled = head(maps, training=False)
        return ops.sum(ops.matmul(pooled, dense.kernel[:, unit]) + dense.bias[unit])

    _, gradient = value_and_gradient(logit, features)
    weights = ops.mean(gradient, axis=(1, 2), keepdims=True)
    cam = ops.convert_to_numpy(ops.relu(ops.sum(weights * features, axis=-1)))[0]
    rows, cols = valid_grid(np.asarray([shape]), features.shape[1:3], rule.side)[0]
    return cam[:rows, :cols]


def heat_image(artwork: Image.Image, heat: np.ndarray) -> Image.Image:
    """``heat`` (any grid) upsampled over ``artwork``: colour where high, the artwork where low."""
    from matplotlib import colormaps

    values = np.nan_to_num(np.asarray(heat, np.float32))
    values = np.maximum(values, 0.0)
    peak = float(values.max())
    normalised = values / peak if peak > 0 else values
    small = Image.fromarray((normalised * 255).astype(np.uint8), mode="L")
    weight = np.asarray(small.resize(artwork.size, Image.Resampling.BILINEAR), np.float32) / 255.0
    colours = colormaps[HEAT_COLORMAP](weight)[..., :3]
    base = np.asarray(artwork.convert("RGB"), np.float32) / 255.0
    alpha = (OVERLAY_ALPHA * weight)[..., None]
    blended = base * (1 - alpha) + colours * alpha
    return Image.fromarray((np.clip(blended, 0, 1) * 255).astype(np.uint8))


def overlay_name(layer: str, unit: int, image_id: int) -> str:
    """The cache-relative file name of an overlay (layer names may hold any character)."""
    key = hashlib.sha256(f"{layer}\0{unit}\0{image_id}".encode()).hexdigest()[:16]
    return f"overlays/{key}.jpg"


def overlay_file(
    loaded: LoadedModel,
    index: ProbeIndex,
    layer: str,
    unit: int,
    image_id: int,
    cache: Path | None = None,
) -> Path:
    """The artwork with the unit's activation map (Grad-CAM for a class unit) as a heat overlay."""
    info = index.check_unit(layer, unit)
    target = (cache or cache_dir_for(index)) / overlay_name(layer, unit, image_id)
    if target.exists():
        return target
    if info["kind"] == "class":
        heat = grad_cam(loaded, index, layer, unit, image_id)
    else:
        heat = activation_map(loaded, index, layer, unit, image_id)
    with Image.open(thumbnail_file(index, image_id, cache)) as artwork:
        return _save_jpeg(heat_image(artwork, heat), target)
