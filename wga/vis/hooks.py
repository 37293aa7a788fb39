"""Render hooks: what the step loop does around the compiled step, as small named types.

A preset lists its hooks by name with options (``part("median_filter", every=4, size=5)``, see
:mod:`wga.vis.presets`); :class:`~wga.vis.render.BatchRender` makes one instance of each per
render and calls it at four points, as tf-keras-vis calls its callbacks:

* :meth:`Hook.start` — once, after the start parameters are drawn;
* :meth:`Hook.after_step` — after every step that does not end its octave;
* :meth:`Hook.end_octave` — after an octave's last step, before the move to the next side;
* :meth:`Hook.images` — on the float RGB images handed out (``(B, size, size, 3)`` in [0, 1]).

The 2018 recipe's three (``shared/notes/original.md``) are here: detail re-injection, the median
filter and autotone. Adding a hook: a :class:`Hook` subclass registered with ``@hook("name")``,
and its name in a preset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from wga.vis.param import ImageParam
from wga.vis.presets import Preset
from wga.vis.transform import median_filter


class Chunk(Protocol):
    """A micro-batch of a render, as hooks see it."""

    indices: list[int]
    seeds: np.ndarray
    params: Any  # a tensor of the running backend


class RenderState(Protocol):
    """What hooks may read of a render, and the chunks whose parameters they may change."""

    size: int
    schedule: list[tuple[int, int]]
    octave: int  # index into schedule
    octave_step: int  # steps done in this octave

    @property
    def chunks(self) -> list[Any]: ...
    def image_param(self, side: int) -> ImageParam: ...


class Hook:
    """A render hook; every method does nothing unless overridden."""

    def start(self, render: RenderState) -> None:
        """Once, after the start parameters are drawn."""

    def after_step(self, render: RenderState) -> None:
        """After every step that does not end its octave."""

    def end_octave(self, render: RenderState) -> None:
        """After an octave's last step, before the parameters move to the next side."""

    def images(self, images: np.ndarray) -> np.ndarray:
        """On the images handed out, float RGB in [0, 1] (before rounding to uint8)."""
        return images


HOOKS: dict[str, type[Hook]] = {}


def hook(name: str) -> Callable[[type[Hook]], type[Hook]]:
    """Register a hook class under the name presets use."""

    def register(cls: type[Hook]) -> type[Hook]:
        HOOKS[name] = cls
        return cls

    return register


def hooks_for(preset: Preset) -> list[Hook]:
    """Fresh instances of the preset's hooks, in its order (hooks may keep per-render state)."""
    return [HOOKS[name](**dict(options)) for name, options in preset.hooks]


@hook("detail_reinjection")
class DetailReinjection(Hook):
    """The 2018 original (after Keras' DeepDream): the start image is noise at full size; each
    octave re-injects the detail that shrinking it to the previous octave's side had lost."""

    def __init__(self) -> None:
        self._original: np.ndarray | None = None

    def start(self, render: RenderState) -> None:
        param = render.image_param(render.size)
        seeds = np.concatenate([chunk.seeds for chunk in render.chunks]).tolist()
        self._original = np.stack([param.init(np.array([seed]), salt=1)[0] for seed in seeds])
        side = render.schedule[0][0]
        for chunk in render.chunks:
            chunk.params = _resize(self._original[chunk.indices], side)

    def end_octave(self, render: RenderState) -> None:
        if self._original is None or render.octave == 0:
            return
        side = render.schedule[render.octave][0]
        previous = render.schedule[render.octave - 1][0]
        for chunk in render.chunks:
            original = self._original[chunk.indices]
            shrunk = _resize(_resize(original, previous), side)
            chunk.params = chunk.params + (_resize(original, side) - shrunk)


def _resize(images: Any, side: int) -> Any:
    """Bilinear resize (half-pixel centres, no antialiasing) on the running backend."""
    from keras import ops

    return ops.image.resize(images, (side, side), interpolation="bilinear")


@hook("median_filter")
class MedianFilter(Hook):
    """A ``size``×``size`` median of the parameters every ``every`` steps (the 2018 original)."""

    def __init__(self, every: int, size: int) -> None:
        self.every = every
        self.size = size

    def after_step(self, render: RenderState) -> None:
        if render.octave_step % self.every:
            return
        from keras import ops

        for chunk in render.chunks:
            filtered = median_filter(ops.convert_to_numpy(chunk.params), self.size)
            chunk.params = ops.convert_to_tensor(filtered)


@hook("autotone")
class Autotone(Hook):
    """Per image and channel, stretch min…max to 0…1 (Photoshop's autotone, as in 2018)."""

    def images(self, images: np.ndarray) -> np.ndarray:
        low = images.min(axis=(1, 2), keepdims=True)
        high = images.max(axis=(1, 2), keepdims=True)
        return (images - low) / np.maximum(high - low, 1e-8)


@hook("display_stretch")
class DisplayStretch(Hook):
    """Per image, map its ``percentile`` … ``100 - percentile`` range (all channels together, so
    hues stay) to 0…1: a short render's faint, grey-looking image becomes readable as a
    thumbnail. For display only: the optimisation never sees it (issue 12, previews)."""

    def __init__(self, percentile: float) -> None:
        self.percentile = percentile

    def images(self, images: np.ndarray) -> np.ndarray:
        low = np.percentile(images, self.percentile, axis=(1, 2, 3), keepdims=True)
        high = np.percentile(images, 100.0 - self.percentile, axis=(1, 2, 3), keepdims=True)
        return (images - low) / np.maximum(high - low, 1e-3)
