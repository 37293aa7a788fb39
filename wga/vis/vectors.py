"""Directions in a layer's channel space, stored by content: ``<sha256>.npy`` in one folder.

A render recipe names its direction by hash rather than carrying hundreds of floats, so recipes
stay small, hashable and JSON-able, the render cache's content ids cover the vector, and a page
that asks again for a cell's icon sends 64 characters instead of the vector. The hash is of the
vector as float32 little-endian bytes, so equal vectors get equal names wherever they were made.

Whitening (the Activation Atlas's trick: divide out the layer's correlations, so an icon shows
what is special about a direction rather than what every activation shares) is done here on the
host, once per vector: the whitened vector is stored under its own hash and the render step only
ever sees unit vectors.

The store folder: ``$WGA_VECTORS_DIR``, else ``./vectors`` (:mod:`wga.paths`); an atlas folder carries a
``vectors/`` store of its own that a server imports on first use.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from wga.atomic import atomic_path
from wga.errors import InvalidInput, NotFound
from wga.paths import vectors_dir

HASH_LENGTH = 64  # hex digits of sha256
MAX_CHANNELS = 8192  # no registry layer is wider (EfficientNet top: 1280, Xception: 2048)
WHITENING_RIDGE = 1e-3  # of the mean eigenvalue: dead units make the correlation singular
_HASH = re.compile(rf"^[0-9a-f]{{{HASH_LENGTH}}}$")


def as_direction(values: object) -> np.ndarray:
    """A 1-D finite float32 vector of 1 … MAX_CHANNELS values, not all zero; InvalidInput if
    ``values`` (a list, an array) is not one."""
    try:
        vector = np.asarray(values, dtype="float64")
    except (TypeError, ValueError):
        raise InvalidInput(
            "a direction must be a list of numbers (one per channel of the layer)"
        ) from None
    if vector.ndim != 1 or not 1 <= vector.size <= MAX_CHANNELS:
        raise InvalidInput(
            f"a direction must be a flat list of 1 … {MAX_CHANNELS} numbers (one per channel), "
            f"got shape {vector.shape}"
        )
    if not np.all(np.isfinite(vector)):
        raise InvalidInput("a direction must hold finite numbers only (no NaN or infinity)")
    if not np.any(vector):
        raise InvalidInput("a direction must not be all zeros: it would point nowhere")
    return vector.astype("<f4")


def vector_hash(vector: np.ndarray) -> str:
    """The content address: sha256 of the float32 little-endian bytes."""
    return hashlib.sha256(as_direction(vector).tobytes()).hexdigest()


def check_hash(value: object) -> str:
    if not isinstance(value, str) or not _HASH.match(value):
        raise InvalidInput(
            f"a direction reference is {HASH_LENGTH} lowercase hex digits (its sha256), "
            f"got {value!r}"
        )
    return value


def unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` scaled to length 1 (float32)."""
    vector = np.asarray(vector, dtype="float64")
    return (vector / np.linalg.norm(vector)).astype("float32")


def whitening_matrix(samples: np.ndarray, ridge: float = WHITENING_RIDGE) -> np.ndarray:
    """The inverse of the layer's (uncentred) activation correlation ``E[a aᵀ]``, estimated from
    sampled activations ``(N, C)``, as the Activation Atlas did; a small ridge keeps it finite when
    units are dead or correlated."""
    data = np.asarray(samples, dtype="float64")
    if data.ndim != 2 or len(data) < 2:
        raise InvalidInput("whitening needs sampled activations (N, C) with N ≥ 2")
    correlation = data.T @ data / len(data)
    scale = max(float(np.trace(correlation)) / len(correlation), 1e-12)
    correlation += ridge * scale * np.eye(len(correlation))
    return np.linalg.inv(correlation).astype("float32")


def whiten(vector: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The direction to optimise for ``vector`` under whitening ``matrix``, as a unit vector."""
    return unit(np.asarray(matrix, dtype="float64") @ np.asarray(vector, dtype="float64"))


def check_direction(store: VectorStore, reference: str, channels: int) -> np.ndarray:
    """The stored direction ``reference``, if it has one value per channel of the layer;
    NotFound / InvalidInput otherwise (so a request fails at once, not in the render queue)."""
    vector = store.get(reference)
    if vector.shape != (channels,):
        raise InvalidInput(
            f"direction {reference} has {vector.size} values but the layer has {channels} "
            "channels: give one value per channel"
        )
    return vector


class VectorStore:
    """A folder of directions named by their hash; writes are atomic, reads are checked."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if directory is None:
            directory = vectors_dir()
        self.directory = Path(directory).expanduser()

    def path(self, reference: str) -> Path:
        return self.directory / f"{check_hash(reference)}.npy"

    def put(self, values: object) -> str:
        """Store a direction (idempotent); its hash."""
        vector = as_direction(values)
        reference = vector_hash(vector)
        path = self.path(reference)
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as temp, open(temp, "wb") as handle:
                np.save(handle, vector, allow_pickle=False)
        return reference

    def __contains__(self, reference: object) -> bool:
        try:
            return self.path(str(reference)).is_file()
        except InvalidInput:
            return False

    def get(self, reference: str) -> np.ndarray:
        """The direction stored under ``reference``; NotFound if it is not here."""
        path = self.path(reference)
        try:
            vector = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise NotFound(
                f"no direction {reference} in {self.directory}: send it inline once "
                "(a list of numbers), or store it with `render --direction FILE.npy`"
            ) from None
        if vector_hash(vector) != reference:
            raise InvalidInput(f"direction file {path} does not match its hash: delete it")
        return vector

    def load_file(self, file: str | os.PathLike[str]) -> str:
        """Store the direction in a ``.npy`` file; its hash."""
        try:
            values = np.load(Path(file).expanduser(), allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InvalidInput(
                f"cannot read the direction file {str(file)!r} ({error}): give a .npy file "
                "holding one vector, e.g. saved with numpy.save"
            ) from None
        return self.put(np.ravel(values) if np.ndim(values) == 2 and len(values) == 1 else values)

    def import_from(self, other: VectorStore) -> int:
        """Copy in the directions ``other`` has and this store lacks; how many were copied."""
        copied = 0
        for path in sorted(other.directory.glob("*.npy")):
            if _HASH.match(path.stem) and path.stem not in self:
                self.put(other.get(path.stem))
                copied += 1
        return copied

    def stack(self, references: Iterable[str]) -> np.ndarray:
        """The directions of ``references`` as rows of one float32 matrix."""
        return np.stack([self.get(reference) for reference in references]).astype("float32")
