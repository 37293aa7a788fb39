"""Rendering: a recipe in, an image out — many units per pass, step by step, reproducibly.

The split follows Xplique's ``optim.py``: a compiled step (:mod:`wga.vis.step`, compiled by the
running Keras backend's module in :mod:`wga.vis.backends`) does one forward/backward pass and one
update (the preset's optimiser, :mod:`wga.vis.optim`) for a whole batch, and a plain Python loop
outside it (:class:`BatchRender`) moves between octaves, runs the
preset's hooks (:mod:`wga.vis.hooks`: the 2018 recipe's median filter, detail re-injection,
autotone), and can stop after any step and continue later — which is what the render queue needs
for live progress and pre-emption.

Speed comes from three things: the model truncated at the layer (:mod:`wga.vis.features`), many
units in one batch (each element maximises its own unit), and steps compiled once per (model,
layer, octave size, preset, objective) and kept in a cache. The batch dimension of a compiled step
is dynamic, so batches of any size reuse one trace. Large renders are split into micro-batches
(:func:`max_batch_size`) so memory stays bounded.

Reproducibility: element ``i`` starts from noise drawn from its own seed, and its random
transforms come from ``(seed, step)`` (a counter-based hash, in NumPy): the same recipe gives the
same image whichever other recipes share its batch, and on TensorFlow, JAX and PyTorch alike, up
to float rounding — which is not nothing: convolution kernels pick their algorithm by batch size
and backend, and Adam's early, nearly sign-like steps amplify the last bit, so the same recipe
alone and in a batch of two differed by up to 6 levels of 255 at 320 px. Byte-identical images
therefore need the same batches: :mod:`wga.vis.budget` cuts the same recipes into the same
batches for the queue, bulk renders and atlas icons, and a batch interrupted by a crash resumes
as one batch (:meth:`BatchRender.restore`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops
from tqdm.auto import tqdm

import wga
from wga.errors import InvalidInput
from wga.models import preprocess
from wga.vis.backends import backend_name
from wga.vis.features import ModelScopedCache, feature_graph
from wga.vis.hooks import Hook, hooks_for
from wga.vis.objective import DIVERSITY_WEIGHT
from wga.vis.objective_table import Call, Objective
from wga.vis.optim import State
from wga.vis.param import ImageParam, resize_params
from wga.vis.png import save_png
from wga.vis.presets import Preset
from wga.vis.recipe import (
    MAX_SEED,
    MAX_SIZE,
    MAX_STEPS,
    MIN_SIZE,
    Recipe,
    check_recipes,
    recipe_file_name,
)
from wga.vis.step import CompiledStep, Inputs, element_inputs
from wga.vis.transform import MAX_MODEL_SIDE, TransformStack

if TYPE_CHECKING:
    from wga.models import LoadedModel
    from wga.vis.estimate import StepClock
    from wga.vis.vectors import VectorStore

__all__ = [
    "MAX_BATCH_PIXELS",
    "MAX_SEED",
    "MAX_SIZE",
    "MAX_STEPS",
    "MIN_SIZE",
    "BatchRender",
    "EngineOptions",
    "Recipe",
    "compiled_step",
    "group_by_batch",
    "max_batch_size",
    "render",
    "render_variations",
]

log = logging.getLogger(__name__)

MAX_BATCH_PIXELS = 32 * 128 * 128  # one micro-batch: 32 images of 128 px, 10 of 224, 1 of 1024


@dataclass(frozen=True)
class EngineOptions:
    """The engine's speed switches, both on: they change how fast an image comes, not what it
    shows (measured: ``benchmarks/render_roofline.py``, ``benchmarks/time_to_quality.py --crop``).
    Benchmarks turn them off to measure them, by passing other options; nothing reads them from
    the environment."""

    fold_batchnorm: bool = True  # BN folded into the convolution before it (wga.models.surgery)
    crop_padding: bool = True  # a size² window of Lucid's padded canvas goes to the model


DEFAULT_OPTIONS = EngineOptions()


def max_batch_size(size: int) -> int:
    """How many ``size`` px images one compiled call takes (memory bound, ≥ 1)."""
    return max(1, MAX_BATCH_PIXELS // (size * size))


# -- the compiled step ------------------------------------------------------------------------


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


def _transforms(preset: Preset, side: int, crop_padding: bool) -> TransformStack | None:
    """The preset's transform stack; presets without one still get the random crop that keeps
    the model's input under MAX_MODEL_SIDE (memory)."""
    if preset.transforms:
        if crop_padding:
            # Lucid's pad 12 / jitter 8+4 make the model see (size + 12)² pixels, ~20 % more at
            # 128 px, the extra being mostly grey border. A size² window of the canvas, placed at
            # random (an extra jitter), drops that work; images and selectivity measured alike
            # (benchmarks/time_to_quality.py --crop).
            return TransformStack(side, max_output=min(side, MAX_MODEL_SIDE))
        return TransformStack(side)
    if side > MAX_MODEL_SIDE:
        return TransformStack(side, scales=(1.0,), angles=(0.0,), strength=0.0)
    return None


def compiled_step(
    loaded: LoadedModel,
    objective: Objective,
    side: int,
    preset: Preset,
    options: EngineOptions = DEFAULT_OPTIONS,
) -> CompiledStep:
    """The cached compiled step for a bound ``objective``'s form; built (and later traced) once
    per key, reused by every batch.

    Units, positions and direction vectors are inputs of the step, one per batch element, so a
    batch of atlas icons (each its own direction) is one trace and one pass."""
    param = _image_param(loaded, preset, side)
    layers = tuple(objective.layers())
    # the speed switches (benchmarks flip them) and the backend are part of the key
    key = ("step", layers, side, preset, objective.structure(), param, options, backend_name())

    def build() -> CompiledStep:
        if not layers:
            raise InvalidInput(
                f"objective {objective.text()!r} reads no layer: add a term that does "
                "(a regulariser alone would only smooth noise)"
            )
        graph = feature_graph(loaded, layers, options.fold_batchnorm)
        return CompiledStep(
            model=graph.model,
            layers=layers,
            fixed_size=graph.fixed_size,
            param=param,
            transforms=_transforms(preset, side, options.crop_padding),
            preprocess=partial(preprocess, mode=loaded.spec.preprocessing),
            objective=objective,
            preset=preset,
        )

    return _steps.get(loaded, key, build)


# -- the step-wise render ---------------------------------------------------------------------


@dataclass
class _Chunk:
    """A micro-batch: the elements one compiled call takes, with their optimiser state."""

    indices: list[int]
    seeds: np.ndarray
    elements: Inputs  # per-element inputs of the objective's terms (wga.vis.step)
    params: Any  # a tensor of the running backend
    state: State | None = None  # None: fresh (a render's start, or a new octave)
    scores: np.ndarray | None = None


class BatchRender:
    """Several recipes with one ``batch_key`` rendered together, advanced step by step.

    A caller can interleave several renders, pause (just stop calling :meth:`run`) and resume
    later where it was. ``diversity`` > 0 adds the term ``- diversity × diversity`` to every
    recipe's objective, which couples the batch on purpose (variations of one unit that should
    differ, see :func:`render_variations`); an objective can also carry that term itself. The
    model is ``loaded``; the recipes' ``model`` field is their identity, not read here.

    ``clock`` (a :class:`~wga.vis.estimate.StepClock`, e.g. the render queue's) receives the
    time of every step that did not trace, for estimates; ``options`` are the speed switches.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        recipes: Sequence[Recipe],
        *,
        diversity: float = 0.0,
        vectors: VectorStore | None = None,
        options: EngineOptions = DEFAULT_OPTIONS,
        clock: StepClock | None = None,
    ) -> None:
        if not recipes:
            raise InvalidInput("a batch needs at least one recipe")
        self.recipes: list[Recipe] = list(recipes)
        first = self.recipes[0]
        if any(recipe.batch_key() != first.batch_key() for recipe in self.recipes):
            raise InvalidInput("recipes of one batch must share model, layer, size, preset, steps")
        self.kind: str = check_recipes(self.recipes, loaded)
        self.objectives = [recipe.bound_objective(loaded) for recipe in self.recipes]
        if diversity:
            term = (-float(diversity), Call("diversity", layer=first.layer))
            self.objectives = [Objective((*o.terms, term)) for o in self.objectives]
        self.loaded = loaded
        self.preset = first.preset_spec
        self.size = first.size
        self.diversity = float(diversity)
        self.options = options
        self.clock = clock
        self.schedule = self.preset.schedule(self.size, first.steps)
        self.total_steps: int = sum(steps for _, steps in self.schedule)
        self.steps_done: int = 0
        self.octave = 0  # index into schedule
        self.octave_step = 0  # steps done in this octave
        self.hooks: list[Hook] = hooks_for(self.preset)
        self.chunks: list[_Chunk] = self._start_chunks(vectors)
        for hook in self.hooks:
            hook.start(self)
        self._step = self._compiled(self.schedule[0][0])

    def _start_chunks(self, vectors: VectorStore | None) -> list[_Chunk]:
        """The micro-batches, each element's start noise drawn from its own seed, with its
        objective's inputs (directions from ``vectors``, default the shared store)."""
        coupled = self.objectives[0].couples_batch
        per_call = len(self.recipes) if coupled else max_batch_size(self.schedule[-1][0])
        seeds = np.array([recipe.seed for recipe in self.recipes], dtype="int64")
        elements = element_inputs(self.loaded, self.objectives, self.size, vectors)
        param = self.image_param(self.schedule[0][0])
        chunks = []
        for start in range(0, len(self.recipes), per_call):
            idx = list(range(start, min(start + per_call, len(self.recipes))))
            params = ops.convert_to_tensor(param.init(seeds[idx], salt=0))
            own = {key: value[idx] for key, value in elements.items()}
            chunks.append(_Chunk(idx, seeds[idx], own, params))
        return chunks

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
        return self.schedule[self.octave][0]

    @property
    def scores(self) -> np.ndarray:
        """Each element's objective value at its latest step (NaN before the first)."""
        out = np.full(len(self.recipes), np.nan, dtype="float32")
        for chunk in self.chunks:
            if chunk.scores is not None:
                out[chunk.indices] = chunk.scores
        return out

    # -- stepping -------------------------------------------------------------------------------
    def image_param(self, side: int) -> ImageParam:
        """The preset's image parameterisation at ``side`` px, for this model's colours."""
        return _image_param(self.loaded, self.preset, side)

    def _compiled(self, side: int) -> CompiledStep:
        return compiled_step(self.loaded, self.objectives[0], side, self.preset, self.options)

    def run(self, steps: int = 1) -> None:
        """Advance up to ``steps`` steps (fewer when the render finishes)."""
        for _ in range(max(0, int(steps))):
            if self.done:
                return
            self._advance()

    def _advance(self) -> None:
        # warm-up only in the first (smallest) octave: later octaves start from a living image
        warm = self.octave == 0 and self.steps_done < self.preset.warmup_steps
        started = time.perf_counter()
        for chunk in self.chunks:
            if chunk.state is None:
                chunk.state = self._step.optimiser.init(chunk.params)
            inputs = self._step.inputs(chunk.seeds, self.steps_done, chunk.elements)
            chunk.params, chunk.state, scores = self._step.step[warm](
                chunk.params, chunk.state, inputs
            )
            chunk.scores = np.asarray(ops.convert_to_numpy(scores))
        # the first step of an octave and the first after the warm-up may trace: not a sample
        if (
            self.clock is not None
            and self.octave_step > 0
            and self.steps_done != self.preset.warmup_steps
        ):
            seconds = time.perf_counter() - started
            self.clock.record(
                self.loaded.name, self.recipes[0].layer, self.side, len(self.recipes), seconds
            )
        self.steps_done += 1
        self.octave_step += 1
        if self.octave_step < self.schedule[self.octave][1]:
            for hook in self.hooks:
                hook.after_step(self)
            return
        for hook in self.hooks:
            hook.end_octave(self)
        if self.octave + 1 < len(self.schedule):
            self._next_octave()

    def _next_octave(self) -> None:
        """Move every chunk's parameters to the next side; the optimiser starts afresh."""
        side, next_side = self.side, self.schedule[self.octave + 1][0]
        old_param, new_param = self.image_param(side), self.image_param(next_side)
        for chunk in self.chunks:
            before = np.asarray(ops.convert_to_numpy(chunk.params))
            chunk.params = ops.convert_to_tensor(resize_params(old_param, before, new_param))
            chunk.state = None
        self.octave += 1
        self.octave_step = 0
        self._step = self._compiled(next_side)

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self, index: int) -> dict[str, np.ndarray]:
        """Element ``index``'s whole state as NumPy arrays (``np.savez`` keeps it exactly): where
        it is in the schedule, its parameters and its optimiser's slots. The render queue saves
        it so that a render resumes after a crash (:meth:`restore`); hooks keep nothing that a
        fresh batch of the same recipe does not rebuild from the seed."""
        chunk = next(chunk for chunk in self.chunks if index in chunk.indices)
        position = chunk.indices.index(index)
        params = np.asarray(ops.convert_to_numpy(chunk.params))
        saved = {
            "schedule": np.array([self.steps_done, self.octave, self.octave_step], "int64"),
            "params": params[position],
            "slots": np.array(-1 if chunk.state is None else len(chunk.state), "int64"),
        }
        for number, slot in enumerate(chunk.state or ()):
            value = np.asarray(ops.convert_to_numpy(slot))
            own = value.shape == params.shape  # one row per element (Adam's m, v), else shared
            saved[f"slot{number}"] = value[position] if own else value
            saved[f"slot{number}_own"] = np.array(own)
        return saved

    def restore(self, saved: Sequence[dict[str, np.ndarray]]) -> None:
        """Continue a fresh batch from its recipes' :meth:`checkpoint` (one each, in order, all
        taken at the same step): the steps left give the images an uninterrupted render of the
        same batch would have given."""
        if len(saved) != len(self.recipes) or self.steps_done:
            raise InvalidInput("restore a fresh batch from one checkpoint per recipe")
        schedules = {tuple(int(v) for v in state["schedule"]) for state in saved}
        if len(schedules) != 1:
            raise InvalidInput("the checkpoints were taken at different steps")
        steps_done, octave, octave_step = schedules.pop()
        if not 0 <= octave < len(self.schedule) or not 0 <= steps_done <= self.total_steps:
            raise InvalidInput("the checkpoints do not fit these recipes' schedule")
        self.steps_done, self.octave, self.octave_step = steps_done, octave, octave_step
        if octave:
            self._step = self._compiled(self.side)
        for chunk in self.chunks:
            states = [saved[index] for index in chunk.indices]
            params = np.stack([np.asarray(state["params"]) for state in states])
            if octave == 0 and params.shape != tuple(chunk.params.shape):
                raise InvalidInput("the checkpoints' parameters do not fit these recipes")
            chunk.params = ops.convert_to_tensor(params)
            slots = int(states[0]["slots"])
            chunk.state = None
            if slots >= 0:
                chunk.state = tuple(
                    ops.convert_to_tensor(
                        np.stack([np.asarray(state[f"slot{n}"]) for state in states])
                        if bool(states[0][f"slot{n}_own"])
                        else np.asarray(states[0][f"slot{n}"])
                    )
                    for n in range(slots)
                )

    # -- output ---------------------------------------------------------------------------------
    def images(self) -> np.ndarray:
        """The current images, uint8 ``(B, size, size, 3)`` (earlier octaves upsampled)."""
        parts = [None] * len(self.recipes)
        for chunk in self.chunks:
            rgb = self._step.to_rgb(chunk.params)
            if rgb.shape[1] != self.size:
                rgb = ops.image.resize(rgb, (self.size, self.size), interpolation="bilinear")
            rgb = np.asarray(ops.convert_to_numpy(rgb))
            for hook in self.hooks:
                rgb = hook.images(rgb)
            for position, index in enumerate(chunk.indices):
                parts[index] = rgb[position]
        stacked = np.stack(parts)
        return np.round(np.clip(stacked, 0.0, 1.0) * 255.0).astype("uint8")

    def metadata(self, index: int) -> dict[str, Any]:
        """The full recipe of image ``index`` for its PNG text: enough to make it again."""
        recipe = self.recipes[index]
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
            "backend": recipe.backend,
            "wga": wga.__version__,
            recipe.backend: _backend_version(recipe.backend),
            "keras": keras.__version__,
        }


def _backend_version(name: str) -> str:
    """The version of the backend's framework (it is imported: Keras runs on it)."""
    import importlib

    return str(getattr(importlib.import_module(name), "__version__", "unknown"))


def render(
    loaded: LoadedModel,
    recipes: Sequence[Recipe],
    on_snapshot: Callable[[BatchRender], None] | None = None,
    snapshot_every: int = 16,
    options: EngineOptions = DEFAULT_OPTIONS,
) -> np.ndarray:
    """Render ``recipes`` (one batch key) to uint8 images ``(B, size, size, 3)``.

    ``on_snapshot(batch)`` is called every ``snapshot_every`` steps and once at the end; read
    ``batch.images()``, ``batch.progress`` and ``batch.steps_done`` from it.
    """
    batch = BatchRender(loaded, recipes, options=options)
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
    if count < 1:
        raise InvalidInput(f"count must be ≥ 1, got {count}")
    weight = DIVERSITY_WEIGHT if diversity_weight is None else diversity_weight
    recipes = [replace(recipe, seed=recipe.seed + i) for i in range(count)]
    batch = BatchRender(loaded, recipes, diversity=weight if count > 1 else 0.0)
    batch.run(batch.total_steps)
    return batch.images()


def render_to_files(
    loaded: LoadedModel,
    recipes: Sequence[Recipe],
    out_dir: str | os.PathLike[str],
    *,
    file_name: Callable[[Recipe], str] | None = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """Render ``recipes`` and write each as a PNG carrying its recipe; images in input order.

    Recipes that share a batch key render together (one forward/backward pass per step);
    ``progress`` shows a tqdm bar of steps. ``file_name`` names each file (default: the full
    :func:`~wga.vis.recipe.recipe_file_name`). The CLI and the notebooks both come through here.
    """

    file_name = file_name or partial(recipe_file_name, full=True)
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
