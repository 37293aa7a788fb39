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

The pass runs on any :mod:`wga.executors` executor (this process by default, Ray Data with
``--ray``): chunks of ``batch_size`` image ids are the rows, each decoded by the feed
(:class:`~wga.corpus.feed.ChunkFeed`) and cut at the layer by a :class:`SampleWorker`; the
driver puts the vectors back in image order, so any executor gives the same sample.

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
from wga.corpus.feed import ChunkFeed, FeedRule, chunk_rows, valid_grid
from wga.corpus.index import ProbeIndex, original_position
from wga.errors import InvalidInput
from wga.executors import Executor, WorkerSpec
from wga.models import model_reference

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


@dataclass(frozen=True)
class SampleJob:
    """What a sampling worker needs to rebuild its model anywhere (picklable)."""

    model: str  # registry name, or the path of a .keras file
    layer: str
    side: int
    per_image: int
    seed: int


class SampleWorker:
    """An executor's sampling worker: the model cut at the layer and compiled once (the job's,
    or in this process the driver's loaded model); each chunk's feed batch → the activation
    vectors at its images' sampled positions."""

    def __init__(self, job: SampleJob, loaded: LoadedModel | None = None) -> None:
        from wga.corpus.inference import compile_inference
        from wga.models import default_registry
        from wga.models.surgery import cut

        self.job = job
        model = (loaded or default_registry().load(job.model)).model
        self.forward = compile_inference(cut(model, job.layer), lambda maps: maps)

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        """One chunk's ``vectors`` (n, C) float16 and ``picks`` (n, 5) int32 — image id, grid
        y, grid x, and the image's original height and width — and the ``images`` fed."""
        batch = {key: np.asarray(value) for key, value in batch.items()}
        job = self.job
        acts = self.forward(batch["images"])
        valid = valid_grid(batch["shapes"], acts.shape[1:3], job.side)
        vectors, picks = [], []
        for row, image_id in enumerate(batch["ids"].tolist()):
            if not bool(batch["ok"][row]):
                continue
            height, width = (int(v) for v in batch["sizes"][row])
            rows, cols = (int(v) for v in valid[row])
            for gy, gx in positions_for(image_id, rows, cols, job.per_image, job.seed):
                vectors.append(acts[row, gy, gx].astype("float16"))
                picks.append((image_id, gy, gx, height, width))
        channels = acts.shape[-1]
        return {
            "vectors": np.stack(vectors) if vectors else np.empty((0, channels), "float16"),
            "picks": np.asarray(picks, "int32").reshape(-1, 5),
            "images": np.asarray(len(batch["ids"])),
        }


def _sample_pass(
    executor: Executor,
    job: SampleJob,
    source: tuple[str, FeedRule, np.ndarray],
    *,
    loaded: LoadedModel,
    batch_size: int,
    workers: int | None,
    label: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The pass itself: every chunk's vectors and picks, back in image order (each image's
    positions in their own order), however the executor returned them."""
    from tqdm.auto import tqdm

    root, rule, ids = source
    rows = chunk_rows([ids[i : i + batch_size] for i in range(0, len(ids), batch_size)])
    spec = WorkerSpec(SampleWorker, (job,), gpu=True, here=SampleWorker(job, loaded))
    vectors, picks = [], []
    with tqdm(total=len(ids), unit="img", disable=label is None, desc=f"sample {label}") as bar:
        for result in executor.map_batches(rows, ChunkFeed(root, rule), spec, workers=workers):
            vectors.append(result["vectors"])
            picks.append(result["picks"])
            bar.update(int(result["images"]))
    if not vectors:
        return np.empty((0, 0), "float16"), np.empty((0, 5), "int32")
    stacked, chosen = np.concatenate(vectors), np.concatenate(picks)
    order = np.lexsort((chosen[:, 2], chosen[:, 1], chosen[:, 0]))  # image, then row-major
    return stacked[order], chosen[order]


def sample_layer(
    index: ProbeIndex,
    loaded: LoadedModel,
    layer: str,
    *,
    per_image: int = PER_IMAGE,
    cap: int = CAP,
    seed: int = 0,
    batch_size: int = BATCH,
    executor: Executor | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Sample:
    """Sample ``layer`` over the probe's corpus (or reuse the stored sample), on ``executor``
    (default: this process; ``workers``: how many on Ray)."""

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
    job = SampleJob(model_reference(loaded), layer, rule.side, per_image, seed)
    if executor is None:
        from wga.executors.local import LocalExecutor

        executor = LocalExecutor()
    stacked, picks = _sample_pass(
        executor,
        job,
        (str(corpus.root), rule, ids),
        loaded=loaded,
        batch_size=batch_size,
        workers=workers,
        label=layer if progress else None,
    )
    stacked, picks = stacked[:cap], picks[:cap]
    if not len(picks):
        raise InvalidInput(
            f"no activations sampled from the corpus of {index.root}: are its images readable?"
        )
    field = _field(index, loaded, layer)
    positions = np.asarray(
        [
            (image_id, gy, gx, *original_position(field, gy, gx, (h, w), rule.side)[:2])
            for image_id, gy, gx, h, w in picks.tolist()
        ],
        dtype="int32",
    )
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
