"""Short hashes of a model's weights, so a saved image records exactly which model made it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def weights_fingerprint(model: keras.Model) -> str:
    """A short hash of all weights: equal fingerprints mean equal models."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.path.encode())
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """A short hash of a weights file's bytes (cheaper than loading it)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
