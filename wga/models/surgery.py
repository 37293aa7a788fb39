"""Model surgery: the same weights in another graph — the one place that rewires a model.

Renders, the probe, atlas sampling and the artwork views all see a model through this module:

* **Cut at a layer** (:func:`cut`): a sub-model from the input to a layer (or several), sharing
  the weights, so nothing after the layer is computed. :func:`layer_model` picks the graph a
  render needs: free input size where the architecture allows it, else the native size.
* **ReLU detection** (:func:`is_relu`, :func:`has_builtin_relu`) — one rule: a ReLU is exactly
  ``max(x, 0)``: a ``ReLU()`` layer without slope, threshold or cap, an ``Activation("relu")``,
  or ``activation="relu"`` built into a layer (a convolution, a Dense layer). Leaky, thresholded
  and capped ones (``ReLU(negative_slope=…)``, ``LeakyReLU``, ReLU6) are other activations:
  their gradient is not zero below the threshold, or their output is not the positive part of
  the pre-activation, so the engine keeps their gradient and the probe records their output.
* **Rewiring** (:func:`rewire`, one ``keras.models.clone_model`` sharing every weight): every
  ReLU replaced by a layer the caller builds (the engine hands in its redirected-gradient ReLU,
  so this package never imports the engine), a layer's built-in activation split off to reach
  its **pre-activation** (a linear twin with copied weights), a class layer's softmax dropped
  (**logits**), values tapped by layer name, and inference-mode **BatchNormalization folded**
  into the convolution before it.
* **Free input size** (:func:`free_input_size`, :func:`free_input_size_copy`): a model rebuilt
  with a ``(None, None, C)`` input, so convolutional layers run at any size.

BN folding: BN at inference is a per-channel affine map, so ``conv → BN`` equals one convolution
with scaled kernels and a shifted bias (exact up to float rounding). A pair folds when the
convolution (``Conv2D``, ``DepthwiseConv2D``, ``SeparableConv2D``) has a linear activation, the
BN normalises the last axis, and nothing else reads the convolution's output; InceptionV3 has 94
such pairs, each one op less forward and backward in every render step. BNs after something else
(DenseNet's after a concatenation) stay. The folded convolution is a new layer with its own
(computed) weights; everything else keeps sharing the model's weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import keras
import numpy as np

if TYPE_CHECKING:
    from wga.models.layers import LayerInfo
    from wga.models.specs import ModelSpec

log = logging.getLogger(__name__)


class Loaded(Protocol):
    """What surgery needs of a loaded model (:class:`wga.models.loading.LoadedModel`, which
    calls surgery in turn: the type is stated here so that the two do not import each other)."""

    spec: ModelSpec
    model: keras.Model

    @property
    def name(self) -> str: ...
    def layer(self, name: str) -> LayerInfo: ...
    def spatial_model(self) -> keras.Model | None: ...


ReluFactory = Callable[[str], Any]
"""Builds the layer that replaces a ReLU, given the original layer's name (a callable layer)."""

Tap = Literal["preactivation", "output"]
"""Which value of a layer :func:`rewire` hands back: ``output``, or ``preactivation`` — what its
activation receives: an activation layer's input, the linear twin's output for a layer with a
built-in activation, the output of a linear layer."""

FOLDABLE_CONVOLUTIONS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)


# -- cutting ---------------------------------------------------------------------------------------


def cut(
    model: keras.Model, outputs: str | Any | Sequence[str | Any], *, start: Any = None
) -> keras.Model:
    """``model`` from its input (or the symbolic tensor ``start`` inside it) to the output of
    layer ``outputs`` (a name) or to a symbolic tensor of ``model``; a list of them gives a
    model with several outputs. The weights are shared."""

    def value(o: str | Any) -> Any:
        return model.get_layer(o).output if isinstance(o, str) else o

    inputs = model.inputs[0] if start is None else start
    if isinstance(outputs, str) or not isinstance(outputs, Sequence):
        return keras.Model(inputs, value(outputs))
    return keras.Model(inputs, [value(o) for o in outputs])


def layer_model(loaded: Loaded, layer: str) -> tuple[keras.Model, int | None]:
    """``loaded`` cut at ``layer`` for rendering, and the input side it insists on (``None``:
    any). Feature maps come from the free-size model; a class layer needs the whole network,
    which takes any size when it ends in global pooling (InceptionV3, ResNet50, fine-tuned runs)
    but not after a ``Flatten`` (VGG16's top): then the native size."""
    info = loaded.layer(layer)
    source: keras.Model | None = None
    if info.spatial:
        spatial = loaded.spatial_model()
        if spatial is not None and any(candidate.name == layer for candidate in spatial.layers):
            source = spatial
    else:  # spatial_model() may keep a Flatten → Dense head that no longer fits: check it
        source = whole_model_at_any_size(loaded)
    fixed_size: int | None = None
    if source is None:
        source = loaded.model
        shape = tuple(source.inputs[0].shape)
        fixed_size = int(shape[1] or loaded.spec.input_size)
    return cut(source, layer), fixed_size


def whole_model_at_any_size(loaded: Loaded) -> keras.Model | None:
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


# -- which layers are ReLUs ------------------------------------------------------------------------


def _is_relu_function(function: Any) -> bool:
    return getattr(function, "__name__", None) == "relu"


def is_relu(layer: keras.layers.Layer) -> bool:
    """``layer`` is a ReLU of its own: ``ReLU()`` without slope, threshold or cap, or
    ``Activation("relu")`` (see the module docstring for why leaky ones are not)."""
    if isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        return (
            config.get("max_value") is None
            and not config.get("negative_slope")
            and not config.get("threshold")
        )
    return isinstance(layer, keras.layers.Activation) and _is_relu_function(layer.activation)


def _is_activation_layer(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.Activation | keras.layers.ReLU | keras.layers.LeakyReLU)


def has_builtin_activation(layer: keras.layers.Layer) -> bool:
    """``layer`` (not an ``Activation`` layer) applies a non-linear activation of its own."""
    activation = getattr(layer, "activation", None)
    return (
        activation is not None
        and not isinstance(layer, keras.layers.Activation)
        and getattr(activation, "__name__", "linear") != "linear"
    )


def has_builtin_relu(layer: keras.layers.Layer) -> bool:
    """``layer`` applies a plain ReLU as its built-in activation (``Conv2D(activation="relu")``)."""
    return has_builtin_activation(layer) and _is_relu_function(layer.activation)


# -- rewiring ---------------------------------------------------------------------------------------


@dataclass
class Rewired:
    """A rewired clone: ``model`` (the original's inputs and outputs) and the tapped values."""

    model: keras.Model
    taps: dict[str, Any] = field(default_factory=dict)  # layer name → symbolic tensor


def linear_twin(layer: keras.layers.Layer, args: tuple, kwargs: dict) -> Any:
    """``layer`` rebuilt without its activation (weights copied), called on ``args``: the
    layer's pre-activation."""
    config = layer.get_config()
    config["activation"] = "linear"
    config["name"] = f"{layer.name}_linear"
    twin = type(layer).from_config(config)
    output = twin(*args, **kwargs)
    twin.set_weights(layer.get_weights())
    return output


def rewire(
    model: keras.Model,
    *,
    relu: ReluFactory | None = None,
    fold_batchnorm: bool = False,
    logits: Collection[str] = (),
    taps: Mapping[str, Tap] | None = None,
) -> Rewired:
    """A clone of ``model`` sharing every weight, changed where asked:

    ``relu``: every ReLU (:func:`is_relu` layers and built-in ReLUs) becomes ``relu(name)``
    applied to its pre-activation; ``fold_batchnorm``: foldable conv → BN pairs become one
    convolution; ``logits``: these layers' built-in activations are dropped (a class layer's
    softmax); ``taps``: the value of each named layer to hand back (a layer with a built-in
    activation tapped at its ``preactivation`` is split into its linear twin and the activation,
    so the pre-activation is computed once and feeds both the tap and the network). Tapped
    layers are never folded.
    """
    taps = dict(taps or {})
    unknown = sorted(name for name in [*taps, *logits] if name not in _names(model))
    if unknown:
        raise ValueError(f"no layers {unknown} in {model.name!r}")
    folds = _foldable_pairs(model) if fold_batchnorm else {}
    folds = {c: bn for c, bn in folds.items() if c not in taps and bn.name not in taps}
    folded_bns = {bn.name for bn in folds.values()}
    logits = set(logits)
    tapped: dict[str, Any] = {}

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        name, tap = layer.name, taps.get(layer.name)
        if name in folds:
            return _folded_convolution(layer, folds[name], args[0])
        if name in folded_bns:
            return args[0]  # already applied by the folded convolution before it
        if tap == "preactivation" and _is_activation_layer(layer):
            tapped[name] = args[0]
        split = has_builtin_activation(layer) and (
            name in logits
            or tap == "preactivation"
            or (relu is not None and has_builtin_relu(layer))
        )
        if relu is not None and is_relu(layer):
            output = relu(name)(*args)
        elif split:
            pre = linear_twin(layer, args, kwargs)
            if tap == "preactivation":
                tapped[name] = pre
            if name in logits:
                output = pre
            elif relu is not None and has_builtin_relu(layer):
                output = relu(name)(pre)
            else:
                output = keras.activations.get(layer.activation)(pre)
        else:
            output = layer(*args, **kwargs)
        if tap == "output" or (tap == "preactivation" and name not in tapped):
            tapped[name] = output  # a linear layer's output is its pre-activation
        return output

    clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    return Rewired(clone, {name: tapped[name] for name in taps})


def _names(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers}


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


# -- free input size -------------------------------------------------------------------------------


def free_input_size(spec: ModelSpec, model: keras.Model) -> keras.Model | None:
    """``model``'s weights in a graph with a free input size, or ``None`` when there is none.

    A Keras application is rebuilt topless (its classifier needs the native size) and receives
    the weights by position; any other model is rebuilt from its config
    (:func:`free_input_size_copy`).
    """
    try:
        if spec.source != "keras-applications":
            return free_input_size_copy(model)
        shape = tuple(model.inputs[0].shape)
        if shape[1] is None and shape[2] is None:
            return model
        constructor = getattr(keras.applications, spec.application or "")
        free = constructor(weights=None, include_top=False, input_shape=(None, None, 3))
    except Exception as error:
        log.info("%s cannot take free input sizes (%s); renderers will resize", spec.name, error)
        return None
    _copy_weights(model, free, by_position=True)
    return free


def free_input_size_copy(model: keras.Model) -> keras.Model:
    """``model`` itself if its input side is free, else the same graph and weights rebuilt with
    a ``(None, None, C)`` input. Raises when the graph cannot be rebuilt so; a graph with a
    Flatten → Dense may rebuild and still fail at another size (call it to find out)."""
    shape = tuple(model.inputs[0].shape)
    if shape[1] is None and shape[2] is None:
        return model
    config = model.get_config()
    config["layers"][0]["config"]["batch_shape"] = [None, None, None, shape[-1]]
    free = keras.Model.from_config(config)
    free.set_weights(model.get_weights())
    return free


def _copy_weights(source: keras.Model, target: keras.Model, *, by_position: bool) -> None:
    """Copy weights into ``target`` layer by layer.

    Keras auto-names some application layers (InceptionV3's ``conv2d_N``) with a process-wide
    counter, so a second instance has other names; the topless variant's layers are, however, a
    prefix of the full model's, in the same order. File models keep their names in the config.
    """
    pairs = (
        zip(target.layers, source.layers, strict=False)
        if by_position
        else ((layer, _layer_or_none(source, layer.name)) for layer in target.layers)
    )
    for free_layer, original in pairs:
        if original is None or not free_layer.weights:
            continue
        weights = original.get_weights()
        shapes_match = [w.shape for w in weights] == [tuple(w.shape) for w in free_layer.weights]
        if type(free_layer) is not type(original) or not shapes_match:
            raise ValueError(
                f"layer {free_layer.name!r} does not match {original.name!r} of the loaded model"
            )
        free_layer.set_weights(weights)


def _layer_or_none(model: keras.Model, name: str) -> Any:
    try:
        return model.get_layer(name)
    except ValueError:
        return None  # a layer absent from the topless variant
