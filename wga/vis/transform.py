"""Random transformations applied to the image inside the compiled step ("transformation
robustness"): an image that still activates the unit after being padded, shifted, scaled and
rotated a little is made of features, not of adversarial pixel noise.

Lucid's standard stack (``lucid/optvis/transform.py``) is pad 12 (grey) → jitter 8 → random scale
→ random rotate → jitter 4, for 128 px images. Here the whole stack is ONE affine resampling per
batch element (``tf.raw_ops.ImageProjectiveTransformV3`` takes one matrix per element): cheaper
than five ops, and exact up to the final bilinear interpolation. Offsets scale with the image
size, as in Xplique, so large renders are regularised like small ones.

Every element draws its transformation from ``(seed_i, step)`` with stateless random ops: an
image depends on its own seed only, never on which other images share the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

LUCID_REFERENCE_SIZE = 128  # the image side Lucid's standard transforms were tuned for
LUCID_PAD = 12  # Lucid standard_transforms: pad(12, mode="constant", constant_value=.5)
LUCID_JITTER_FIRST = 8  # Lucid standard_transforms: jitter(8)
LUCID_JITTER_LAST = 4  # Lucid standard_transforms: jitter(4)
LUCID_SCALES = tuple(1 + (i - 5) / 50.0 for i in range(11))  # Lucid: 0.90, 0.92, … 1.10
LUCID_ANGLES = tuple(range(-10, 11)) + (0,) * 5  # Lucid: random_rotate(range(-10, 11) + 5*[0])
PAD_VALUE = 0.5  # Lucid pads with mid grey


@dataclass(frozen=True)
class TransformStack:
    """Pad, jitter, scale, rotate, jitter — sized for a ``size`` px image.

    ``strength`` multiplies all offsets (1.0 = Lucid at 128 px, scaled linearly with size).
    """

    size: int
    scales: tuple[float, ...] = LUCID_SCALES
    angles: tuple[float, ...] = LUCID_ANGLES
    strength: float = 1.0

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
    def output_size(self) -> int:
        """Side of the transformed image the model sees (the padded canvas minus both crops)."""
        return self.size + 2 * self.pad - self.jitter_first - self.jitter_last

    def matrices(self, seeds: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """One flattened projective matrix per element, ``(B, 8)``, mapping output → input pixels.

        The chain, inverted: output pixel ``o`` → crop of the last jitter (``+ t2``) → scale and
        rotation about the canvas centre (``c + R(-θ)/s · (· - c)``) → crop of the first jitter
        (``+ t1``) → unpadded image (``- pad``).
        """
        pad, j1, j2 = self.pad, self.jitter_first, self.jitter_last
        step = tf.cast(step, tf.int64)

        def draw(seed: tf.Tensor) -> tf.Tensor:
            seed = tf.cast(seed, tf.int64)

            def pair(stream: int) -> tf.Tensor:  # three independent streams per (seed, step)
                return tf.stack([seed, step * 3 + stream])

            first = tf.random.stateless_uniform([2], pair(0), 0, j1 + 1, dtype=tf.int64)
            last = tf.random.stateless_uniform([2], pair(1), 0, j2 + 1, dtype=tf.int64)
            choice = tf.random.stateless_uniform([2], pair(2), 0, 1 << 30, dtype=tf.int64)
            scale = tf.gather(tf.constant(self.scales, tf.float32), choice[0] % len(self.scales))
            angle = tf.gather(tf.constant(self.angles, tf.float32), choice[1] % len(self.angles))
            return tf.concat(
                [tf.cast(first, tf.float32), tf.cast(last, tf.float32), [scale, angle]], axis=0
            )

        draws = tf.map_fn(draw, seeds, fn_output_signature=tf.TensorSpec([6], tf.float32))
        t1x, t1y, t2x, t2y, scale, angle = tf.unstack(draws, axis=1)
        theta = angle * (math.pi / 180.0)
        cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
        centre = (self.output_size + j2 - 1) / 2.0
        # p_in = A (o + t2 - c) + c + t1 - pad, with A = [[cos, sin], [-sin, cos]] / s
        ox, oy = t2x - centre, t2y - centre
        a2 = cos * ox + sin * oy + centre + t1x - pad
        b2 = -sin * ox + cos * oy + centre + t1y - pad
        zeros = tf.zeros_like(cos)
        return tf.stack([cos, sin, a2, -sin, cos, b2, zeros, zeros], axis=1)

    def __call__(self, images: tf.Tensor, seeds: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """Transform ``(B, size, size, 3)`` images → ``(B, output_size, output_size, 3)``."""
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=self.matrices(seeds, step),
            output_shape=tf.constant([self.output_size, self.output_size], tf.int32),
            fill_value=tf.constant(PAD_VALUE, images.dtype),
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )


def median_filter(images: tf.Tensor, size: int = 5) -> tf.Tensor:
    """A ``size``×``size`` median per channel, edges reflected (the 2018 original's regulariser)."""
    half = size // 2
    padded = tf.pad(images, [[0, 0], [half, half], [half, half], [0, 0]], mode="REFLECT")
    shape = tf.shape(images)
    patches = tf.image.extract_patches(
        padded,
        sizes=[1, size, size, 1],
        strides=[1, 1, 1, 1],
        rates=[1, 1, 1, 1],
        padding="VALID",
    )  # (B, H, W, size*size*3), ordered (row, col, channel)
    patches = tf.reshape(patches, [shape[0], shape[1], shape[2], size * size, 3])
    patches = tf.transpose(patches, [0, 1, 2, 4, 3])
    middle = size * size // 2
    return tf.math.top_k(patches, k=middle + 1).values[..., middle]
