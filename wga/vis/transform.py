"""Random transformations applied to the image inside the compiled step ("transformation
robustness"): an image that still activates the unit after being padded, shifted, scaled and
rotated a little is made of features, not of adversarial pixel noise.

Lucid's standard stack (``lucid/optvis/transform.py``) is pad 12 (grey) → jitter 8 → random scale
→ random rotate → jitter 4, for 128 px images. Here the whole stack is ONE affine resampling per
batch element (:func:`affine_resample`, bilinear, on ``keras.ops``): cheaper than five ops, and
exact up to the final bilinear interpolation. Offsets scale with the image size, as in Xplique,
so large renders are regularised like small ones.

The randomness is drawn on the host, in NumPy, from a counter-based hash of ``(seed, step,
stream)`` (:func:`uniform_integers`): an image depends on its own seed only, never on which
other images share the batch, and TensorFlow, JAX and PyTorch see the very same transformations
(the step takes the matrices as an input), so one recipe gives the same image on each.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

LUCID_REFERENCE_SIZE = 128  # the image side Lucid's standard transforms were tuned for
LUCID_PAD = 12  # Lucid standard_transforms: pad(12, mode="constant", constant_value=.5)
LUCID_JITTER_FIRST = 8  # Lucid standard_transforms: jitter(8)
LUCID_JITTER_LAST = 4  # Lucid standard_transforms: jitter(4)
LUCID_SCALES = tuple(1 + (i - 5) / 50.0 for i in range(11))  # Lucid: 0.90, 0.92, … 1.10
LUCID_ANGLES = tuple(range(-10, 11)) + (0,) * 5  # Lucid: random_rotate(range(-10, 11) + 5*[0])
PAD_VALUE = 0.5  # Lucid pads with mid grey
MAX_MODEL_SIDE = 768  # larger canvases are cropped at random: see TransformStack.max_output


@dataclass(frozen=True)
class TransformStack:
    """Pad, jitter, scale, rotate, jitter — sized for a ``size`` px image.

    ``strength`` multiplies all offsets (1.0 = Lucid at 128 px, scaled linearly with size).
    ``max_output``: the model never sees more than this side; a larger canvas is cropped at a
    random place each step. Memory of a step grows with the pixels the model sees (VGG16 at
    1120² needs 4.3 GB, mostly the im2col buffer of its first 64-channel convolutions), so this
    keeps a 1024 px render under 4 GB; each step then refines part of the image, like the random
    crops of MACO / Lucid's tiling.
    """

    size: int
    scales: tuple[float, ...] = LUCID_SCALES
    angles: tuple[float, ...] = LUCID_ANGLES
    strength: float = 1.0
    max_output: int | None = MAX_MODEL_SIDE

    def _px(self, value: int) -> int:
        return max(0, round(value * self.strength * self.size / LUCID_REFERENCE_SIZE))

    @property
    def pad(self) -> int:
        return self._px(LUCID_PAD)

    @property
    def jitter_first(self) -> int:
        return self._px(LUCID_JITTER_FIRST)

    @property
    def jitter_last(self) -> int:
        return self._px(LUCID_JITTER_LAST)

    @property
    def canvas_size(self) -> int:
        """Side of the padded canvas minus both jitter crops (Lucid's output size)."""
        return self.size + 2 * self.pad - self.jitter_first - self.jitter_last

    @property
    def output_size(self) -> int:
        """Side of the transformed image the model sees."""
        if self.max_output is None:
            return self.canvas_size
        return min(self.canvas_size, self.max_output)

    def matrices(self, seeds: np.ndarray, step: int) -> np.ndarray:
        """One flattened projective matrix per element, ``(B, 8)`` float32, mapping output →
        input pixels (TensorFlow's ``ImageProjectiveTransform`` convention).

        The chain, inverted: output pixel ``o`` → crop of the last jitter (``+ t2``) → scale and
        rotation about the canvas centre (``c + R(-θ)/s · (· - c)``) → crop of the first jitter
        (``+ t1``) → unpadded image (``- pad``).
        """
        seeds = np.asarray(seeds, dtype="int64").reshape(-1)
        pad, j1, j2 = self.pad, self.jitter_first, self.jitter_last
        spare = self.canvas_size - self.output_size
        t1x, t1y = (uniform_integers(seeds, step, s, j1 + 1) for s in (0, 1))
        t2x, t2y = (
            uniform_integers(seeds, step, s, j2 + 1)
            + uniform_integers(seeds, step, s + 4, spare + 1)
            for s in (2, 3)
        )
        scale = np.asarray(self.scales, "float64")[
            uniform_integers(seeds, step, 8, len(self.scales))
        ]
        angle = np.asarray(self.angles, "float64")[
            uniform_integers(seeds, step, 9, len(self.angles))
        ]
        theta = angle * (math.pi / 180.0)
        cos, sin = np.cos(theta) / scale, np.sin(theta) / scale
        centre = (self.canvas_size + j2 - 1) / 2.0
        # p_in = A (o + t2 - c) + c + t1 - pad, with A = [[cos, sin], [-sin, cos]] / s
        # (t2 includes the random crop of a canvas larger than max_output)
        ox, oy = t2x - centre, t2y - centre
        a2 = cos * ox + sin * oy + centre + t1x - pad
        b2 = -sin * ox + cos * oy + centre + t1y - pad
        zeros = np.zeros_like(cos)
        return np.stack([cos, sin, a2, -sin, cos, b2, zeros, zeros], axis=1).astype("float32")

    def __call__(self, images: Any, matrices: Any) -> Any:
        """Transform ``(B, size, size, 3)`` images → ``(B, output_size, output_size, 3)`` with
        the ``(B, 8)`` :meth:`matrices` of the step."""
        from wga.vis.backends import active

        resample = active().affine_resample or affine_resample
        return resample(images, matrices, self.output_size, PAD_VALUE)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a well-mixed 64-bit hash of each value (wraps on overflow)."""
    z = values + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform_integers(seeds: np.ndarray, step: int, stream: int, high: int) -> np.ndarray:
    """One integer in ``[0, high)`` per seed, a pure function of ``(seed, step, stream)``.

    Counter-based (a hash, no generator state): any element, any step, in any order or process,
    on any backend draws the same number; vectorised, so a batch costs microseconds.
    """
    with np.errstate(over="ignore"):
        key = _splitmix64(np.asarray(seeds).astype("uint64"))
        key = _splitmix64(key ^ np.uint64(int(step) & 0xFFFFFFFFFFFFFFFF))
        key = _splitmix64(key ^ np.uint64(stream))
    return ((key >> np.uint64(11)) % np.uint64(max(1, int(high)))).astype("int64")


def affine_resample(images: Any, matrices: Any, side: int, fill: float) -> Any:
    """Bilinear resampling of ``(B, H, W, C)`` images to ``(B, side, side, C)``: output pixel
    ``(x, y)`` reads input ``(a0 x + a1 y + a2, b0 x + b1 y + b2)`` (TensorFlow's projective
    convention, last row ``0, 0``); neighbours outside the image read ``fill``.

    Written with gathers on ``keras.ops`` (``keras.ops.image.affine_transform`` keeps the input
    size, interpolates along the channels too, and measured 12× slower on JAX). Its gradient is
    TensorFlow's definition for its own kernel (the engine's transform before the port, and
    still its fast path there): the output's gradient resampled back through the inverse
    transform — not the exact adjoint of bilinear sampling, but cheap (a gather, no scatter),
    and what the presets were tuned with. So every backend differentiates alike.
    """
    height, width = int(images.shape[1]), int(images.shape[2])
    return _resampler(side, height, width, float(fill))(images, matrices)


@lru_cache(maxsize=64)
def _resampler(side: int, height: int, width: int, fill: float) -> Callable[[Any, Any], Any]:
    from keras import ops

    @ops.custom_gradient
    def resample(images: Any, matrices: Any) -> tuple[Any, Callable[..., Any]]:
        out = _bilinear(images, matrices, side, side, fill)

        def grad(*args: Any, upstream: Any = None) -> tuple[Any, Any]:
            dy = args[-1] if upstream is None else upstream  # PyTorch passes it by keyword
            back = _bilinear(dy, _inverse(matrices), height, width, 0.0)
            return back, ops.zeros_like(matrices)

        return out, grad

    return resample


def _inverse(matrices: Any) -> Any:
    """The flat ``(B, 8)`` affine matrices of the inverse maps."""
    from keras import ops

    a0, a1, a2, b0, b1, b2 = (matrices[:, i] for i in range(6))
    det = a0 * b1 - a1 * b0
    i0, i1, i3, i4 = b1 / det, -a1 / det, -b0 / det, a0 / det
    zeros = ops.zeros_like(a0)
    return ops.stack(
        [i0, i1, -(i0 * a2 + i1 * b2), i3, i4, -(i3 * a2 + i4 * b2), zeros, zeros], axis=1
    )


def _bilinear(images: Any, matrices: Any, out_height: int, out_width: int, fill: float) -> Any:
    from keras import ops

    height, width, channels = (int(d) for d in images.shape[1:])
    m = ops.cast(matrices, "float32")[:, :, None, None]
    xs = ops.arange(out_width, dtype="float32")[None, None, :]
    ys = ops.arange(out_height, dtype="float32")[None, :, None]
    x = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]  # (B, out_height, out_width)
    y = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    x0, y0 = ops.floor(x), ops.floor(y)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    flat = ops.reshape(images, (-1, height * width, channels))

    def corner(yi: Any, xi: Any) -> Any:
        inside = (yi >= 0) & (yi <= height - 1) & (xi >= 0) & (xi <= width - 1)
        yc = ops.cast(ops.clip(yi, 0, height - 1), "int32")
        xc = ops.cast(ops.clip(xi, 0, width - 1), "int32")
        index = ops.reshape(yc * width + xc, (-1, out_height * out_width, 1))
        values = ops.take_along_axis(flat, index, axis=1)
        values = ops.reshape(values, (-1, out_height, out_width, channels))
        return ops.where(inside[..., None], values, ops.cast(fill, values.dtype))

    top = corner(y0, x0) * (1 - wx) + corner(y0, x0 + 1) * wx
    bottom = corner(y0 + 1, x0) * (1 - wx) + corner(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def median_filter(images: np.ndarray, size: int = 5) -> np.ndarray:
    """A ``size``×``size`` median per image and channel, edges mirrored (the 2018 original's
    regulariser; NumPy, between steps)."""
    from scipy.ndimage import median_filter as scipy_median

    return scipy_median(np.asarray(images), size=(1, size, size, 1), mode="mirror")
