"""The render step on PyTorch: autograd, eager.

``torch.autograd.grad`` with respect to the image parameters only (the model's weights get no
gradient). Eager by default: ``torch.compile`` of a Keras model on the CPU measured slower to
start than a whole short render (benchmarks/backends.py); ``WGA_TORCH_COMPILE=1`` turns it on
for long renders on a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from keras import ops

from wga.vis.backends import Forward, Step, Update

COMPILE = os.environ.get("WGA_TORCH_COMPILE", "0") != "0"


def compile_step(
    forward: Forward, update: Update, variables: list[Any], *, couples_batch: bool = False
) -> Step:
    """One ascent step of a batch (see :mod:`wga.vis.backends`)."""

    def gradient(params: Any, inputs: dict[str, Any]) -> tuple[Any, Any]:
        params = params.detach().requires_grad_(True)
        total, scores = forward(params, inputs)
        (grad,) = torch.autograd.grad(total, [params])
        return grad, scores.detach()

    if COMPILE:
        gradient = torch.compile(gradient, dynamic=True)

    def call(params: Any, state: tuple, inputs: dict[str, Any]) -> tuple[Any, tuple, Any]:
        inputs = {key: ops.convert_to_tensor(value) for key, value in inputs.items()}
        params = ops.convert_to_tensor(params)
        grad, scores = gradient(params, inputs)
        with torch.no_grad():
            params, state = update(params.detach(), grad, tuple(state))
        return params, state, scores

    return call


def compile_function(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` without gradients (eager)."""

    def call(*args: Any) -> Any:
        with torch.no_grad():
            return function(*(ops.convert_to_tensor(a) for a in args))

    return call


affine_resample = None


def to_numpy(value: Any) -> np.ndarray:
    return ops.convert_to_numpy(value)
