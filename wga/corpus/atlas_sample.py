"""The atlas's raw material: activation vectors of one layer at random positions of every artwork.

One pass of the model over the probe's corpus, fed exactly as the probe was
(:mod:`wga.corpus.feed`), keeping ``per_image`` random positions of each image (the Activation
Atlas kept one per ImageNet image; a corpus of paintings is smaller, so 2 by default). Positions
come from the image's valid region (never the padding) less a one-cell border, whose activations
see the edge of the picture rather than the picture; images with a tiny valid region fall back to
all of it.

Deterministic: image ``i``'s positions come from a generator seeded by ``(seed, i)``, so they do
not depend on batching. Capped at ``cap`` vectors (1,000,000): past it, a random subset of images
(by the same seed) is sampled.

Stored inside the probe index, float16 (half the bytes; the layout and the cell means do not
need more)::

    INDEX/samples/<layer>-seed<S>-per<P>/vectors.npy   N × C float16
    INDEX/samples/<layer>-seed<S>-per<P>/where.npy     N × 5 int32: image id, grid y, grid x,
                                                       y, x in the original image's pixels
    INDEX/samples/<layer>-seed<S>-per<P>/samples.json  what was sampled, how, from which weights

A rerun with the same layer, seed, count and weights reuses the stored sample.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wga.atomic import atomic_path, write_json_atomic
from wga.corpus.corpus import open_corpus
from wga.corpus.feed import FeedRule, feed, valid_grid
from wga.corpus.index import ProbeIndex, original_position
from wga.errors import InvalidInput

if TYPE_CHECKING:
    from wga.corpus.receptive import Field
    from wga.models import LoadedModel

PER_IMAGE = 2
CAP = 1_000_000
BATCH = 16
SAMPLES_DIR = "samples"
SAMPLE_VERSION = 1


@dataclass(frozen=True)
class Sample:
    """Sampled activations of one layer: ``vectors`` ``(N, C)`` float16 and ``where`` ``(N, 5)``
    (image id, grid y, grid x, y, x in original pixels), plus the description."""

    folder: Path
    vectors: np.ndarray
    where: np.ndarray
    description: dict[str, Any]

    @property
    def images(self) -> np.ndarray:
        return self.where[:, 0]

    def fingerprint(self) -> str:
        """What the sample is (for the layout's reuse check)."""
        d = self.description
        return f"{d['layer']}|{d['seed']}|{d['per_image']}|{d['cap']}|{d['weights']}|{d['count']}"


def sample_folder(index: ProbeIndex, layer: str, seed: int, per_image: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.+=-]", "_", layer)
    return index.root / SAMPLES_DIR / f"{safe}-seed{seed}-per{per_image}"


def positions_for(
    image_id: int, rows: int, cols: int, per_image: int, seed: int
) -> list[tuple[int, int]]:
    """``per_image`` distinct random grid positions of an image whose valid region is
    ``rows × cols`` cells, avoiding the outer ring when the region is at least 3 × 3."""
    if rows < 1 or cols < 1:
        return []
    y0, y1 = (1, rows - 1) if rows >= 3 else (0, rows)
    x0, x1 = (1, cols - 1) if cols >= 3 else (0, cols)
    count = (y1 - y0) * (x1 - x0)
    rng = np.random.default_rng([seed, image_id])
    chosen = rng.choice(count, size=min(per_image, count), replace=False)
    width = x1 - x0
    return [(y0 + int(c) // width, x0 + int(c) % width) for c in np.sort(chosen)]


def _chosen_images(ok_ids: np.ndarray, per_image: int, cap: int, seed: int) -> np.ndarray:
    if len(ok_ids) * per_image <= cap:
        return ok_ids
    keep = max(1, cap // per_image)
    rng = np.random.default_rng([seed, 2**31])
    return np.sort(rng.choice(ok_ids, size=keep, replace=False))


def _field(index: ProbeIndex, loaded: LoadedModel, layer: str) -> Field:
    if layer in index.layer_names():
        return index.field(layer)
    from wga.corpus.receptive import receptive_field

    return receptive_field(loaded.model, layer, index.side)


def load_sample(folder: Path) -> Sample | None:
    """The sample stored in ``folder``, or ``None`` when there is none (or it is incomplete)."""
    try:
        description = json.loads((folder / "samples.json").read_text(encoding="utf-8"))
        vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        where = np.load(folder / "where.npy")
    except (OSError, ValueError):
        return None
    return Sample(folder, vectors, where, description)


def _sample_pass(
    model: Any,
    source: tuple[Any, FeedRule, np.ndarray],
    field: Field,
    *,
    per_image: int,
    cap: int,
    seed: int,
    batch_size: int,
    label: str | None,
) -> tuple[list[np.ndarray], list[tuple[int, int, int, int, int]]]:
    """The pass itself: the feed's batches through ``model``, each image's positions kept."""
    from tqdm.auto import tqdm

    from wga.corpus.inference import compile_inference

    corpus, rule, ids = source
    forward = compile_inference(model, lambda maps: maps)
    vectors: list[np.ndarray] = []
    where: list[tuple[int, int, int, int, int]] = []
    with tqdm(total=len(ids), unit="img", disable=label is None, desc=f"sample {label}") as bar:
        for batch in feed(corpus, rule, ids, batch_size):
            acts = forward(batch["images"])
            valid = valid_grid(batch["shapes"], acts.shape[1:3], rule.side)
            for row, image_id in enumerate(batch["ids"].tolist()):
                if not bool(batch["ok"][row]):
                    continue
                size = (int(batch["sizes"][row][0]), int(batch["sizes"][row][1]))
                rows, cols = (int(v) for v in valid[row])
                for gy, gx in positions_for(image_id, rows, cols, per_image, seed):
                    if len(where) >= cap:
                        return vectors, where
                    y, x, _ = original_position(field, gy, gx, size, rule.side)
                    vectors.append(acts[row, gy, gx].astype("float16"))
                    where.append((image_id, gy, gx, y, x))
            bar.update(len(batch["ids"]))
    return vectors, where


def sample_layer(
    index: ProbeIndex,
    loaded: LoadedModel,
    layer: str,
    *,
    per_image: int = PER_IMAGE,
    cap: int = CAP,
    seed: int = 0,
    batch_size: int = BATCH,
    progress: bool = True,
) -> Sample:
    """Sample ``layer`` over the probe's corpus (or reuse the stored sample)."""
    from wga.models.surgery import cut

    if per_image < 1 or cap < 1:
        raise InvalidInput("sample at least 1 position per image and at least 1 vector")
    info = loaded.layer(layer)  # NotFound with the closest names
    if not info.spatial:
        raise InvalidInput(
            f"layer {layer!r} has no positions (a Dense layer): an atlas needs a feature map, "
            "e.g. a conv or mixed layer"
        )
    folder = sample_folder(index, layer, seed, per_image)
    existing = load_sample(folder)
    if (
        existing is not None
        and existing.description.get("weights") == loaded.fingerprint
        and existing.description.get("cap") == cap
    ):
        return existing
    corpus = open_corpus(index.description["corpus"])
    sizes = index.sizes()
    ok_ids = np.flatnonzero(sizes.min(axis=1) > 0) if len(sizes) == len(corpus) else None
    if ok_ids is None:
        ok_ids = np.arange(len(corpus))
    ids = _chosen_images(ok_ids, per_image, cap, seed)
    rule = FeedRule(index.side, loaded.spec.preprocessing)
    model = cut(loaded.model, layer)
    vectors, where = _sample_pass(
        model,
        (corpus, rule, ids),
        _field(index, loaded, layer),
        per_image=per_image,
        cap=cap,
        seed=seed,
        batch_size=batch_size,
        label=layer if progress else None,
    )
    if not vectors:
        raise InvalidInput(
            f"no activations sampled from the corpus of {index.root}: are its images readable?"
        )
    stacked = np.stack(vectors)
    positions = np.asarray(where, dtype="int32")
    description = {
        "version": SAMPLE_VERSION,
        "layer": layer,
        "seed": int(seed),
        "per_image": int(per_image),
        "cap": int(cap),
        "count": len(positions),
        "channels": int(stacked.shape[1]),
        "images": len(np.unique(positions[:, 0])),
        "model": index.description.get("model"),
        "weights": loaded.fingerprint,
        "feed": rule.as_dict(),
        "border": "one cell (when the valid region is at least 3 x 3)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (folder / "samples.json").unlink(missing_ok=True)  # a stale description never covers new data
    for name, array in (("vectors.npy", stacked), ("where.npy", positions)):
        with atomic_path(folder / name) as temp, open(temp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    write_json_atomic(folder / "samples.json", description)  # last: marks the sample complete
    return Sample(folder, stacked, positions, description)
