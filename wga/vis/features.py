"""The part of a model a render needs: input → the chosen layer, ready for gradient ascent.

Rendering a unit of ``mixed5`` never needs ``mixed6`` … ``predictions``: the model is cut at the
layer (a sub-model sharing the weights), which is most of the speed-up for early layers. The cut
is then rewired (:func:`wga.models.surgery.rewire`, which also decides what a ReLU is) so that

* every ReLU — ``Activation("relu")``, ``ReLU()`` and layers built with ``activation="relu"`` —
  becomes a :class:`~wga.vis.objective.RedirectedReLU` (the warm-up of Lucid), and
* a class layer's softmax is dropped: the render maximises the logit, and
* every inference-mode ``BatchNormalization`` that directly follows a convolution with a linear
  activation is folded into it (exact up to float rounding; one op less forward and backward in
  every step: InceptionV3 has 94 such pairs).

Size: convolutional layers take any input size through ``LoadedModel.spatial_model()``. A class
layer needs the whole network; when the network ends in global pooling it is rebuilt with a free
input size too (InceptionV3, ResNet50, fine-tuned runs), otherwise (``Flatten``, VGG16's top)
the step resizes the image to the native input (:attr:`FeatureGraph.fixed_size`).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras

from wga.models.surgery import cut, layer_model, rewire, whole_model_at_any_size
from wga.vis.objective import RedirectedReLU

if TYPE_CHECKING:
    from wga.models import LayerInfo, LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureGraph:
    """``model``: images (model input) → the layer's output, ReLUs redirectable, logits."""

    model: keras.Model
    layer: LayerInfo
    fixed_size: int | None  # the input side the model insists on; None = any size


def redirected_relu(name: str) -> RedirectedReLU:
    """The engine's ReLU for the surgery to put where the model had ReLU ``name``."""
    return RedirectedReLU(name=f"{name}_redirected")


def _build(loaded: LoadedModel, layer_name: str, fold: bool) -> FeatureGraph:
    info = loaded.layer(layer_name)
    sub, fixed_size = layer_model(loaded, layer_name)
    logits = [info.name] if info.kind == "class" else []
    rewired = rewire(sub, relu=redirected_relu, fold_batchnorm=fold, logits=logits)
    return FeatureGraph(rewired.model, info, fixed_size)


def _build_several(loaded: LoadedModel, layers: tuple[str, ...], fold: bool) -> FeatureGraph:
    """One model with an output per layer (an objective that reads several): cut from the
    free-size model when it holds every layer, else from the whole network (class layers)."""
    infos = [loaded.layer(name) for name in layers]
    source: keras.Model | None = None
    if all(info.spatial for info in infos):
        spatial = loaded.spatial_model()
        if spatial is not None and set(layers) <= {layer.name for layer in spatial.layers}:
            source = spatial
    else:
        source = whole_model_at_any_size(loaded)
    fixed_size: int | None = None
    if source is None:
        source = loaded.model
        fixed_size = int(tuple(source.inputs[0].shape)[1] or loaded.spec.input_size)
    logits = [info.name for info in infos if info.kind == "class"]
    sub = cut(source, list(layers))
    rewired = rewire(sub, relu=redirected_relu, fold_batchnorm=fold, logits=logits)
    return FeatureGraph(rewired.model, infos[0], fixed_size)


class ModelScopedCache:
    """Values built once per (loaded model, key) and kept while that model lives; thread-safe.

    Keyed by the model object's identity (a weak reference checks it is still the same object),
    so two registries' copies of one model never share compiled state by accident.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, Hashable], tuple[weakref.ref, Any]] = {}
        self._building: dict[tuple[int, Hashable], threading.Lock] = {}

    def _lookup(self, key: tuple[int, Hashable], loaded: LoadedModel) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is loaded:
            return True, entry[1]
        return False, None

    def get(self, loaded: LoadedModel, key: Hashable, build: Callable[[], Any]) -> Any:
        full_key = (id(loaded), key)
        with self._lock:
            found, value = self._lookup(full_key, loaded)
            if found:
                return value
            lock = self._building.setdefault(full_key, threading.Lock())
        with lock:  # one builder per key; other keys build in parallel
            with self._lock:
                found, value = self._lookup(full_key, loaded)
                if found:
                    return value
            value = build()
            with self._lock:
                self._entries = {k: v for k, v in self._entries.items() if v[0]() is not None}
                self._entries[full_key] = (weakref.ref(loaded), value)
            return value

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for ref, _ in self._entries.values() if ref() is not None)


_graphs = ModelScopedCache()


def feature_graph(
    loaded: LoadedModel, layer: str | tuple[str, ...], fold: bool = True
) -> FeatureGraph:
    """The (cached) truncated, re-wired model for ``layer`` of ``loaded`` (a tuple of layers: one
    output each, in that order); ``fold`` folds BatchNormalization into the convolutions before
    it (the engine's ``fold_batchnorm`` switch)."""
    if isinstance(layer, tuple) and len(layer) == 1:
        layer = layer[0]
    if isinstance(layer, tuple):
        layers = layer
        return _graphs.get(loaded, (layers, fold), lambda: _build_several(loaded, layers, fold))
    return _graphs.get(loaded, (layer, fold), lambda: _build(loaded, layer, fold))
