"""Receptive fields computed from a Keras model's own layers, for crops around a unit's maximum.

Walking the functional graph from the input to a layer, each convolution or pooling layer with
kernel ``k`` (dilated: ``(k - 1) d + 1``), stride ``s`` and left padding ``p`` maps the field of
its input (size ``r``, jump ``j``, centre of the first position ``c``) to::

    r' = r + (k - 1) j        j' = j s        c' = c + ((k - 1) / 2 - p) j

(Araujo et al., "Computing Receptive Fields of CNNs", Distill 2019). ``same`` padding is resolved
as TensorFlow does — ``p = max((ceil(n / s) - 1) s + k - n, 0) // 2`` for an input of ``n``
positions — so the feed's square input side is tracked through the graph. Merges (Concatenate,
Add) take the widest field of their inputs; ``ZeroPadding2D`` and ``Cropping2D`` shift ``c``;
everything after a global pooling, ``Flatten`` or ``Dense`` sees the whole image.

Coordinates are continuous input pixels with pixel centres at integers: position ``(i, j)`` of
the layer's grid is centred at ``(c + i j_y, c + j j_x)`` of the ``side × side`` fed image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

GLOBAL_TYPES = ("Global", "Flatten", "Dense", "Reshape")  # after these: the whole image


@dataclass(frozen=True)
class Field:
    """Receptive field of one layer's positions, per axis (y, x), in fed-image pixels."""

    size: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]  # centre of position (0, 0)
    extent: tuple[int, int]  # positions on the grid for a side × side input
    whole: bool = False  # the layer sees the whole image (no meaningful position)

    def centre(self, y: int, x: int) -> tuple[float, float]:
        return self.start[0] + y * self.jump[0], self.start[1] + x * self.jump[1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "jump": list(self.jump),
            "start": list(self.start),
            "whole": self.whole,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Field:
        return cls(
            tuple(data["size"]),  # type: ignore[arg-type]
            tuple(data["jump"]),  # type: ignore[arg-type]
            tuple(data["start"]),  # type: ignore[arg-type]
            (0, 0),
            bool(data.get("whole", False)),
        )


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def _padding_pairs(value: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(value, int):
        return (value, value), (value, value)
    first, second = value
    if isinstance(first, int):
        return (first, first), (second, second)
    return (int(first[0]), int(first[1])), (int(second[0]), int(second[1]))


def _window(layer: Any) -> tuple[tuple[int, int], tuple[int, int], str, tuple[int, int]] | None:
    """(kernel, strides, padding, dilation) of a conv or pooling layer, else None."""
    config = layer.get_config()
    if "kernel_size" in config:
        kernel = _pair(config["kernel_size"])
    elif "pool_size" in config and "Global" not in type(layer).__name__:
        kernel = _pair(config["pool_size"])
    else:
        return None
    strides = _pair(config.get("strides") or kernel)
    dilation = _pair(config.get("dilation_rate", 1))
    return kernel, strides, str(config.get("padding", "valid")).lower(), dilation


def _step(field: Field, layer: Any) -> Field:
    name = type(layer).__name__
    if field.whole or name.startswith(GLOBAL_TYPES):
        return Field(field.size, field.jump, field.start, (1, 1), whole=True)
    if name == "ZeroPadding2D":
        (top, bottom), (left, right) = _padding_pairs(layer.get_config()["padding"])
        return Field(
            field.size,
            field.jump,
            (field.start[0] - top * field.jump[0], field.start[1] - left * field.jump[1]),
            (field.extent[0] + top + bottom, field.extent[1] + left + right),
        )
    if name == "Cropping2D":
        (top, bottom), (left, right) = _padding_pairs(layer.get_config()["cropping"])
        return Field(
            field.size,
            field.jump,
            (field.start[0] + top * field.jump[0], field.start[1] + left * field.jump[1]),
            (field.extent[0] - top - bottom, field.extent[1] - left - right),
        )
    window = _window(layer)
    if window is None:
        return field  # elementwise layers: BatchNormalization, Activation, Dropout …
    kernel, strides, padding, dilation = window
    sizes, jumps, starts, extents = [], [], [], []
    for axis in range(2):
        k = (kernel[axis] - 1) * dilation[axis] + 1
        s, n, j = strides[axis], field.extent[axis], field.jump[axis]
        if padding == "same":
            out = math.ceil(n / s)
            pad = max((out - 1) * s + k - n, 0) // 2
        else:
            out = (n - k) // s + 1
            pad = 0
        sizes.append(field.size[axis] + (k - 1) * j)
        jumps.append(j * s)
        starts.append(field.start[axis] + ((k - 1) / 2 - pad) * j)
        extents.append(out)
    return Field(tuple(sizes), tuple(jumps), tuple(starts), tuple(extents))  # type: ignore[arg-type]


def _inbound_layers(layer: Any) -> list[Any]:
    """The layers feeding ``layer`` in its (first) functional node."""
    node = layer._inbound_nodes[0]
    return [tensor._keras_history[0] for tensor in node.input_tensors]


def _widest(fields: list[Field]) -> Field:
    return max(fields, key=lambda f: (f.whole, f.size[0] * f.size[1]))


def receptive_field(model: Any, layer_name: str, side: int) -> Field:
    """The receptive field of ``layer_name``'s positions when ``model`` is fed ``side × side``."""
    fields: dict[str, Field] = {}
    target = model.get_layer(layer_name)
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            fields[layer.name] = Field((1.0, 1.0), (1.0, 1.0), (0.0, 0.0), (side, side))
            continue
        inbound = [
            fields[parent.name] for parent in _inbound_layers(layer) if parent.name in fields
        ]
        if not inbound:
            fields[layer.name] = Field((side, side), (1.0, 1.0), (side / 2, side / 2), (1, 1), True)
        else:
            fields[layer.name] = _step(_widest(inbound), layer)
        if layer is target:
            break
    return fields[layer_name]


# -- content, not frames -------------------------------------------------------------------------

# Measured with benchmarks/border_margin.py on a synthetic corpus of framed paintings (README,
# "Content, not frames"): units answering mostly to the border fall from 31/33/59 % to 15/8/0.4 %
# at block3_conv3/block4_conv1/block5_conv3 of vgg16-hed, 91/84/47 % of positions kept.
DEFAULT_BORDER_MARGIN = 0.25
BORDER_TOLERANCE = 1e-6  # shares equal up to rounding count as equal (ties at the best share)


def check_border_margin(margin: object) -> float:
    """``margin`` as a float from 0 to 1, or InvalidInput saying what it means."""
    from wga.errors import InvalidInput

    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin <= 1:
        raise InvalidInput(
            f"--border-margin is a share from 0 to 1 (0: every position on the image; 1: only "
            f"positions whose whole receptive field is on it), not {margin!r}"
        )
    return float(margin)


def inside_share(field: Field, extents: np.ndarray, count: int, axis: int) -> np.ndarray:
    """Per image and grid position along ``axis``, the share of the position's receptive field
    that lies on the image (``extents``: the resized image's size along that axis, (B,)).

    The image covers fed pixels ``[-0.5, extent - 0.5]`` (pixel centres at integers); a
    position's field covers ``centre ± size / 2``. What lies before 0 is the convolutions' own
    zero padding, what lies past ``extent`` the feed's: both count as outside, so the four sides
    of a painting are treated alike although the feed pads only the bottom and the right.
    """
    size = float(field.size[axis])
    centres = field.start[axis] + np.arange(count, dtype=np.float64) * field.jump[axis]
    low, high = centres - size / 2, centres + size / 2
    edge = np.asarray(extents, np.float64)[:, None] - 0.5
    covered = np.minimum(high[None, :], edge) - np.maximum(low[None, :], -0.5)
    return np.clip(covered, 0.0, None) / size


def border_mask(
    field: Field,
    shapes: np.ndarray,
    grid_hw: tuple[int, int],
    side: int,
    margin: float,
) -> np.ndarray:
    """``(B, H, W)`` bool: the positions a probe keeps for images of resized ``shapes`` (B, 2).

    A position is kept when it lies on the image (:func:`wga.corpus.feed.valid_grid`) and its
    centre lies at least ``margin`` × half its receptive field inside every edge of the picture —
    that is, its field reaches past the image by at most ``(1 - margin) / 2`` of its size along
    each axis. ``margin`` 0 keeps every valid position (a field centred on the image can reach
    past it by up to half), 1 only positions whose whole field is on the image. Where no position
    of an image qualifies (a deep layer whose field is wider than the picture), the positions with
    the most of their field on the image are kept, so every readable image keeps some.
    """
    from wga.corpus.feed import valid_grid

    margin = check_border_margin(margin)
    shapes = np.asarray(shapes, np.int64).reshape(-1, 2)
    height, width = grid_hw
    valid = valid_grid(shapes, grid_hw, side)
    keep = []
    for axis, count in ((0, height), (1, width)):
        on_image = np.arange(count)[None, :] < valid[:, axis : axis + 1]
        if margin <= 0.0 or field.whole:
            keep.append(on_image)
            continue
        share = np.where(on_image, inside_share(field, shapes[:, axis], count, axis), -1.0)
        best = share.max(axis=1, keepdims=True)
        needed = np.minimum((1.0 + margin) / 2.0, best) - BORDER_TOLERANCE
        keep.append(on_image & (share >= needed))
    return keep[0][:, :, None] & keep[1][:, None, :]
