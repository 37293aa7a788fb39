"""Models: a name → a Keras model, how to feed it, which layers it has, whether it can load.

Every front end (CLI, API, page, notebooks) names models the same way, and what a renderer or a
probe needs to know about a model lives in this package and nowhere else:

* :mod:`~wga.models.preprocessing` — an RGB image in [0, 1] → the model's input;
* :mod:`~wga.models.specs` — the built-in models and fine-tuned runs, before anything loads;
* :mod:`~wga.models.layers` — the layers worth visualising, with their unit counts;
* :mod:`~wga.models.loading` — ImageNet applications, the offline HED VGG16, ``.keras`` files;
* :mod:`~wga.models.fingerprint` — a short hash of the weights, recorded with every image;
* :mod:`~wga.models.network` — whether ImageNet weights could be downloaded (never hangs);
* :mod:`~wga.models.registry` — names → loaded models, availability, the process's registry;
* :mod:`~wga.models.surgery` — the same weights in another graph: a free input size.

Importing this package (everything above but the surgery) starts no Keras: the CLI and the REST
front end list and validate models without TensorFlow.
"""

from wga.models.fingerprint import file_fingerprint, weights_fingerprint
from wga.models.layers import LayerInfo, list_layers
from wga.models.loading import LoadedModel, load_spec, model_reference
from wga.models.preprocessing import Preprocessing, preprocess
from wga.models.registry import Availability, ModelRegistry, default_registry
from wga.models.specs import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    OFFLINE_MODEL,
    ModelSpec,
    spec_for_file,
)

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "OFFLINE_MODEL",
    "Availability",
    "LayerInfo",
    "LoadedModel",
    "ModelRegistry",
    "ModelSpec",
    "Preprocessing",
    "default_registry",
    "file_fingerprint",
    "list_layers",
    "load_spec",
    "model_reference",
    "preprocess",
    "spec_for_file",
    "weights_fingerprint",
]
