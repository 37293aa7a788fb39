"""Rendering: a recipe in, an image out — many units per pass, step by step, reproducibly.

The split follows Xplique's ``optim.py``: a compiled step (``tf.function``) does one
forward/backward pass and one update for a whole batch, and a plain Python loop outside it
(:class:`BatchRender`) moves between octaves, applies the 2018 recipe's median filter, and can
stop after any step and continue later — which is what the render queue needs for live progress
and pre-emption.

Speed comes from three things: the model truncated at the layer (:mod:`wga.vis.features`), many
units in one batch (each element maximises its own unit), and steps compiled once per (model,
layer, octave size, preset, objective) and kept in a cache. The batch dimension of a compiled step
is dynamic, so batches of any size reuse one trace. Large renders are split into micro-batches
(:func:`max_batch_size`) so memory stays bounded.

Reproducibility: element ``i`` starts from noise drawn from its own seed, and its random
transforms come from ``(seed, step)`` (stateless ops): the same recipe gives the same image,
whichever other recipes share its batch.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

import wga
from wga.errors import InvalidInput
from wga.models import preprocess
from wga.vis.features import FeatureGraph, ModelScopedCache, feature_graph
from wga.vis.objective import SCORES, Target, diversity, redirect_relu_gradients
from wga.vis.param import ImageParam, resize_params
from wga.vis.presets import Preset
from wga.vis.recipe import MAX_SEED, MAX_SIZE, MAX_STEPS, MIN_SIZE, Recipe
from wga.vis.transform import MAX_MODEL_SIDE, TransformStack, median_filter

if TYPE_CHECKING:
    from wga.models import LoadedModel

__all__ = [
    "MAX_BATCH_PIXELS",
    "MAX_SEED",
    "MAX_SIZE",
    "MAX_STEPS",
    "MIN_SIZE",
    "BatchRender",
    "Recipe",
    "compiled_step",
    "group_by_batch",
    "max_batch_size",
    "render",
    "render_variations",
]

log = logging.getLogger(__name__)

MAX_BATCH_PIXELS = 32 * 128 * 128  # one micro-batch: 32 images of 128 px, 10 of 224, 1 of 1024
ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8  # tf.train.AdamOptimizer defaults (Lucid)
NORMALIZED_GRADIENT_EPSILON = 1e-7  # explain.ipynb: grads /= mean(|grads|) + 1e-7


def max_batch_size(size: int) -> int:
    """How many ``size`` px images one compiled call takes (memory bound, ≥ 1)."""
    return max(1, MAX_BATCH_PIXELS // (size * size))


def _model_matches(loaded: LoadedModel, model: str) -> bool:
    if model == loaded.spec.name:
        return True
    path = loaded.spec.path
    if path is None:
        return False
    candidate = Path(model).expanduser()
    if candidate.is_dir():
        candidate = candidate / path.name
    try:
        return candidate.resolve() == path.resolve()
    except OSError:
        return False


# -- the compiled step ------------------------------------------------------------------------


@dataclass
class _CompiledStep:
    """One traced step for (model, layer, octave side, preset, objective, diversity)."""

    graph: FeatureGraph
    param: ImageParam
    transforms: TransformStack | None
    preprocessing: str
    kind: str  # a row of wga.vis.objective_table.OBJECTIVES
    preset: Preset
    diversity_weight: float
    position: tuple[int, int] | None = None
    vector: tuple[float, ...] | None = None
    adam: dict[bool, Callable[..., Any]] = field(init=False)
    normalized: dict[bool, Callable[..., Any]] = field(init=False)
    median: Callable[..., Any] = field(init=False)
    to_rgb: Callable[..., Any] = field(init=False)

    def __post_init__(self) -> None:
        shape = tf.TensorSpec([None, *self.param.shape(1)[1:]], tf.float32)
        seeds = tf.TensorSpec([None], tf.int64)
        units = tf.TensorSpec([None], tf.int32)
        scalar_i = tf.TensorSpec([], tf.int64)
        adam_signature = [shape, shape, shape, scalar_i, seeds, units, scalar_i]
        normalized_signature = [shape, seeds, units, scalar_i]
        # Two traces each: with redirected ReLU gradients (warm-up) and plain. The plain one
        # keeps no pre-activations for the custom gradient: less memory and time for the
        # (many more) steps after the warm-up, and for octaves that never warm up.
        self.adam = {
            warm: tf.function(partial(self._adam_step, warm=warm), input_signature=adam_signature)
            for warm in (False, True)
        }
        self.normalized = {
            warm: tf.function(
                partial(self._normalized_step, warm=warm), input_signature=normalized_signature
            )
            for warm in (False, True)
        }
        self.median = tf.function(
            lambda images: median_filter(images, self.preset.median_size),
            input_signature=[shape],
        )
        self.to_rgb = tf.function(self.param.to_rgb, input_signature=[shape])

    def _gradient(
        self, params: tf.Tensor, seeds: tf.Tensor, units: tf.Tensor, step: tf.Tensor, warm: bool
    ) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(params)
            images = self.param.to_rgb(params)
            if self.transforms is not None:
                images = self.transforms(images, seeds, step)
            fixed = self.graph.fixed_size
            if fixed is not None and images.shape[1] != fixed:
                images = tf.image.resize(images, (fixed, fixed), method="bilinear", antialias=True)
            inputs = preprocess(images, self.preprocessing)
            with redirect_relu_gradients(tf.constant(True) if warm else None):
                features = self.graph.model(inputs, training=False)
            scores = SCORES[self.kind](features, self._target(units))
            total = tf.reduce_sum(scores)
            if self.diversity_weight:
                total -= self.diversity_weight * diversity(features)
        return tape.gradient(total, params), scores

    def _target(self, units: tf.Tensor) -> Target:
        vector = None if self.vector is None else tf.constant(self.vector, tf.float32)
        return Target(units, self.preset.border, self.position, vector)

    def _adam_step(self, params, m, v, t, seeds, units, step, *, warm: bool):
        gradient, scores = self._gradient(params, seeds, units, step, warm)
        t = tf.cast(t, tf.float32)
        m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * gradient
        v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * tf.square(gradient)
        m_hat = m / (1 - ADAM_BETA1**t)
        v_hat = v / (1 - ADAM_BETA2**t)
        params = params + self.preset.learning_rate * m_hat / (tf.sqrt(v_hat) + ADAM_EPSILON)
        return params, m, v, scores

    def _normalized_step(self, params, seeds, units, step, *, warm: bool):
        gradient, scores = self._gradient(params, seeds, units, step, warm)
        axes = list(range(1, len(params.shape)))
        mean = tf.reduce_mean(tf.abs(gradient), axis=axes, keepdims=True)
        params = params + self.preset.learning_rate * gradient / (
            mean + NORMALIZED_GRADIENT_EPSILON
        )
        return params, scores


_steps = ModelScopedCache()


def _image_param(loaded: LoadedModel, preset: Preset, side: int) -> ImageParam:
    matrix = None
    if loaded.color_correlation is not None:
        matrix = tuple(tuple(float(x) for x in row) for row in np.asarray(loaded.color_correlation))
    return ImageParam(
        kind=preset.param,
        size=side,
        decorrelate=preset.decorrelate,
        output=preset.output,
        decay=preset.decay,
        color_matrix=matrix,
    )


def _transforms(preset: Preset, side: int) -> TransformStack | None:
    """The preset's transform stack; presets without one still get the random crop that keeps
    the model's input under MAX_MODEL_SIDE (memory)."""
    if preset.transforms:
        return TransformStack(side)
    if side > MAX_MODEL_SIDE:
        return TransformStack(side, scales=(1.0,), angles=(0.0,), strength=0.0)
    return None


def compiled_step(
    loaded: LoadedModel,
    layer: str,
    side: int,
    preset: Preset,
    kind: str,
    diversity_weight: float = 0.0,
    position: tuple[int, int] | None = None,
    vector: tuple[float, ...] | None = None,
) -> _CompiledStep:
    """The cached compiled step; built (and later traced) once per key, reused by every batch.

    ``position`` and ``vector`` (values, not a reference) are constants of the step, for the
    objectives that read them."""
    param = _image_param(loaded, preset, side)
    key = ("step", layer, side, preset, kind, float(diversity_weight), param, position, vector)

    def build() -> _CompiledStep:
        return _CompiledStep(
            graph=feature_graph(loaded, layer),
            param=param,
            transforms=_transforms(preset, side),
            preprocessing=loaded.spec.preprocessing,
            kind=kind,
            preset=preset,
            diversity_weight=float(diversity_weight),
            position=position,
            vector=vector,
        )

    return _steps.get(loaded, key, build)


# -- the step-wise render ---------------------------------------------------------------------


@dataclass
class _Chunk:
    """A micro-batch: the elements one compiled call takes, with their optimiser state."""

    indices: list[int]
    seeds: np.ndarray
    units: np.ndarray
    params: tf.Tensor
    m: tf.Tensor | None = None
    v: tf.Tensor | None = None
    t: int = 0
    scores: np.ndarray | None = None


def _autotone(images: np.ndarray) -> np.ndarray:
    """Per image and channel, stretch min…max to 0…1 (Photoshop's autotone, as in 2018)."""
    low = images.min(axis=(1, 2), keepdims=True)
    high = images.max(axis=(1, 2), keepdims=True)
    return (images - low) / np.maximum(high - low, 1e-8)


class BatchRender:
    """Several recipes with one ``batch_key`` rendered together, advanced step by step.

    A caller can interleave several renders, pause (just stop calling :meth:`run`) and resume
    later where it was. ``diversity`` > 0 couples the batch on purpose (variations of one unit
    that should differ, see :func:`render_variations`); it is off for independent recipes.
    """

    def __init__(
        self, loaded: LoadedModel, recipes: Sequence[Recipe], *, diversity: float = 0.0
    ) -> None:
        if not recipes:
            raise InvalidInput("a batch needs at least one recipe")
        self.recipes: list[Recipe] = list(recipes)
        first = self.recipes[0]
        if any(recipe.batch_key() != first.batch_key() for recipe in self.recipes):
            raise InvalidInput("recipes of one batch must share model, layer, size, preset, steps")
        if not _model_matches(loaded, first.model):
            raise InvalidInput(f"recipes name model {first.model!r} but {loaded.name!r} is loaded")
        kinds = {recipe.check(loaded) for recipe in self.recipes}
        self.kind: str = kinds.pop()
        self.loaded = loaded
        self.preset = first.preset_spec
        self.size = first.size
        self.diversity = float(diversity)
        self.schedule = self.preset.schedule(self.size, first.steps)
        self.total_steps: int = sum(steps for _, steps in self.schedule)
        self.steps_done: int = 0
        self._octave = 0
        self._octave_step = 0
        per_call = len(self.recipes) if self.diversity else max_batch_size(self.schedule[-1][0])
        seeds = np.array([recipe.seed for recipe in self.recipes], dtype="int64")
        units = np.array([recipe.unit for recipe in self.recipes], dtype="int32")
        side = self.schedule[0][0]
        self._chunks: list[_Chunk] = []
        for start in range(0, len(self.recipes), per_call):
            idx = list(range(start, min(start + per_call, len(self.recipes))))
            params = self._param(side).init(seeds[idx], salt=0)
            self._chunks.append(_Chunk(idx, seeds[idx], units[idx], tf.constant(params)))
        self._original: np.ndarray | None = None
        if self.preset.detail_reinjection:
            # The 2018 original: the start image is noise at full size; each octave re-injects
            # the detail that shrinking it to the previous octave's side had lost.
            self._original = np.stack(
                [
                    self._param(self.size).init(np.array([seed]), salt=1)[0]
                    for seed in seeds.tolist()
                ]
            )
            for chunk in self._chunks:
                chunk.params = tf.image.resize(self._original[chunk.indices], (side, side))
        self._step = self._compiled(side)

    # -- public state ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.steps_done >= self.total_steps

    @property
    def progress(self) -> float:
        return min(1.0, self.steps_done / self.total_steps)

    @property
    def side(self) -> int:
        """The side of the octave being rendered now."""
        return self.schedule[self._octave][0]

    @property
    def scores(self) -> np.ndarray:
        """Each element's objective value at its latest step (NaN before the first)."""
        out = np.full(len(self.recipes), np.nan, dtype="float32")
        for chunk in self._chunks:
            if chunk.scores is not None:
                out[chunk.indices] = chunk.scores
        return out

    # -- stepping -------------------------------------------------------------------------------
    def _param(self, side: int) -> ImageParam:
        return _image_param(self.loaded, self.preset, side)

    def _compiled(self, side: int) -> _CompiledStep:
        first = self.recipes[0]
        return compiled_step(
            self.loaded,
            first.layer,
            side,
            self.preset,
            self.kind,
            self.diversity,
            position=first.position,
        )

    def run(self, steps: int = 1) -> None:
        """Advance up to ``steps`` steps (fewer when the render finishes)."""
        for _ in range(max(0, int(steps))):
            if self.done:
                return
            self._advance()

    def _advance(self) -> None:
        octave_steps = self.schedule[self._octave][1]
        # warm-up only in the first (smallest) octave: later octaves start from a living image
        warm = self._octave == 0 and self.steps_done < self.preset.warmup_steps
        step = tf.constant(self.steps_done, tf.int64)
        for chunk in self._chunks:
            seeds, units = tf.constant(chunk.seeds), tf.constant(chunk.units)
            if self.preset.optimizer == "adam":
                if chunk.m is None:
                    chunk.m = tf.zeros_like(chunk.params)
                    chunk.v = tf.zeros_like(chunk.params)
                chunk.t += 1
                chunk.params, chunk.m, chunk.v, scores = self._step.adam[warm](
                    chunk.params,
                    chunk.m,
                    chunk.v,
                    tf.constant(chunk.t, tf.int64),
                    seeds,
                    units,
                    step,
                )
            else:
                chunk.params, scores = self._step.normalized[warm](chunk.params, seeds, units, step)
            chunk.scores = scores.numpy()
        self.steps_done += 1
        self._octave_step += 1
        every = self.preset.median_every
        if every and self._octave_step % every == 0 and self._octave_step < octave_steps:
            for chunk in self._chunks:
                chunk.params = self._step.median(chunk.params)
        if self._octave_step >= octave_steps:
            self._finish_octave()

    def _finish_octave(self) -> None:
        side = self.schedule[self._octave][0]
        last = self._octave + 1 >= len(self.schedule)
        next_side = self.size if last else self.schedule[self._octave + 1][0]
        if self._original is not None and self._octave > 0:
            previous = self.schedule[self._octave - 1][0]
            for chunk in self._chunks:
                original = self._original[chunk.indices]
                shrunk = tf.image.resize(
                    tf.image.resize(original, (previous, previous)), (side,) * 2
                )
                chunk.params += tf.image.resize(original, (side, side)) - shrunk
        if last:
            return
        new_param = self._param(next_side)
        for chunk in self._chunks:
            params = resize_params(self._param(side), chunk.params.numpy(), new_param)
            chunk.params = tf.constant(params)
            chunk.m = chunk.v = None
            chunk.t = 0
        self._octave += 1
        self._octave_step = 0
        self._step = self._compiled(next_side)

    # -- output ---------------------------------------------------------------------------------
    def images(self) -> np.ndarray:
        """The current images, uint8 ``(B, size, size, 3)`` (earlier octaves upsampled)."""
        parts = [None] * len(self.recipes)
        for chunk in self._chunks:
            rgb = self._step.to_rgb(chunk.params)
            if rgb.shape[1] != self.size:
                rgb = tf.image.resize(rgb, (self.size, self.size), method="bilinear")
            rgb = rgb.numpy()
            if self.preset.autotone:
                rgb = _autotone(rgb)
            for position, index in enumerate(chunk.indices):
                parts[index] = rgb[position]
        stacked = np.stack(parts)
        return np.round(np.clip(stacked, 0.0, 1.0) * 255.0).astype("uint8")

    def metadata(self, index: int) -> dict[str, Any]:
        """The full recipe of image ``index`` for its PNG text: enough to make it again."""
        recipe = self.recipes[index]
        import keras

        return {
            **recipe.as_dict(),
            "objective": self.kind,
            "model_name": self.loaded.name,
            "model_title": self.loaded.spec.title,
            "weights": self.loaded.fingerprint,
            "preprocessing": self.loaded.spec.preprocessing,
            "octaves": [side for side, _ in self.schedule],
            "steps_done": self.steps_done,
            "diversity": self.diversity,
            "wga": wga.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        }


def render(
    loaded: LoadedModel,
    recipes: Sequence[Recipe],
    on_snapshot: Callable[[BatchRender], None] | None = None,
    snapshot_every: int = 16,
) -> np.ndarray:
    """Render ``recipes`` (one batch key) to uint8 images ``(B, size, size, 3)``.

    ``on_snapshot(batch)`` is called every ``snapshot_every`` steps and once at the end; read
    ``batch.images()``, ``batch.progress`` and ``batch.steps_done`` from it.
    """
    batch = BatchRender(loaded, recipes)
    every = max(1, int(snapshot_every))
    while not batch.done:
        batch.run(min(every, batch.total_steps - batch.steps_done))
        if on_snapshot is not None:
            on_snapshot(batch)
    return batch.images()


def render_variations(
    loaded: LoadedModel, recipe: Recipe, count: int, diversity_weight: float | None = None
) -> np.ndarray:
    """``count`` images of one unit that differ from each other (Lucid's diversity objective).

    Seeds ``recipe.seed`` … ``recipe.seed + count - 1``; all in one batch (the objective compares
    them), so mind the memory at large sizes.
    """
    from wga.vis.objective import DIVERSITY_WEIGHT

    if count < 1:
        raise InvalidInput(f"count must be ≥ 1, got {count}")
    weight = DIVERSITY_WEIGHT if diversity_weight is None else diversity_weight
    recipes = [replace(recipe, seed=recipe.seed + i) for i in range(count)]
    batch = BatchRender(loaded, recipes, diversity=weight if count > 1 else 0.0)
    batch.run(batch.total_steps)
    return batch.images()


def recipe_file_name(recipe: Recipe) -> str:
    """A file name that tells apart the recipes of one figure (layer, unit, preset, size, seed)."""
    layer = re.sub(r"[^A-Za-z0-9_.+=-]", "_", recipe.layer)
    return f"{layer}-{recipe.unit}-{recipe.preset}-{recipe.size}px-seed{recipe.seed}.png"


def render_to_files(
    loaded: LoadedModel,
    recipes: Sequence[Recipe],
    out_dir: str | os.PathLike[str],
    *,
    file_name: Callable[[Recipe], str] = recipe_file_name,
    progress: bool = False,
) -> list[np.ndarray]:
    """Render ``recipes`` and write each as a PNG carrying its recipe; images in input order.

    Recipes that share a batch key render together (one forward/backward pass per step);
    ``progress`` shows a tqdm bar of steps. The CLI and the notebooks both come through here.
    """
    from tqdm.auto import tqdm

    from wga.vis.png import save_png

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rendered: dict[Recipe, np.ndarray] = {}
    for group in group_by_batch(recipes):
        batch = BatchRender(loaded, group)
        label = f"{group[0].layer} ×{len(group)}"
        with tqdm(total=batch.total_steps, unit="step", disable=not progress, desc=label) as bar:
            while not batch.done:
                batch.run(1)
                bar.update(1)
        images = batch.images()
        for index, recipe in enumerate(group):
            save_png(folder / file_name(recipe), images[index], batch.metadata(index))
            rendered[recipe] = images[index]
    return [rendered[recipe] for recipe in recipes]


def group_by_batch(recipes: Sequence[Recipe]) -> list[list[Recipe]]:
    """Recipes grouped by :meth:`Recipe.batch_key`, in first-seen order."""
    groups: dict[tuple, list[Recipe]] = {}
    for recipe in recipes:
        groups.setdefault(recipe.batch_key(), []).append(recipe)
    return list(groups.values())


def unit_steps_per_second(batch_size: int, steps: int, seconds: float) -> float:
    """Throughput in the benchmark's unit: one unit advanced by one step."""
    return batch_size * steps / seconds if seconds > 0 else math.inf
