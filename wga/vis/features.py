"""The part of a model a render needs: input → the chosen layer, ready for gradient ascent.

Rendering a unit of ``mixed5`` never needs ``mixed6`` … ``predictions``: the model is truncated
at the layer (a Keras sub-model sharing the weights), which is most of the speed-up for early
layers. The sub-model is then re-wired (``keras.models.clone_model`` with a ``call_function``,
sharing every weight) so that

* every ReLU — ``Activation("relu")``, ``ReLU()`` and layers built with ``activation="relu"`` —
  becomes a :class:`~wga.vis.objective.RedirectedReLU` (the warm-up of Lucid), and
* a class layer's softmax is dropped: the render maximises the logit, and
* every inference-mode ``BatchNormalization`` that directly follows a convolution (``Conv2D``,
  ``DepthwiseConv2D``, ``SeparableConv2D``) with a linear activation is folded into it: BN at
  inference is a per-channel affine map, so ``conv → BN`` equals one convolution with scaled
  kernels and a shifted bias (exact up to float rounding). InceptionV3 has 94 such pairs; each
  folded pair is one op less forward and backward in every step. The folded convolution is a new
  layer with its own (computed) weights; everything else keeps sharing the model's weights.
  BNs that follow something else (DenseNet's BN after a concatenation) stay as they are.

Size: convolutional layers take any input size through ``LoadedModel.spatial_model()``. A class
layer needs the whole network; when the network ends in global pooling it is rebuilt with a free
input size too (InceptionV3, ResNet50, fine-tuned runs), otherwise (``Flatten``, VGG16's top)
the step resizes the image to the native input (:attr:`FeatureGraph.fixed_size`).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from wga.models.surgery import free_input_size_copy
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


def _is_relu(function: Any) -> bool:
    return getattr(function, "__name__", None) == "relu"


def _is_plain_relu_layer(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        return (
            config.get("max_value") is None
            and not config.get("negative_slope")
            and not config.get("threshold")
        )
    return isinstance(layer, keras.layers.Activation) and _is_relu(layer.activation)


FOLDABLE_CONVOLUTIONS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)


def fold_batchnorm_enabled() -> bool:
    """Folding is on unless ``WGA_FOLD_BN=0`` (benchmarks compare both in one run)."""
    return os.environ.get("WGA_FOLD_BN", "1") != "0"


def _foldable_pairs(sub: keras.Model) -> dict[str, keras.layers.BatchNormalization]:
    """``{convolution name: the BN that folds into it}`` for ``sub``'s graph.

    A pair folds when the BN normalises the last axis, its input is the output of a linear
    convolution, and nothing else in ``sub`` (nor ``sub``'s output) reads that convolution's
    output — otherwise the unfolded value would still be needed.
    """
    nodes = [node for depth in sub._nodes_by_depth.values() for node in depth]
    readers: dict[int, int] = {}
    for node in nodes:
        for tensor in node.arguments.keras_tensors:
            readers[id(tensor)] = readers.get(id(tensor), 0) + 1
    for tensor in sub.outputs:
        readers[id(tensor)] = readers.get(id(tensor), 0) + 1
    calls: dict[str, int] = {}
    for node in nodes:
        calls[node.operation.name] = calls.get(node.operation.name, 0) + 1
    pairs: dict[str, keras.layers.BatchNormalization] = {}
    for node in nodes:
        bn = node.operation
        if not isinstance(bn, keras.layers.BatchNormalization) or calls[bn.name] != 1:
            continue
        if bn.axis not in (-1, 3) or len(node.arguments.keras_tensors) != 1:
            continue
        tensor = node.arguments.keras_tensors[0]
        conv = tensor._keras_history.operation
        if (
            isinstance(conv, FOLDABLE_CONVOLUTIONS)
            and getattr(conv.activation, "__name__", "") == "linear"
            and calls.get(conv.name) == 1
            and readers[id(tensor)] == 1
        ):
            pairs[conv.name] = bn
    return pairs


def _bn_affine(bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """Inference-mode BN as ``y = x * scale + shift`` per channel (float64 for exactness)."""
    mean = np.asarray(bn.moving_mean.numpy(), dtype="float64")
    variance = np.asarray(bn.moving_variance.numpy(), dtype="float64")
    gamma = np.asarray(bn.gamma.numpy(), dtype="float64") if bn.scale else 1.0
    beta = np.asarray(bn.beta.numpy(), dtype="float64") if bn.center else 0.0
    scale = gamma / np.sqrt(variance + bn.epsilon)
    return scale, beta - mean * scale


def _folded_convolution(
    conv: keras.layers.Layer, bn: keras.layers.BatchNormalization, inputs: Any
) -> Any:
    """A twin of ``conv`` with ``bn`` folded in, called on ``inputs``."""
    scale, shift = _bn_affine(bn)
    config = conv.get_config()
    config.update(name=f"{conv.name}_bnfolded", use_bias=True, activation="linear")
    for key in [k for k in config if k.endswith(("regularizer", "constraint"))]:
        config[key] = None
    twin = type(conv).from_config(config)
    out = twin(inputs)
    bias = np.asarray(conv.bias.numpy(), dtype="float64") if conv.use_bias else 0.0
    new_bias = (bias * scale + shift).astype("float32")
    if isinstance(conv, keras.layers.SeparableConv2D):
        pointwise = np.asarray(conv.pointwise_kernel.numpy(), dtype="float64") * scale
        weights = [conv.depthwise_kernel.numpy(), pointwise.astype("float32"), new_bias]
    elif isinstance(conv, keras.layers.DepthwiseConv2D):
        kernel = np.asarray(conv.kernel.numpy(), dtype="float64")  # (h, w, in, multiplier)
        kernel = kernel * np.reshape(scale, kernel.shape[2:])
        weights = [kernel.astype("float32"), new_bias]
    else:
        kernel = np.asarray(conv.kernel.numpy(), dtype="float64") * scale  # (h, w, in, out)
        weights = [kernel.astype("float32"), new_bias]
    twin.set_weights(weights)
    return out


def _rewire(sub: keras.Model, target: LayerInfo, fold: bool = True) -> keras.Model:
    """``sub`` with redirectable ReLUs, BNs folded (``fold``) and, for a class layer, a linear
    (logit) output."""
    twins: dict[str, keras.layers.Layer] = {}
    folds = _foldable_pairs(sub) if fold else {}
    folded_bns = {bn.name for bn in folds.values()}

    def linear_twin(layer: keras.layers.Layer, args: tuple, kwargs: dict) -> Any:
        config = layer.get_config()
        config["activation"] = "linear"
        config["name"] = f"{layer.name}_linear"
        twin = type(layer).from_config(config)
        out = twin(*args, **kwargs)
        twin.set_weights(layer.get_weights())
        twins[layer.name] = twin
        return out

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if layer.name in folds:
            return _folded_convolution(layer, folds[layer.name], args[0])
        if layer.name in folded_bns:
            return args[0]  # already applied by the folded convolution before it
        if _is_plain_relu_layer(layer):
            return RedirectedReLU(name=f"{layer.name}_redirected")(*args)
        activation = getattr(layer, "activation", None)
        if activation is None or isinstance(layer, keras.layers.Activation):
            return layer(*args, **kwargs)
        if layer.name == target.name and target.kind == "class":
            if getattr(activation, "__name__", "") == "linear":
                return layer(*args, **kwargs)
            return linear_twin(layer, args, kwargs)
        if _is_relu(activation):
            return RedirectedReLU(name=f"{layer.name}_redirected")(linear_twin(layer, args, kwargs))
        return layer(*args, **kwargs)

    return keras.models.clone_model(sub, clone_function=lambda layer: layer, call_function=call)


def _free_size_full_model(loaded: LoadedModel) -> keras.Model | None:
    """The whole model (class layer included) with a free input size, if its graph allows it."""
    model = loaded.model
    shape = tuple(model.inputs[0].shape)
    try:
        free = free_input_size_copy(model)
        if free is model:
            return model
        side = int(shape[1] or loaded.spec.input_size) + 32
        free(np.zeros((1, side, side, shape[-1]), dtype="float32"))  # Flatten fails here
    except Exception as error:  # Flatten → Dense cannot take other sizes; any rebuild error
        log.info("%s: class layer needs its native input size (%s)", loaded.name, error)
        return None
    return free


def _build(loaded: LoadedModel, layer_name: str, fold: bool) -> FeatureGraph:
    info = loaded.layer(layer_name)
    source: keras.Model | None = None
    if info.spatial:
        spatial = loaded.spatial_model()
        if spatial is not None and any(layer.name == layer_name for layer in spatial.layers):
            source = spatial
    else:  # spatial_model() may keep a Flatten → Dense head that no longer fits: check it
        source = _free_size_full_model(loaded)
    fixed_size: int | None = None
    if source is None:
        source = loaded.model
        shape = tuple(source.inputs[0].shape)
        fixed_size = int(shape[1] or loaded.spec.input_size)
    sub = keras.Model(source.inputs, source.get_layer(layer_name).output)
    return FeatureGraph(_rewire(sub, info, fold), info, fixed_size)


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


def feature_graph(loaded: LoadedModel, layer: str, fold: bool | None = None) -> FeatureGraph:
    """The (cached) truncated, re-wired model for ``layer`` of ``loaded``; ``fold`` (default:
    :func:`fold_batchnorm_enabled`) folds BatchNormalization into the convolutions before it."""
    fold = fold_batchnorm_enabled() if fold is None else fold
    return _graphs.get(loaded, (layer, fold), lambda: _build(loaded, layer, fold))
