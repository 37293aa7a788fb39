"""A probe's index on disk: written while the probe streams, read by the CLI, the API and the atlas.

One folder per probe (``python -m wga probe --out INDEX``; the server lists the folders under
``./probes`` or ``$WGA_PROBES_DIR``)::

    INDEX/probe.json        the description: model (+ weights fingerprint), corpus (+ fingerprint),
                            feed rule, border margin, layers (values kind, grid, receptive field),
                            k, images, done, skipped files, complete
    INDEX/images.json       per image id: file (relative to the corpus) and catalog fields
    INDEX/state.npz         the merged top/bottom-k of every layer, which images are done and their
                            original sizes — the checkpoint, rewritten atomically
    INDEX/maxima/<i>.npy    layer i's per-image spatial maxima, N × C float16, memory-mapped
                            (NaN: not done yet, or unreadable)
    INDEX/style/<i>.npy     layer i's per-image style statistics, N × 2C float16 (per channel
                            mean, then standard deviation, of the output over the kept positions)
    INDEX/stats.npz         per unit: 64-bin histogram of the maxima and quantiles (at the end)
    INDEX/cache/            crops and heat overlays, made on first request

Every file but the memory maps is written through :mod:`wga.atomic`. The memory maps are flushed
before each checkpoint, so the rows of every image the checkpoint calls done are on disk; rows of
later images are simply written again by the resumed run.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from wga.atomic import atomic_path, write_json_atomic
from wga.corpus.corpus import Corpus
from wga.corpus.feed import FeedRule, chunks, resized_shape
from wga.corpus.receptive import Field
from wga.corpus.topk import LayerTop, Partial, TopK, TopState, merge
from wga.errors import InvalidInput, NotFound, closest_names
from wga.models import model_reference
from wga.vis.backends import DEFAULT_BACKEND, backend_name

if TYPE_CHECKING:
    from wga.models import LoadedModel

DESCRIPTION_NAME = "probe.json"
IMAGES_NAME = "images.json"
STATE_NAME = "state.npz"
STATS_NAME = "stats.npz"
MAXIMA_DIR = "maxima"
STYLE_DIR = "style"
CACHE_DIR = "cache"
INDEX_VERSION = 1

HISTOGRAM_BINS = 64
QUANTILES = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0)
STATS_BLOCK_UNITS = 256  # columns of the maxima matrix read at once when computing statistics
FLOAT16_MAX = float(np.finfo(np.float16).max)
LEGACY_IDENTITY = {"border_margin": 0.0}  # what an index made before the key existed used


ValueKind = Literal["pre-activation", "logits", "output"]


@dataclass(frozen=True)
class ProbeLayer:
    """A probed layer as the index describes it (``probe.json``): what its recorded values are
    (:mod:`wga.corpus.probe` decides) and whether it has negatives."""

    name: str
    units: int
    kind: str  # LayerInfo.kind
    values: ValueKind
    grid: tuple[int, int]  # feature map (H, W) for a side × side input; (1, 1) without positions

    @property
    def bottom(self) -> bool:
        return self.values != "output"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "units": self.units,
            "kind": self.kind,
            "values": self.values,
            "bottom": self.bottom,
            "grid": list(self.grid),
        }


def _sign_arrays(prefix: str, top: TopK) -> dict[str, np.ndarray]:
    return {f"{prefix}_{part}": getattr(top, part) for part in ("values", "ids", "ys", "xs")}


def _sign_from(arrays: Any, prefix: str, largest: bool) -> TopK | None:
    if f"{prefix}_values" not in arrays:
        return None
    return TopK(*(arrays[f"{prefix}_{p}"] for p in ("values", "ids", "ys", "xs")), largest=largest)


class IndexWriter:
    """Creates or resumes an index folder and folds partial results into it."""

    def __init__(self, root: Path, description: dict[str, Any], n_images: int) -> None:
        self.root = root
        self.description = description
        self.n = n_images
        self.layers = [layer["name"] for layer in description["layers"]]
        self.batch_size = int(description["batch_size"])
        self.state: TopState | None = None
        self.done = np.zeros(n_images, bool)
        self.sizes = np.zeros((n_images, 2), np.int32)
        self.skipped: dict[int, str] = {}
        self.maxima: list[np.memmap] = []
        self.style: list[np.memmap] = []

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        out: str | os.PathLike[str],
        *,
        loaded: LoadedModel,
        corpus: Corpus,
        plan: Sequence[ProbeLayer],
        rule: FeedRule,
        k: int,
        batch_size: int,
        border_margin: float = 0.0,
    ) -> IndexWriter:
        from wga.corpus.receptive import receptive_field

        root = Path(out)
        identity = {
            "model": loaded.spec.name,
            "model_fingerprint": loaded.fingerprint,
            "corpus_fingerprint": corpus.fingerprint(),
            "layer_names": [p.name for p in plan],
            "k": k,
            "border_margin": float(border_margin),
        }
        existing = root / DESCRIPTION_NAME
        backend = backend_name()
        if existing.exists():
            description = json.loads(existing.read_text(encoding="utf-8"))
            made_on = description.get("backend", DEFAULT_BACKEND)
            if made_on != backend:
                raise InvalidInput(
                    f"{root} holds a probe made on the {made_on} backend: resume it with "
                    f"--backend {made_on} (one index, one backend's arithmetic), or give another "
                    "--out"
                )
            theirs = {key: description.get(key, LEGACY_IDENTITY.get(key)) for key in identity}
            if theirs != identity:
                changed = ", ".join(key for key in identity if theirs[key] != identity[key])
                raise InvalidInput(
                    f"{root} holds a probe with another {changed}: give another --out, or delete "
                    "it to start again (a probe resumes only with the same model, corpus, layers, "
                    "--top and --border-margin)"
                )
            writer = cls(root, description, len(corpus))
            writer._resume()
            return writer
        if root.exists() and any(root.iterdir()):
            raise InvalidInput(
                f"{root} exists and is not a probe index: give an empty or new --out"
            )
        layers = []
        for p in plan:
            layer = p.as_dict()
            field = receptive_field(loaded.model, p.name, rule.side)
            layer["field"] = field.as_dict()
            layers.append(layer)
        description = {
            "version": INDEX_VERSION,
            **identity,
            "model_ref": model_reference(loaded),
            "model_title": loaded.spec.title,
            "class_names": loaded.class_names,
            "corpus": str(corpus.root),
            "corpus_kind": corpus.kind,
            "images": len(corpus),
            "feed": rule.as_dict(),
            "backend": backend,
            "layers": layers,
            "batch_size": batch_size,
            "done": 0,
            "skipped": [],
            "complete": False,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            root / IMAGES_NAME, [{"file": image.file, **image.meta} for image in corpus]
        )
        writer = cls(root, description, len(corpus))
        writer._create_maxima()
        write_json_atomic(existing, description)
        return writer

    def _maxima_path(self, index: int, folder: str = MAXIMA_DIR) -> Path:
        return self.root / folder / f"{index}.npy"

    def _create_maxima(self) -> None:
        """The per-image matrices, all NaN: maxima (N × C) and style statistics (N × 2C)."""
        for folder, width in ((MAXIMA_DIR, 1), (STYLE_DIR, 2)):
            (self.root / folder).mkdir(exist_ok=True)
            for index, layer in enumerate(self.description["layers"]):
                path = self._maxima_path(index, folder)
                if path.exists():
                    continue
                with atomic_path(path) as temp:
                    shape = (self.n, width * int(layer["units"]))
                    matrix = np.lib.format.open_memmap(
                        temp, mode="w+", dtype=np.float16, shape=shape
                    )
                    for start in range(0, self.n, 4096):
                        matrix[start : start + 4096] = np.nan
                    matrix.flush()
                    del matrix
        self._open_maxima()

    def _open_maxima(self) -> None:
        count = len(self.layers)
        self.maxima = [np.load(self._maxima_path(i), mmap_mode="r+") for i in range(count)]
        self.style = [
            np.load(self._maxima_path(i, STYLE_DIR), mmap_mode="r+") for i in range(count)
        ]

    def _resume(self) -> None:
        self._create_maxima()  # an index from before style statistics gets their (empty) files
        path = self.root / STATE_NAME
        if not path.exists():
            return
        with np.load(path, allow_pickle=False) as arrays:
            self.done = arrays["done"].copy()
            self.sizes = arrays["sizes"].copy()
            self.skipped = {
                int(i): str(e)
                for i, e in zip(arrays["skipped_ids"], arrays["skipped_errors"], strict=True)
            }
            self.state = _state_from(arrays, self.layers)

    # -- progress ------------------------------------------------------------------------------
    def done_count(self) -> int:
        return int(self.done.sum())

    def todo_chunks(self) -> list[np.ndarray]:
        """The chunks (see :func:`wga.corpus.feed.chunks`) with any image not done yet."""
        return [c for c in chunks(self.n, self.batch_size) if not self.done[c].all()]

    def add(self, partial: Partial) -> None:
        """Fold one executor result in (memory only until the next :meth:`checkpoint`)."""
        self.state = merge(self.state, partial)
        ids = partial.ids
        if len(ids):
            order = np.argsort(ids)  # memmap writes in file order
            for index, name in enumerate(self.layers):
                rows = np.clip(partial.maxima[name][order], -FLOAT16_MAX, FLOAT16_MAX)
                self.maxima[index][ids[order]] = rows.astype(np.float16)
                if name in partial.style:
                    rows = np.clip(partial.style[name][order], -FLOAT16_MAX, FLOAT16_MAX)
                    self.style[index][ids[order]] = rows.astype(np.float16)
            self.sizes[ids] = partial.sizes
            self.done[ids] = True
        for image_id, error in partial.skipped.items():
            self.skipped[image_id] = error
            self.done[image_id] = True

    def checkpoint(self) -> None:
        """Flush the maxima, then atomically replace the state: a kill never loses done work."""
        for matrix in [*self.maxima, *self.style]:
            matrix.flush()
        arrays: dict[str, np.ndarray] = {
            "done": self.done,
            "sizes": self.sizes,
            "skipped_ids": np.asarray(sorted(self.skipped), np.int64),
            "skipped_errors": np.asarray(
                [self.skipped[i] for i in sorted(self.skipped)], dtype=str
            ),
        }
        if self.state is not None:
            for index, name in enumerate(self.layers):
                layer = self.state.layers[name]
                arrays.update(_sign_arrays(f"top{index}", layer.top))
                if layer.bottom is not None:
                    arrays.update(_sign_arrays(f"bottom{index}", layer.bottom))
        with atomic_path(self.root / STATE_NAME) as temp:
            np.savez(temp, **arrays)
        self.description["done"] = self.done_count()
        write_json_atomic(self.root / DESCRIPTION_NAME, self._described())

    def _described(self) -> dict[str, Any]:
        if self.skipped:
            files = json.loads((self.root / IMAGES_NAME).read_text(encoding="utf-8"))
            self.description["skipped"] = [
                {"file": files[i]["file"], "error": self.skipped[i]} for i in sorted(self.skipped)
            ]
        return self.description

    def finish(self) -> None:
        """Last checkpoint, per-unit statistics, and the description marked complete."""
        if self.done.all() and self.description.get("complete"):
            return
        self.checkpoint()
        if not self.done.all():
            return  # an executor stopped early: stay resumable
        valid = self.done.copy()
        valid[list(self.skipped)] = False
        stats: dict[str, np.ndarray] = {}
        for index, matrix in enumerate(self.maxima):
            counts, edges, quantiles = unit_statistics(matrix, valid)
            stats[f"counts{index}"], stats[f"edges{index}"] = counts, edges
            stats[f"quantiles{index}"] = quantiles
        stats["quantile_levels"] = np.asarray(QUANTILES)
        with atomic_path(self.root / STATS_NAME) as temp:
            np.savez(temp, **stats)
        self.description["complete"] = True
        self.description["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json_atomic(self.root / DESCRIPTION_NAME, self._described())


def _state_from(arrays: Any, layers: Sequence[str]) -> TopState | None:
    if "top0_values" not in arrays:
        return None
    return TopState(
        {
            name: LayerTop(
                _sign_from(arrays, f"top{i}", True),  # type: ignore[arg-type]
                _sign_from(arrays, f"bottom{i}", False),
            )
            for i, name in enumerate(layers)
        }
    )


def unit_statistics(
    matrix: np.ndarray, valid: np.ndarray, bins: int = HISTOGRAM_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit (column): histogram counts (C, bins), edges (C, bins + 1), quantiles (C, Q).

    Reads the (memory-mapped) matrix a block of columns at a time, so memory stays bounded.
    """
    units = matrix.shape[1]
    counts = np.zeros((units, bins), np.int64)
    edges = np.zeros((units, bins + 1), np.float64)
    quantiles = np.full((units, len(QUANTILES)), np.nan, np.float64)
    rows = np.nonzero(valid)[0]
    if not len(rows):
        return counts, edges, quantiles
    for start in range(0, units, STATS_BLOCK_UNITS):
        block = np.asarray(matrix[:, start : start + STATS_BLOCK_UNITS], np.float32)[rows]
        low, high = block.min(axis=0).astype(np.float64), block.max(axis=0).astype(np.float64)
        high = np.where(high > low, high, low + 1.0)  # a constant unit: one bin of width 1
        width = block.shape[1]
        edges[start : start + width] = low[:, None] + (high - low)[:, None] * np.linspace(
            0.0, 1.0, bins + 1
        )
        which = np.clip(((block - low) / (high - low) * bins).astype(np.int64), 0, bins - 1)
        flat = which + np.arange(width)[None, :] * bins
        counts[start : start + width] = np.bincount(flat.ravel(), minlength=width * bins).reshape(
            width, bins
        )
        quantiles[start : start + width] = np.quantile(block, QUANTILES, axis=0).T
    return counts, edges, quantiles


@dataclass(frozen=True)
class Example:
    """One artwork of a unit: where the unit peaks in it, in the original image's pixels."""

    image: int  # image id
    file: str  # relative to the corpus
    value: float
    y: int
    x: int
    crop: tuple[int, int, int, int]  # (top, left, bottom, right), exclusive end
    grid: tuple[int, int]  # position on the layer's grid
    meta: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "value": self.value,
            "y": self.y,
            "x": self.x,
            "crop": list(self.crop),
            "image": self.image,
            "grid": list(self.grid),
            **self.meta,
        }


def original_position(
    field: Field, gy: int, gx: int, size: tuple[int, int], side: int
) -> tuple[int, int, tuple[int, int, int, int]]:
    """A grid position → (y, x) in the original image and the receptive-field crop box there."""
    height, width = size
    if field.whole:
        return height // 2, width // 2, (0, 0, height, width)
    new_h, new_w = resized_shape(height, width, side)
    sy, sx = height / new_h, width / new_w
    cy, cx = field.centre(gy, gx)
    y = min(max(round((cy + 0.5) * sy - 0.5), 0), height - 1)
    x = min(max(round((cx + 0.5) * sx - 0.5), 0), width - 1)
    half_h, half_w = field.size[0] * sy / 2, field.size[1] * sx / 2
    top = max(math.floor((cy + 0.5) * sy - half_h), 0)
    left = max(math.floor((cx + 0.5) * sx - half_w), 0)
    bottom = min(math.ceil((cy + 0.5) * sy + half_h), height)
    right = min(math.ceil((cx + 0.5) * sx + half_w), width)
    return y, x, (top, left, max(bottom, top + 1), max(right, left + 1))


class ProbeIndex:
    """A finished (or in-progress) index, opened read-only; cheap to open, loads lazily."""

    def __init__(self, root: Path, description: dict[str, Any]) -> None:
        self.root = root
        self.description = description
        self._images: list[dict[str, str]] | None = None
        self._state: dict[str, np.ndarray] | None = None
        self._stats: dict[str, np.ndarray] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ProbeIndex:
        root = Path(path)
        description_path = root / DESCRIPTION_NAME
        if not description_path.is_file():
            raise NotFound(
                f"no probe index at {str(path)!r} (no {DESCRIPTION_NAME}): build one with "
                "`python -m wga probe --model M --corpus DIR --layers L --out INDEX`"
            )
        return cls(root, json.loads(description_path.read_text(encoding="utf-8")))

    # -- what it is ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.root.name

    @property
    def side(self) -> int:
        return int(self.description["feed"]["side"])

    def layer_names(self) -> list[str]:
        return [layer["name"] for layer in self.description["layers"]]

    def layer_index(self, layer: str) -> int:
        names = self.layer_names()
        if layer not in names:
            raise NotFound(
                f"probe {self.name!r} did not record layer {layer!r}: {closest_names(layer, names)}"
            )
        return names.index(layer)

    def layer(self, layer: str) -> dict[str, Any]:
        return self.description["layers"][self.layer_index(layer)]

    def check_unit(self, layer: str, unit: int) -> dict[str, Any]:
        info = self.layer(layer)
        if not 0 <= unit < int(info["units"]):
            raise NotFound(
                f"unit {unit} is out of range for layer {layer!r}: it has units 0 … "
                f"{int(info['units']) - 1}"
            )
        return info

    def summary(self) -> dict[str, Any]:
        """The ``GET /api/probes`` entry."""
        d = self.description
        return {
            "name": self.name,
            "model": d["model"],
            "corpus": Path(d["corpus"]).name,  # a name: the server's paths stay its own
            "layers": [{"name": la["name"], "units": la["units"]} for la in d["layers"]],
            "images": d["images"],
            "done": d.get("done", 0),
            "complete": bool(d.get("complete")),
        }

    # -- contents -----------------------------------------------------------------------------
    def images(self) -> list[dict[str, str]]:
        if self._images is None:
            self._images = json.loads((self.root / IMAGES_NAME).read_text(encoding="utf-8"))
        return self._images

    def _npz(self, name: str, missing: str) -> dict[str, np.ndarray]:
        path = self.root / name
        if not path.exists():
            raise NotFound(f"probe {self.name!r} {missing}")
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}

    def _arrays(self) -> dict[str, np.ndarray]:
        if self._state is None:
            self._state = self._npz(STATE_NAME, "has no results yet: let it run, or resume it")
        return self._state

    def sizes(self) -> np.ndarray:
        """(N, 2) original (height, width) of every image (0, 0 when not read)."""
        return self._arrays()["sizes"]

    def top(self, layer: str, negatives: bool = False) -> TopK | None:
        index = self.layer_index(layer)
        return _sign_from(
            self._arrays(), f"{'bottom' if negatives else 'top'}{index}", not negatives
        )

    def maxima(self, layer: str) -> np.ndarray:
        """The N × C float16 matrix of per-image maxima (memory-mapped, read-only)."""
        return np.load(self.root / MAXIMA_DIR / f"{self.layer_index(layer)}.npy", mmap_mode="r")

    def style(self, layer: str) -> np.ndarray:
        """The N × 2C float16 matrix of per-image style statistics (per channel mean, then
        standard deviation, of the layer's output over the kept positions; memory-mapped)."""
        path = self.root / STYLE_DIR / f"{self.layer_index(layer)}.npy"
        if not path.exists():
            raise NotFound(
                f"probe {self.name!r} has no style statistics for {layer!r} (it was made before "
                "the probe recorded them): probe again into a new --out to compare by style"
            )
        return np.load(path, mmap_mode="r")

    def field(self, layer: str) -> Field:
        return Field.from_dict(self.layer(layer)["field"])

    def examples(self, layer: str, unit: int, negatives: bool = False) -> list[Example]:
        """The unit's artworks, best first (lowest first for ``negatives``)."""
        self.check_unit(layer, unit)
        top = self.top(layer, negatives)
        if top is None:
            return []
        field, images, sizes = self.field(layer), self.images(), self.sizes()
        found: list[Example] = []
        for rank in range(top.k):
            image = int(top.ids[unit, rank])
            if image < 0:
                break
            gy, gx = int(top.ys[unit, rank]), int(top.xs[unit, rank])
            size = (int(sizes[image, 0]), int(sizes[image, 1]))
            y, x, crop = original_position(field, gy, gx, size, self.side)
            entry = images[image]
            meta = {key: value for key, value in entry.items() if key != "file"}
            found.append(
                Example(
                    image, entry["file"], float(top.values[unit, rank]), y, x, crop, (gy, gx), meta
                )
            )
        return found

    def _statistics(self) -> dict[str, np.ndarray]:
        if self._stats is None:
            self._stats = self._npz(STATS_NAME, "is not complete yet: resume it to finish")
        return self._stats

    def histogram(self, layer: str, unit: int) -> dict[str, list[float]]:
        """The 64-bin histogram of the unit's per-image maxima: ``{"edges", "counts"}``."""
        self.check_unit(layer, unit)
        index, stats = self.layer_index(layer), self._statistics()
        return {
            "edges": [float(v) for v in stats[f"edges{index}"][unit]],
            "counts": [int(v) for v in stats[f"counts{index}"][unit]],
        }

    def quantiles(self, layer: str, unit: int) -> dict[str, float]:
        self.check_unit(layer, unit)
        index, stats = self.layer_index(layer), self._statistics()
        levels = stats["quantile_levels"]
        return {
            f"{q:g}": float(v)
            for q, v in zip(levels, stats[f"quantiles{index}"][unit], strict=True)
        }

    def unit_label(self, layer: str, unit: int) -> str | None:
        info = self.layer(layer)
        names = self.description.get("class_names")
        if info.get("kind") == "class" and names and unit < len(names):
            return str(names[unit])
        return None

    def unit(self, layer: str, unit: int) -> dict[str, Any]:
        """The ``examples --json`` document (DESIGN.md): examples, negatives, histogram, more."""
        info = self.check_unit(layer, unit)
        complete = (self.root / STATS_NAME).exists()
        return {
            "model": self.description["model"],
            "layer": layer,
            "unit": unit,
            "label": self.unit_label(layer, unit),
            "values": info["values"],
            "examples": [e.as_dict() for e in self.examples(layer, unit)],
            "negatives": [e.as_dict() for e in self.examples(layer, unit, negatives=True)],
            "histogram": self.histogram(layer, unit) if complete else {"edges": [], "counts": []},
            "quantiles": self.quantiles(layer, unit) if complete else {},
            "complete": complete,
        }
