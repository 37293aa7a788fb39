"""PNG files that say how to remake them: the render recipe travels in PNG text chunks.

Each key of the metadata becomes its own ``tEXt`` chunk (readable with any PNG tool, e.g.
``exiftool`` or ``identify -verbose``), and the whole dict is also stored as JSON under
:data:`RECIPE_KEY`, which :func:`read_png_metadata` reads back with its types intact.
Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a
reader — the page polling the render cache — never sees half an image.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from wga.atomic import atomic_path
from wga.errors import InvalidInput

RECIPE_KEY = "wga:recipe"
SOFTWARE_KEY = "Software"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def save_png(path: str | os.PathLike[str], image_uint8: np.ndarray, metadata: dict) -> None:
    """Write ``image_uint8`` (H, W, 3) as a PNG at ``path`` with ``metadata`` in text chunks."""
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InvalidInput(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_text(str(key), _text(value))
    info.add_text(RECIPE_KEY, json.dumps(metadata, sort_keys=True))
    if SOFTWARE_KEY not in metadata:
        info.add_text(SOFTWARE_KEY, f"wga {metadata.get('wga', '')}".strip())
    with atomic_path(path) as temp:
        Image.fromarray(image).save(temp, format="PNG", pnginfo=info)


def read_png_metadata(path: str | os.PathLike[str]) -> dict:
    """The metadata :func:`save_png` stored (other PNGs: their text chunks, as strings)."""
    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or image.info)
    if RECIPE_KEY in text:
        return json.loads(text[RECIPE_KEY])
    return {key: value for key, value in text.items() if isinstance(value, str)}
