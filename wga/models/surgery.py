"""Model surgery: the same weights in another graph.

* **Free input size** — a model rebuilt with a ``(None, None, C)`` input, so convolutional layers
  run at any size (:func:`free_input_size`, :func:`free_input_size_copy`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

    from wga.models.specs import ModelSpec

log = logging.getLogger(__name__)


def free_input_size(spec: ModelSpec, model: keras.Model) -> keras.Model | None:
    """``model``'s weights in a graph with a free input size, or ``None`` when there is none.

    A Keras application is rebuilt topless (its classifier needs the native size) and receives
    the weights by position; any other model is rebuilt from its config
    (:func:`free_input_size_copy`).
    """
    import keras

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
