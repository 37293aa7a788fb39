"""How many images one render batch holds: a pixel budget per device kind, and the devices.

The render queue batches by it, and so does anything that renders icons in this process or on a
cluster (:func:`wga.corpus.atlas.executor_renderer`): the same recipes cut into the same batches
give the same bytes, whoever renders them (a render's pixels depend, by a few levels at most, on
the batch it was in: convolution kernels pick their algorithm by batch size; see
:mod:`wga.vis.render`).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BATCH = 32  # units per batch: the page's grid window (wga/serve/page/js/grid.js)
GPU_BATCH_PIXELS = 64 * 128 * 128  # per batch: 32 × 64 px, 20 × 224 px, 1 × 1024 px
# On a CPU the step is compute- and memory-bound: batches above ~16 previews measured slower per
# unit than single renders (benchmarks/queue_speed.py on 2 cores), so CPU workers batch less.
CPU_BATCH_PIXELS = 16 * 64 * 64


@dataclass
class BatchBudget:
    """How many images of a size one batch may hold on a device: one pixel budget per device
    kind (``pixels`` overrides both), and at most ``max_units`` images."""

    max_units: int = DEFAULT_MAX_BATCH
    pixels: int | None = None

    def device_pixels(self, device: str | None) -> int:
        if self.pixels is not None:
            return self.pixels
        on_cpu = device is not None and "CPU" in device.upper()
        return CPU_BATCH_PIXELS if on_cpu else GPU_BATCH_PIXELS

    def limit(self, size: int, device: str | None = None) -> int:
        return max(1, min(self.max_units, self.device_pixels(device) // (size * size)))


def detect_devices() -> list[str | None]:
    """One worker per GPU when there are GPUs, else one CPU worker (TensorFlow); on JAX and
    PyTorch one worker on the backend's default device."""
    from wga.vis.backends import backend_name

    if backend_name() != "tensorflow":
        return [None]
    try:
        import tensorflow as tf  # lazy: the queue's tests and `wga --help` need no TensorFlow

        gpus = tf.config.list_logical_devices("GPU")
    except Exception:  # no TensorFlow, or it cannot list devices: the CPU still works
        gpus = []
    return [gpu.name for gpu in gpus] or ["/CPU:0"]


def local_batch(size: int) -> int:
    """Images of ``size`` px per batch on this process's first device, as the queue cuts them."""
    return BatchBudget().limit(size, detect_devices()[0])
