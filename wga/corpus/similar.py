"""Similar artworks: nearest neighbours of an artwork in a probed corpus, by content or by style.

Two descriptions of an artwork at a layer, both read from the probe's index:

* **content** — the per-channel spatial maxima (``INDEX/maxima/<i>.npy``, N × C): which features
  are present anywhere in the picture, wherever they are;
* **style** — the per-channel mean and standard deviation of the layer's output over the
  artwork's kept positions, concatenated (``INDEX/style/<i>.npy``, N × 2C): the feature
  statistics that neural style transfer matches (Huang & Belongie's AdaIN uses exactly these),
  blind to where anything is.

Similarity is the cosine. The search is exact: every stored row is normalised once (float32, kept
in memory for the next query, a few hundred MB at most) and a query is one matrix-vector product,
then a partial sort. Measured in ``benchmarks/look_speed.py``: 100,000 rows × 512 channels in a
few tens of milliseconds — linear in N × C, so exact search is fine up to a few hundred thousand
artworks; past that (or past the memory for the normalised matrix) an approximate index (FAISS,
hnswlib) would take over.

Scores are rounded to 6 decimals (float32 products differ from float64 ones in the 7th), and
equal scores are ordered by image id, so results are reproducible. The query artwork is excluded;
rows of unread artworks (NaN) never appear.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from wga.errors import InvalidInput

if TYPE_CHECKING:
    from wga.corpus.index import ProbeIndex
    from wga.corpus.look import LayerSeen

BY: tuple[str, ...] = ("content", "style")
DEFAULT_K = 12
MAX_K = 1000
SCORE_DECIMALS = 6
BLOCK_ROWS = 16384  # rows normalised at once
CACHE_BYTES = 1 << 30  # normalised matrices kept in memory across queries (least recent dropped)


def check_by(by: str) -> str:
    if by not in BY:
        raise InvalidInput(f"--by must be one of {', '.join(BY)}, not {by!r}")
    return by


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"--k must be a whole number from 1 to {MAX_K}, not {k!r}")
    return k


def stored_features(index: ProbeIndex, layer: str, by: str) -> np.ndarray:
    """The index's N × D description of every artwork at ``layer`` (memory-mapped)."""
    check_by(by)
    return index.maxima(layer) if by == "content" else index.style(layer)


def style_statistics(output: np.ndarray) -> np.ndarray:
    """Per channel, the mean and the (population) standard deviation of a layer's output over
    positions (``(..., C)``: a map or a list of kept positions) → ``(2C,)``: what the probe
    stores as style."""
    flat = np.asarray(output, np.float64).reshape(-1, output.shape[-1])
    return np.concatenate([flat.mean(axis=0), flat.std(axis=0)]).astype(np.float32)


def query_features(seen: LayerSeen, by: str) -> np.ndarray:
    """The description of a picture the model has just seen, as the index stores it."""
    check_by(by)
    if by == "content":
        return seen.maxima().astype(np.float32)
    if not seen.spatial:
        raise InvalidInput(
            f"layer {seen.name!r} has no positions: style (statistics over positions) needs a "
            "convolutional layer; compare by content"
        )
    return style_statistics(seen.output()[seen.kept_mask()])


class Search:
    """Exact cosine search over the rows of one N × D matrix (NaN rows are never found)."""

    def __init__(self, matrix: np.ndarray) -> None:
        rows, dims = matrix.shape
        self.normalised = np.zeros((rows, dims), np.float32)
        self.valid = np.zeros(rows, bool)
        for start in range(0, rows, BLOCK_ROWS):
            block = np.asarray(matrix[start : start + BLOCK_ROWS], np.float32)
            finite = np.all(np.isfinite(block), axis=1)
            block = np.where(finite[:, None], block, 0.0)
            norms = np.linalg.norm(block, axis=1)
            block /= np.where(norms > 0, norms, 1.0)[:, None]
            self.normalised[start : start + len(block)] = block
            self.valid[start : start + len(block)] = finite
        self.rows = rows

    @property
    def nbytes(self) -> int:
        return int(self.normalised.nbytes + self.valid.nbytes)

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """Cosine of ``vector`` with every row, rounded (see the module docstring)."""
        query = np.asarray(vector, np.float32).ravel()
        if query.shape != (self.normalised.shape[1],):
            raise InvalidInput(
                f"a query of {query.size} values for rows of {self.normalised.shape[1]}: the "
                "query must come from the same layer and description"
            )
        if not np.all(np.isfinite(query)):
            raise InvalidInput("the query's features are not finite numbers")
        norm = float(np.linalg.norm(query))
        if norm == 0:
            raise InvalidInput(
                "the query's features are all zero at this layer (nothing fires): there is "
                "nothing to compare; try another layer"
            )
        products = (self.normalised @ (query / norm)).astype(np.float64)
        return np.round(products, SCORE_DECIMALS)

    def query(
        self, vector: np.ndarray, k: int, exclude: int | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` rows most similar to ``vector``: ``(row, score)``, best first, equal
        scores by row; ``exclude`` (the query's own row) left out."""
        check_k(k)
        scores = self.scores(vector)
        scores[~self.valid] = -np.inf
        if exclude is not None and 0 <= exclude < self.rows:
            scores[exclude] = -np.inf
        available = int(np.count_nonzero(np.isfinite(scores)))
        k = min(k, available)
        if k == 0:
            return []
        if k < len(scores):
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            candidates = np.nonzero(scores >= kth)[0]  # every tie at the boundary too
        else:
            candidates = np.nonzero(np.isfinite(scores))[0]
        order = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
        return [(int(row), float(scores[row])) for row in order]


_lock = threading.Lock()
_searches: OrderedDict[tuple[Any, ...], Search] = OrderedDict()


def search_for(index: ProbeIndex, layer: str, by: str) -> Search:
    """The :class:`Search` of an index's layer and description, built once and kept (LRU)."""
    d = index.description
    key = (str(index.root.resolve()), d.get("created"), d.get("done"), layer, by)
    with _lock:
        found = _searches.get(key)
        if found is not None:
            _searches.move_to_end(key)
            return found
    search = Search(stored_features(index, layer, by))
    with _lock:
        _searches[key] = search
        while len(_searches) > 1 and sum(s.nbytes for s in _searches.values()) > CACHE_BYTES:
            _searches.popitem(last=False)
    return search


@dataclass(frozen=True)
class Match:
    """One similar artwork of the index."""

    image: int
    file: str
    score: float
    meta: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "score": self.score, "id": self.image, **self.meta}


def similar(
    index: ProbeIndex,
    layer: str,
    *,
    by: str = "content",
    k: int = DEFAULT_K,
    image: int | None = None,
    vector: np.ndarray | None = None,
) -> list[Match]:
    """The ``k`` artworks of ``index`` most like artwork ``image`` (its stored row; itself
    excluded) or like ``vector`` (a picture from outside, :func:`query_features`)."""
    check_by(by)
    check_k(k)
    index.layer_index(layer)  # NotFound with the closest names
    search = search_for(index, layer, by)
    if vector is None:
        if image is None:
            raise InvalidInput("give the query: an image id of the index, or a feature vector")
        if not 0 <= image < search.rows:
            raise InvalidInput(f"probe {index.name!r} has no image {image}")
        if not search.valid[image]:
            raise InvalidInput(
                f"artwork {image} of probe {index.name!r} was not read by the probe (or not "
                "yet): it has nothing to compare"
            )
        vector = np.asarray(stored_features(index, layer, by)[image], np.float32)
    images = index.images()
    found = []
    for row, score in search.query(vector, k, exclude=image):
        entry = images[row]
        meta = {key: value for key, value in entry.items() if key != "file"}
        found.append(Match(row, entry["file"], score, meta))
    return found
