"""How an RGB image in [0, 1] becomes a model's input.

A wrong range is the usual cause of blurry InceptionV3 visualisations (see ``shared/notes``), so
every model names its mode and every consumer (renders, the probe's feed, fine-tuning, the views)
maps images through :func:`preprocess` here.
"""

from __future__ import annotations

from typing import Any, Literal

from wga.errors import InvalidInput

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
