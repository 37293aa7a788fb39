"""Synthetic image datasets in the ``wga dataset`` layout, for tests, benchmarks and smoke runs.

WGA images may not be redistributed, so nothing in this project trains on them in CI. These
classes differ in *structure* (stripes, checkerboards, blobs, rings), not in mean colour, so a
model has to look at texture to separate them — as with paintings — and colour jitter, noise and
random aspect ratios keep the task from being trivial.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

SYNTHETIC_CLASSES = ("stripes", "checkerboard", "blobs", "rings")
COLOUR_FIELD = "field"  # one colour and noise: no structure but at its edges (not a class)


def _pattern(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A grey pattern in [0, 1] of one class."""
    y, x = np.mgrid[0:height, 0:width].astype("float64")
    if kind == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 14) * max(height, width) / 96
        phase = x * np.cos(angle) + y * np.sin(angle)
        return 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * phase / period))
    if kind == "checkerboard":
        cell = rng.uniform(6, 14) * max(height, width) / 96
        return ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype("float64")
    if kind == "blobs":
        image = np.zeros((height, width))
        for _ in range(int(rng.integers(3, 7))):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            radius = rng.uniform(0.08, 0.2) * min(height, width)
            image += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))
        return np.clip(image, 0, 1)
    if kind == "rings":
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        period = rng.uniform(8, 16) * max(height, width) / 96
        radius = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
        return 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * radius / period))
    if kind == COLOUR_FIELD:
        return np.full((height, width), 0.5)
    raise ValueError(f"unknown synthetic class {kind!r}: use one of {SYNTHETIC_CLASSES}")


def synthetic_image(kind: str, rng: np.random.Generator, side: int = 96) -> np.ndarray:
    """One uint8 RGB image of class ``kind``, random aspect ratio, colours and noise."""
    aspect = rng.uniform(0.7, 1.5)
    height, width = (side, int(side * aspect)) if aspect > 1 else (int(side / aspect), side)
    pattern = _pattern(kind, height, width, rng)[..., None]
    dark, light = rng.uniform(0, 0.45, 3), rng.uniform(0.55, 1, 3)
    image = dark + (light - dark) * pattern
    image += rng.normal(0, 0.06, image.shape)
    return (np.clip(image, 0, 1) * 255).astype("uint8")


def framed(image: np.ndarray, rng: np.random.Generator, share: float = 0.08) -> np.ndarray:
    """``image`` inside a painted frame: a band ``share`` of its shorter side wide, gilt-like, with
    a light outer and a dark inner moulding — the strong straight edges that frame every
    museum photograph, for measuring what a probe sees at a painting's border."""
    out = image.copy()
    height, width = out.shape[:2]
    band = max(3, round(share * min(height, width)))
    gold = rng.uniform([150, 110, 30], [215, 170, 80])
    for depth, tone in ((0, 1.25), (band // 3, 1.0), (2 * band // 3, 0.55)):
        colour = np.clip(gold * tone + rng.normal(0, 4, 3), 0, 255).astype("uint8")
        inner = band - depth
        out[depth : height - depth, depth : width - depth][:inner] = colour
        out[depth : height - depth, depth : width - depth][-inner:] = colour
        out[depth : height - depth, depth : width - depth][:, :inner] = colour
        out[depth : height - depth, depth : width - depth][:, -inner:] = colour
    return out


def make_synthetic_dataset(
    root: str | Path,
    *,
    classes: Sequence[str] = SYNTHETIC_CLASSES[:3],
    per_class: dict[str, int] | None = None,
    side: int = 96,
    seed: int = 0,
) -> Path:
    """Write ``root/{split}/<class>/<n>.jpg``, ``classes.json`` and ``counts.json``.

    ``per_class`` gives images per class and split, default ``{"train": 16, "val": 6,
    "test": 6}``; a split with 0 images is not created.
    """

    root = Path(root)
    per_class = per_class or {"train": 16, "val": 6, "test": 6}
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {}
    for split, count in per_class.items():
        if count <= 0:
            continue
        counts[split] = {}
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                image = synthetic_image(name, rng, side)
                Image.fromarray(image).save(folder / f"{index:04d}.jpg", quality=90)
            counts[split][name] = count
    (root / "classes.json").write_text(json.dumps(list(classes)))
    (root / "counts.json").write_text(json.dumps(counts, indent=2))
    return root
