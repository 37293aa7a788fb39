"""What the network sees in one artwork: its strongest units, where they fire, and factor groups.

The image-centric view of interpretability ("The Building Blocks of Interpretability", Olah et
al. 2018), for an artwork of a probed corpus or any image file:

* **units** — per layer, the top-N units by the artwork's spatial maximum, each with its value,
  its **percentile** among the corpus's maxima for that unit (:mod:`wga.corpus.ranks`: what is
  unusual about this painting, not what every painting has), where it peaks (grid cell and
  original pixels) and its map over the artwork (a heat overlay); sortable by value or by
  percentile;
* **groups** — the layer's activations (positions × channels) factorised into K non-negative
  groups with scikit-learn's :class:`~sklearn.decomposition.NMF`: each group's spatial map, its
  share of the activation, its strongest units, and the recipe of its icon (the direction
  objective on the group's channel vector, as the atlas renders its cells). Icons are rendered by
  whatever renderer the caller hands in (the server's queue, an executor in this process for the CLI):
  this floor never imports the server.

The artwork is fed exactly as the probe fed it (:mod:`wga.corpus.feed`'s rule: same resize,
preprocessing and padding), and the values are the probe's recorded values (pre-activation where
the probe records it), so an indexed artwork's top values equal its row of the index's maxima.
Positions outside the artwork (the feed's padding) never count.

Groups factorise the layer's *output* (the ReLU of a recorded pre-activation; a layer without
a ReLU clipped at zero): NMF needs non-negative data, and a ReLU layer's output is what the next
layer reads.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from wga.corpus.feed import FeedRule, valid_grid
from wga.corpus.index import original_position
from wga.corpus.receptive import DEFAULT_BORDER_MARGIN
from wga.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from wga.corpus.index import ProbeIndex
    from wga.corpus.receptive import Field
    from wga.models import LoadedModel, ModelRegistry
    from wga.vis.vectors import VectorStore

DEFAULT_TOP = 8
DEFAULT_GROUPS = 6  # the Building Blocks article's neuron groups
MAX_TOP = 256
MAX_GROUPS = 32
GROUP_UNITS = 5  # strongest units listed per group
NMF_MAX_ITER = 200
NMF_TOL = 1e-4
ICON_SIZE = 80  # the atlas's icon side
ICON_STEPS = 128
Sort = Literal["value", "percentile"]
SORTS: tuple[str, ...] = ("value", "percentile")

# A renderer takes recipes and returns, per recipe, where its image is (a path, a URL, a render
# id) or None when it failed: the atlas's IconRenderer seam.
Renderer = Callable[[Sequence[Any]], list[str | None]]


# -- the picture -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    """One image as the model is fed it, and what it is."""

    batch: np.ndarray  # (1, side, side, 3) model input, zero-padded like the probe's feed
    shape: tuple[int, int]  # resized (height, width): the valid region of the input
    size: tuple[int, int]  # original (height, width)
    file: str  # relative to the corpus, or the file's name
    id: int | None = None  # the image's id in the index, None for an image from outside
    meta: dict[str, str] = field(default_factory=dict)
    source: Path | bytes | None = field(default=None, repr=False, compare=False)  # to show it

    def describe(self) -> dict[str, Any]:
        return {"file": self.file, "id": self.id, "size": list(self.size), **self.meta}


def picture_from(source: str | Path | bytes, rule: FeedRule, *, file: str | None = None) -> Picture:
    """An image file (or its bytes) fed by ``rule``. Unreadable data → InvalidInput naming it."""
    from wga.corpus.views import model_input

    name = file or (Path(source).name if not isinstance(source, bytes) else "upload")
    readable: Any = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    try:
        batch, shape, size = model_input(readable, rule)
    except (OSError, ValueError, SyntaxError) as error:  # Pillow's ways of saying "not an image"
        raise InvalidInput(
            f"{name!r} is not a readable image ({type(error).__name__}: {error}): give a JPEG, "
            "PNG or WebP file"
        ) from None
    return Picture(
        batch, shape, size, name, source=source if isinstance(source, bytes) else readable
    )


def picture_from_index(index: ProbeIndex, image_id: int) -> Picture:
    """Artwork ``image_id`` of ``index``, fed as the probe fed it."""
    from wga.corpus.views import image_path

    path = image_path(index, image_id)  # NotFound for a bad id or a vanished file
    entry = index.images()[image_id]
    picture = picture_from(path, index_rule(index), file=entry["file"])
    meta = {key: value for key, value in entry.items() if key != "file"}
    return replace(picture, id=image_id, meta=meta)


def index_margin(index: ProbeIndex) -> float:
    """The border margin the index was probed with (0, every valid position, before it existed)."""
    return float(index.description.get("border_margin", 0.0))


def index_rule(index: ProbeIndex) -> FeedRule:
    return FeedRule(index.side, index.description["feed"]["preprocessing"])


def index_model(index: ProbeIndex, registry: ModelRegistry) -> LoadedModel:
    """The model the index was probed with (by registry name, else its file), refusing one whose
    weights changed since: percentiles against another model's maxima would mean nothing."""
    d = index.description
    name = d["model"] if d["model"] in registry.names() else d.get("model_ref") or d["model"]
    loaded = registry.load(name)
    if d.get("model_fingerprint") and loaded.fingerprint != d["model_fingerprint"]:
        raise InvalidInput(
            f"the weights of {name!r} are not those probe {index.name!r} was made with "
            f"({loaded.fingerprint} ≠ {d['model_fingerprint']}): probe the corpus again with "
            "this model, or look with --model and no index"
        )
    return loaded


def resolve_image(index: ProbeIndex, text: str) -> int | None:
    """``text`` as an image of ``index``: its id, or its file relative to the corpus (as
    ``examples`` prints it); ``None`` when it is neither (then it may be a file elsewhere)."""
    images = index.images()
    text = str(text).strip()
    if text.isdigit():
        image_id = int(text)
        if image_id >= len(images):
            raise NotFound(
                f"probe {index.name!r} has no image {image_id}: ids run 0 … {len(images) - 1}"
            )
        return image_id
    wanted = Path(text).as_posix()
    for image_id, entry in enumerate(images):
        if entry["file"] == wanted:
            return image_id
    return None


def picture_named(text: str, index: ProbeIndex | None, rule: FeedRule | None = None) -> Picture:
    """``--image ID|FILE``: an image of the index (id or corpus path), else an image file here,
    fed by the index's rule (or ``rule`` without an index)."""
    if index is not None:
        image_id = resolve_image(index, text)
        if image_id is not None:
            return picture_from_index(index, image_id)
    path = Path(text).expanduser()
    if not path.is_file():
        within = (
            f"an image of probe {index.name!r} (an id 0 … {len(index.images()) - 1} or a file "
            "as `wga examples` prints it) nor "
            if index is not None
            else ""
        )
        raise NotFound(f"--image {text!r} is neither {within}an image file here")
    if index is not None:
        rule = index_rule(index)
    if rule is None:
        raise InvalidInput("an image from outside a probe needs the model's feed rule")
    return picture_from(path, rule)


# -- activations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSeen:
    """One layer's recorded values over the artwork's valid region."""

    name: str
    values: np.ndarray  # (rows, cols, C) float32, the probe's recorded values
    kind: str  # what the values are: "pre-activation", "logits" or "output"
    grid: tuple[int, int]  # the layer's whole grid for a side × side input
    spatial: bool  # False for Dense layers (one position, no map)
    kept: np.ndarray | None = None  # (rows, cols) bool: positions the border margin keeps

    def kept_mask(self) -> np.ndarray:
        if self.kept is None:
            return np.ones(self.values.shape[:2], bool)
        return self.kept

    @property
    def units(self) -> int:
        return int(self.values.shape[-1])

    def output(self) -> np.ndarray:
        """What the layer passes on: the ReLU of a recorded pre-activation, else the values."""
        return np.maximum(self.values, 0.0) if self.kind == "pre-activation" else self.values

    def maxima(self) -> np.ndarray:
        """Per unit, the spatial maximum over the kept positions (C,): what the probe records."""
        return self.values[self.kept_mask()].max(axis=0)

    def argmax(self) -> np.ndarray:
        """Per unit, the flat index (over the region) of its maximum among the kept positions."""
        masked = np.where(self.kept_mask()[..., None], self.values, -np.inf)
        return masked.reshape(-1, self.units).argmax(axis=0)


_look_models: Any = None


def _per_model() -> Any:
    """What look builds once per loaded model (its probe model, receptive fields)."""
    global _look_models
    if _look_models is None:
        from wga.vis.features import ModelScopedCache

        _look_models = ModelScopedCache()
    return _look_models


def _look_model(loaded: LoadedModel, layers: tuple[str, ...]) -> tuple[Any, list[Any]]:
    """The probe's multi-output model of ``layers`` (recorded values), built once per model."""
    from wga.corpus.probe import build_probe_model

    return _per_model().get(  # type: ignore[no-any-return]
        loaded, ("look", layers), lambda: build_probe_model(loaded, list(layers))
    )


def check_layers(loaded: LoadedModel, layers: Sequence[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in layers if name.strip()))
    if not names:
        raise InvalidInput("name at least one layer (--layers L1,L2; `wga models --layers M`)")
    for name in names:
        loaded.layer(name)  # NotFound with the closest names
    return names


def layer_field(loaded: LoadedModel, layer: str, side: int) -> Field:
    """The layer's receptive field for a ``side`` input (computed once per model)."""
    from wga.corpus.receptive import receptive_field

    return _per_model().get(  # type: ignore[no-any-return]
        loaded, ("field", layer, side), lambda: receptive_field(loaded.model, layer, side)
    )


def see(
    loaded: LoadedModel, layers: Sequence[str], picture: Picture, *, margin: float = 0.0
) -> list[LayerSeen]:
    """One forward pass: each layer's recorded values over the picture's valid region, and the
    positions a probe with border margin ``margin`` keeps (:func:`wga.corpus.receptive.border_mask`)."""
    from wga.corpus.receptive import border_mask

    names = check_layers(loaded, layers)
    model, plan = _look_model(loaded, names)
    side = int(picture.batch.shape[1])
    outputs = model(picture.batch, training=False)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    seen = []
    for layer, output in zip(plan, outputs, strict=True):
        array = np.asarray(output, np.float32)[0]
        if array.ndim == 1:
            seen.append(LayerSeen(layer.name, array.reshape(1, 1, -1), layer.values, (1, 1), False))
            continue
        grid = (int(array.shape[0]), int(array.shape[1]))
        rows, cols = valid_grid(np.asarray([picture.shape]), grid, side)[0]
        rows, cols = max(int(rows), 1), max(int(cols), 1)
        values = np.ascontiguousarray(array[:rows, :cols])
        field = layer_field(loaded, layer.name, side)
        kept = border_mask(field, np.asarray([picture.shape]), grid, side, margin)[0]
        seen.append(LayerSeen(layer.name, values, layer.values, grid, True, kept[:rows, :cols]))
    return seen


# -- top units -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitSeen:
    """A unit at its strongest in the artwork."""

    unit: int
    value: float
    percentile: float | None  # among the corpus's maxima; None without an index
    grid: tuple[int, int]  # the cell of its maximum on the layer's grid
    y: int  # that cell's centre in the original image's pixels
    x: int
    map: np.ndarray  # the unit's recorded values over the valid region

    def as_dict(self, *, with_map: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "unit": self.unit,
            "value": round(self.value, 5),
            "percentile": None if self.percentile is None else round(self.percentile, 3),
            "y": self.y,
            "x": self.x,
            "grid": list(self.grid),
        }
        if with_map:
            out["map"] = _rounded(self.map)
        return out


def _rounded(array: np.ndarray) -> list[Any]:
    return np.round(np.asarray(array, np.float64), 4).tolist()  # type: ignore[no-any-return]


def rank_units(
    maxima: np.ndarray, percentiles: np.ndarray | None, top: int, sort: str
) -> np.ndarray:
    """The ``top`` units by value, or by percentile then value (units without a percentile
    last); equal keys by unit number."""
    if sort not in SORTS:
        raise InvalidInput(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    units = np.arange(len(maxima))
    if sort == "percentile":
        if percentiles is None:
            raise InvalidInput(
                "sorting by percentile needs a probe index (--index): without one there is no "
                "corpus to compare with"
            )
        key = np.nan_to_num(np.asarray(percentiles, np.float64), nan=-1.0)
        order = np.lexsort((units, -np.asarray(maxima, np.float64), -key))
    else:
        order = np.lexsort((units, -np.asarray(maxima, np.float64)))
    return order[:top]


def top_units(
    seen: LayerSeen,
    field: Field,
    picture: Picture,
    side: int,
    *,
    top: int = DEFAULT_TOP,
    sort: str = "value",
    percentiles: np.ndarray | None = None,
) -> list[UnitSeen]:
    """The layer's ``top`` units for the picture (see :func:`rank_units`)."""
    maxima = seen.maxima()
    cells = seen.argmax()
    found = []
    for unit in rank_units(maxima, percentiles, top, sort):
        cell = int(cells[unit])
        gy, gx = divmod(cell, seen.values.shape[1])
        y, x, _ = original_position(field, gy, gx, picture.size, side)
        percentile = None if percentiles is None else float(percentiles[unit])
        if percentile is not None and np.isnan(percentile):
            percentile = None
        found.append(
            UnitSeen(
                int(unit),
                float(maxima[unit]),
                percentile,
                (gy, gx),
                y,
                x,
                seen.values[..., unit],
            )
        )
    return found


# -- factor groups -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One non-negative factor of a layer's activations over the artwork."""

    share: float  # of the factorisation's total activation (the groups' shares sum to 1)
    units: list[int]  # the strongest units of its channel vector, strongest first
    weights: list[float]  # their weights in the (unit-length) channel vector
    map: np.ndarray  # (rows, cols) where in the artwork the group is, ≥ 0
    vector: np.ndarray  # (C,) the group's channel direction, unit length, ≥ 0
    direction: str  # the vector's hash (wga.vis.vectors): what the icon recipe names
    icon: str | None = None  # where the rendered icon is (path or URL), when rendered
    recipe: Any = None  # the icon's render recipe (wga.vis.recipe.Recipe)

    def as_dict(self) -> dict[str, Any]:
        return {
            "share": round(self.share, 5),
            "units": self.units,
            "weights": [round(w, 5) for w in self.weights],
            "map": _rounded(self.map),
            "icon": self.icon,
            "direction": self.direction,
            "recipe": None if self.recipe is None else self.recipe.as_dict(),
        }


@dataclass(frozen=True)
class Factorisation:
    """NMF of a layer's (positions × channels) activations: ``activations ≈ maps @ vectors``."""

    maps: np.ndarray  # (positions, K) — sklearn's W
    components: np.ndarray  # (K, C) — sklearn's H
    error: float  # sklearn's reconstruction_err_: the Frobenius norm of the residual
    iterations: int


def factorise(activations: np.ndarray, k: int, *, seed: int = 0) -> Factorisation | None:
    """scikit-learn's NMF of ``activations`` (positions × channels, ≥ 0) into ``k`` factors
    (fewer when the matrix is smaller); ``None`` when there is nothing to factorise (all zero).

    NNDSVDa initialisation (deterministic, no zero entries to get stuck at), coordinate descent.
    BLAS runs single-threaded here: the products are small, and on a busy machine two threads
    made it 4× slower (measured: 0.28 s against 1.3 s for 3136 × 256, K = 6).
    """
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    data = np.asarray(activations, np.float32)
    if data.ndim != 2 or not np.all(np.isfinite(data)) or data.min(initial=0.0) < 0:
        raise InvalidInput("NMF needs a finite, non-negative positions × channels matrix")
    k = min(k, *data.shape)
    if k < 1 or not np.any(data):
        return None
    model = NMF(
        n_components=k,
        init="nndsvda",
        solver="cd",
        max_iter=NMF_MAX_ITER,
        tol=NMF_TOL,
        random_state=seed,
    )
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # the best after max_iter is shown
        maps = model.fit_transform(data)
    return Factorisation(
        np.asarray(maps, np.float32),
        np.asarray(model.components_, np.float32),
        float(model.reconstruction_err_),
        int(model.n_iter_),
    )


def factor_groups(
    seen: LayerSeen, k: int = DEFAULT_GROUPS, *, seed: int = 0
) -> tuple[list[Group], Factorisation | None]:
    """The layer's activations over the artwork as ``k`` groups, largest share first (none for a
    layer without positions, or one that is silent on this artwork), and the factorisation.

    Each group's map is scaled so that ``map ⊗ vector`` is its part of the factorisation: the
    groups together reconstruct the activations up to the factorisation's error."""
    from wga.vis.vectors import unit as unit_length
    from wga.vis.vectors import vector_hash

    if not seen.spatial:
        return [], None
    rows, cols = seen.values.shape[:2]
    positive = np.maximum(seen.output(), 0.0).reshape(rows * cols, seen.units)
    result = factorise(positive, k, seed=seed)
    if result is None:
        return [], None
    # Group i contributes maps[:, i] ⊗ components[i]: its share is the sum of that outer product.
    mass = result.maps.sum(axis=0).astype(np.float64) * result.components.sum(axis=1)
    total = float(mass.sum())
    groups = []
    for i in np.lexsort((np.arange(len(mass)), -mass)):
        component = result.components[i].astype(np.float64)
        if not np.any(component) or mass[i] <= 0:
            continue
        norm = float(np.linalg.norm(component))
        vector = unit_length(component)
        strongest = np.lexsort((np.arange(len(component)), -component))[:GROUP_UNITS]
        strongest = [int(u) for u in strongest if component[u] > 0]
        groups.append(
            Group(
                share=float(mass[i] / total) if total > 0 else 0.0,
                units=strongest,
                weights=[float(component[u] / norm) for u in strongest],
                map=(result.maps[:, i] * norm).reshape(rows, cols),
                vector=vector,
                direction=vector_hash(vector),
            )
        )
    return groups, result


def icon_recipes(
    model: str,
    layer: str,
    groups: Sequence[Group],
    *,
    size: int = ICON_SIZE,
    steps: int = ICON_STEPS,
    seed: int = 0,
) -> list[Any]:
    """Each group's icon: the atlas's icon recipe (the direction objective, dot × cos², at the
    centre position) on the group's channel vector."""
    from wga.corpus.atlas import AtlasOptions, icon_recipe

    options = AtlasOptions(layer=layer, icon=size, steps=steps, seed=seed)
    return [icon_recipe(model, options, group.direction) for group in groups]


# -- the whole view ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerLook:
    layer: str
    values: str  # what the numbers are (the probe's ValueKind)
    units: list[UnitSeen]
    groups: list[Group]
    grid: tuple[int, int]  # the layer's whole grid
    region: tuple[int, int]  # rows × cols of it on the artwork (what the maps cover)
    error: float | None = None  # NMF reconstruction error

    def as_dict(self, *, unit_maps: bool = False) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "values": self.values,
            "grid": list(self.grid),
            "region": list(self.region),
            "units": [u.as_dict(with_map=unit_maps) for u in self.units],
            "groups": [g.as_dict() for g in self.groups],
            "nmf_error": None if self.error is None else round(self.error, 5),
        }


@dataclass(frozen=True)
class Look:
    """What the model sees in one picture (``look --json``'s document, DESIGN.md)."""

    model: str
    picture: Picture
    layers: list[LayerLook]
    probe: str | None = None
    sort: str = "value"
    margin: float = 0.0  # the border margin the units' maxima were taken with
    seen: list[LayerSeen] = field(default_factory=list, repr=False, compare=False)

    def as_dict(self, *, unit_maps: bool = False) -> dict[str, Any]:
        return {
            "model": self.model,
            "probe": self.probe,
            "sort": self.sort,
            "border_margin": self.margin,
            "image": self.picture.describe(),
            "layers": [layer.as_dict(unit_maps=unit_maps) for layer in self.layers],
        }


def _field_of(loaded: LoadedModel, index: ProbeIndex | None, layer: str, side: int) -> Field:
    if index is not None and layer in index.layer_names():
        return index.field(layer)
    return layer_field(loaded, layer, side)


def look(
    loaded: LoadedModel,
    picture: Picture,
    layers: Sequence[str],
    *,
    index: ProbeIndex | None = None,
    top: int = DEFAULT_TOP,
    groups: int = DEFAULT_GROUPS,
    sort: str = "value",
    renderer: Renderer | None = None,
    vectors: VectorStore | None = None,
    icon_size: int = ICON_SIZE,
    icon_steps: int = ICON_STEPS,
    margin: float | None = None,
) -> Look:
    """The artwork view of ``picture`` at ``layers`` (see the module docstring).

    With ``index``, units carry percentiles among its corpus (for the layers it probed).
    ``vectors`` keeps the groups' directions (a renderer needs them there); ``renderer`` renders
    the group icons — all of them in one call, so that it can batch. ``margin``: the border
    margin (:func:`wga.corpus.receptive.border_mask`); by default the index's, so values and
    percentiles compare like with like, else :data:`~wga.corpus.receptive.DEFAULT_BORDER_MARGIN`.
    """
    from wga.corpus.ranks import unit_percentiles
    from wga.models import model_reference

    if not 1 <= top <= MAX_TOP:
        raise InvalidInput(f"--top must be 1 … {MAX_TOP}, not {top}")
    if not 0 <= groups <= MAX_GROUPS:
        raise InvalidInput(f"--groups must be 0 … {MAX_GROUPS}, not {groups}")
    side = int(picture.batch.shape[1])
    reference = model_reference(loaded)
    looked: list[LayerLook] = []
    all_groups: list[tuple[int, Group]] = []
    if margin is None:
        margin = index_margin(index) if index is not None else DEFAULT_BORDER_MARGIN
    seen_layers = see(loaded, layers, picture, margin=margin)
    for seen in seen_layers:
        percentiles = None
        if index is not None and seen.name in index.layer_names():
            percentiles = unit_percentiles(index, seen.name, seen.maxima())
        field = _field_of(loaded, index, seen.name, side)
        units = top_units(seen, field, picture, side, top=top, sort=sort, percentiles=percentiles)
        found, factorisation = factor_groups(seen, groups) if groups else ([], None)
        recipes = icon_recipes(reference, seen.name, found, size=icon_size, steps=icon_steps)
        found = [_with(g, recipe=r) for g, r in zip(found, recipes, strict=True)]
        if vectors is not None:
            for group in found:
                vectors.put(group.vector)
        all_groups += [(len(looked), g) for g in found]
        error = None if factorisation is None else factorisation.error
        looked.append(
            LayerLook(seen.name, seen.kind, units, found, seen.grid, seen.values.shape[:2], error)
        )
    if renderer is not None and all_groups:
        rendered = renderer([g.recipe for _, g in all_groups])
        by_layer: dict[int, list[Group]] = {}
        for (position, group), icon in zip(all_groups, rendered, strict=True):
            by_layer.setdefault(position, []).append(_with(group, icon=icon))
        looked = [
            _replace_groups(layer, by_layer.get(position, layer.groups))
            for position, layer in enumerate(looked)
        ]
    probe = None if index is None else index.name
    return Look(reference, picture, looked, probe, sort, margin, seen_layers)


def _with(group: Group, **changes: Any) -> Group:
    return replace(group, **changes)


def _replace_groups(layer: LayerLook, groups: list[Group]) -> LayerLook:
    return replace(layer, groups=groups)
