"""A Keras model's forward pass and a reduction after it, compiled the way each backend likes.

The probe (and the atlas sampling, and the artwork views) run a model over a corpus and reduce
its outputs on the device, so only small results travel back to the host. The reduction is
written once on ``keras.ops``; what Keras does not abstract is how to compile it:

* **TensorFlow** — ``tf.function`` (``reduce_retracing``, so a short last batch does not retrace
  per shape); XLA only where there is an accelerator, as ``model.predict`` decides on "auto"
  (on CPUs XLA was slower for this pass);
* **JAX** — ``jax.jit`` of the model's ``stateless_call`` with the variables as arguments (not
  closed over: a closed-over VGG16 would be folded into the program as 500 MB of constants);
* **PyTorch** — a plain call under ``torch.no_grad()`` (eager; ``torch.compile`` costs minutes
  of compilation for a pass that lasts seconds on the test corpora).

The compiled function takes and returns numpy (pytrees of arrays); inputs are converted once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _to_numpy(tree: Any) -> Any:
    from keras import ops
    from keras import tree as keras_tree

    return keras_tree.map_structure(lambda t: np.asarray(ops.convert_to_numpy(t)), tree)


def compile_inference(model: Any, after: Callable[..., Any]) -> Callable[..., Any]:
    """``f(images, *extra) → after(model(images), *extra)`` as numpy, compiled for the backend.

    ``after`` is written on ``keras.ops`` (backend-free) and receives the model's outputs (a list
    for a multi-output model, else a tensor) and ``extra`` unchanged.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def forward_tf(images: Any, *extra: Any) -> Any:
            return after(model(images, training=False), *extra)

        # As model.predict does ("auto"): XLA where there is an accelerator, not on CPUs.
        accelerated = any(d.device_type != "CPU" for d in tf.config.list_physical_devices())
        compiled = tf.function(forward_tf, reduce_retracing=True, jit_compile=accelerated)
        return lambda images, *extra: _to_numpy(compiled(images, *extra))
    if backend == "jax":
        import jax

        def forward_jax(trainable: Any, fixed: Any, images: Any, *extra: Any) -> Any:
            outputs, _ = model.stateless_call(trainable, fixed, images, training=False)
            return after(outputs, *extra)

        compiled_jax = jax.jit(forward_jax)

        def run_jax(images: Any, *extra: Any) -> Any:
            trainable = [v.value for v in model.trainable_variables]
            fixed = [v.value for v in model.non_trainable_variables]
            return _to_numpy(compiled_jax(trainable, fixed, images, *extra))

        return run_jax
    if backend == "torch":
        import torch

        def run_torch(images: Any, *extra: Any) -> Any:
            from keras import ops
            from keras import tree as keras_tree

            with torch.no_grad():
                inputs = keras_tree.map_structure(ops.convert_to_tensor, (images, *extra))
                return _to_numpy(after(model(inputs[0], training=False), *inputs[1:]))

        return run_torch
    raise ValueError(f"no compiled inference for the Keras backend {backend!r}")


def value_and_gradient(fn: Callable[[Any], Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``fn(x)`` (a scalar written on ``keras.ops``) and its gradient with respect to ``x``, as
    numpy, by the backend's own autodiff (TF ``GradientTape``, ``jax.value_and_grad``, torch
    autograd). Eager: for one-off gradients (Grad-CAM), not optimisation loops."""
    import keras
    from keras import ops

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variable = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(variable)
            value = fn(variable)
        gradient = tape.gradient(value, variable)
    elif backend == "jax":
        import jax

        value, gradient = jax.value_and_grad(fn)(ops.convert_to_tensor(x))
    elif backend == "torch":
        variable = ops.convert_to_tensor(x).detach().requires_grad_(True)
        value = fn(variable)
        value.backward()
        gradient = variable.grad
    else:
        raise ValueError(f"no gradient for the Keras backend {backend!r}")
    return np.asarray(ops.convert_to_numpy(value)), np.asarray(ops.convert_to_numpy(gradient))
