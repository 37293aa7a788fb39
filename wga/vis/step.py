"""The compiled render step: one forward/backward pass and one update for a whole batch.

What the step computes is written once, on ``keras.ops`` (:meth:`CompiledStep.forward`): the
image from its parameters, the random transforms (their matrices come in as an input, drawn on
the host), the model up to the objective's layers, the objective's weighted terms, one score per
element. How it is differentiated and compiled is the backend's (:mod:`wga.vis.backends`).

Per-element inputs (:func:`element_inputs`): each term of the objective reads its own units,
positions (fractions of its layer's map) and directions, one per batch element, so a batch of
atlas icons, or a bulk render of a layer's units, is one trace and one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from keras import ops

from wga.vis.backends import active
from wga.vis.direction import COSINE_POWER
from wga.vis.objective import SCORES, Target, redirect_relu_gradients
from wga.vis.objective_table import Objective
from wga.vis.optim import Optimiser, optimiser
from wga.vis.param import ImageParam
from wga.vis.presets import Preset
from wga.vis.transform import TransformStack

if TYPE_CHECKING:
    from wga.models import LoadedModel
    from wga.vis.vectors import VectorStore

CENTRE = (0.5, 0.5)  # floor(0.5 · side) = side // 2: the neuron objective's centre at any size

Inputs = dict[str, np.ndarray]
StepFunction = Callable[[Any, tuple, Inputs], tuple[Any, tuple, Any]]


@dataclass
class CompiledStep:
    """One step for (model graph, octave side, preset, objective structure), in two traces:
    with redirected ReLU gradients (the warm-up) and plain. The plain one keeps no
    pre-activations for the custom gradient: less memory and time for the (many more) steps
    after the warm-up, and for octaves that never warm up."""

    model: Any  # keras.Model: model input → [one output per layer of `layers`]
    layers: tuple[str, ...]
    fixed_size: int | None  # the input side the model insists on; None = any size
    param: ImageParam
    transforms: TransformStack | None
    preprocess: Callable[[Any], Any]  # RGB in [0, 1] → the model's input
    objective: Objective  # bound: every term names its layer
    preset: Preset
    optimiser: Optimiser = field(init=False)
    step: dict[bool, StepFunction] = field(init=False)
    to_rgb: Callable[[Any], Any] = field(init=False)

    def __post_init__(self) -> None:
        self.optimiser = optimiser(self.preset.optimizer, self.preset.learning_rate)
        backend = active()
        variables = list(self.model.variables)
        couples = self.objective.couples_batch
        self.step = {
            warm: backend.compile_step(
                lambda params, inputs, warm=warm: self.forward(params, inputs, warm),
                self.optimiser.update,
                variables,
                couples_batch=couples,
            )
            for warm in (False, True)
        }
        self.to_rgb = backend.compile_function(self.param.to_rgb)

    def forward(self, params: Any, inputs: dict[str, Any], warm: bool = False) -> tuple[Any, Any]:
        """``(sum of the scores, scores (B,))`` for parameters ``params``."""
        images = self.param.to_rgb(params)
        seen = images
        if self.transforms is not None:
            seen = self.transforms(images, inputs["matrices"])
        if self.fixed_size is not None and seen.shape[1] != self.fixed_size:
            seen = ops.image.resize(
                seen, (self.fixed_size, self.fixed_size), interpolation="bilinear", antialias=True
            )
        with redirect_relu_gradients(warm):
            outputs = self.model(self.preprocess(seen), training=False)
        if not isinstance(outputs, list | tuple):
            outputs = [outputs]
        features = dict(zip(self.layers, outputs, strict=True))
        total = None
        for index, (weight, call) in enumerate(self.objective.terms):
            target = Target(
                units=inputs.get(f"units{index}"),
                border=self.preset.border,
                positions=inputs.get(f"positions{index}"),
                vectors=inputs.get(f"vectors{index}"),
                cos_power=COSINE_POWER if call.cos_power is None else call.cos_power,
                images=images,
            )
            term = SCORES[call.name](features.get(call.layer or ""), target)
            term = term if weight == 1 else term * weight
            total = term if total is None else total + term
        return ops.sum(total), total

    def inputs(self, seeds: np.ndarray, step: int, elements: Inputs) -> Inputs:
        """The step's inputs for one chunk: its elements' inputs and this step's matrices."""
        if self.transforms is None:
            return elements
        return {**elements, "matrices": self.transforms.matrices(seeds, step)}


def element_inputs(
    loaded: LoadedModel,
    objectives: Sequence[Objective],
    size: int,
    store: VectorStore | None = None,
) -> Inputs:
    """Per-element inputs of bound ``objectives`` (one per batch element, one structure): for
    term ``k``, ``units{k}`` ``(B,)`` int32, ``positions{k}`` ``(B, 2)`` float32 fractions of
    the term's map (its centre when the recipe gives none), ``vectors{k}`` ``(B, C)`` float32
    unit directions — each only for the terms that read it."""
    from wga.errors import InvalidInput
    from wga.vis.targets import map_shape
    from wga.vis.vectors import VectorStore, check_direction, unit

    out: Inputs = {}
    for index, (_, call) in enumerate(objectives[0].terms):
        calls = [objective.terms[index][1] for objective in objectives]
        spec = call.spec
        if spec.unit:
            out[f"units{index}"] = np.array([c.unit for c in calls], dtype="int32")
        if spec.position != "no":
            positions = np.tile(np.asarray(CENTRE, "float32"), (len(calls), 1))
            shape: tuple[int, int] | None = None
            for row, c in enumerate(calls):
                if c.position is None:
                    continue
                shape = shape or map_shape(loaded, c.layer or "", size)
                (y, x), (height, width) = c.position, shape
                if not (y < height and x < width):
                    raise InvalidInput(
                        f"position [{y}, {x}] is outside layer {c.layer!r}'s feature map, which "
                        f"is {height} × {width} at {size} px: give y < {height} and x < {width}"
                    )
                positions[row] = ((y + 0.5) / height, (x + 0.5) / width)
            out[f"positions{index}"] = positions
        if spec.vector != "no":
            store = store or VectorStore()
            channels = loaded.layer(call.layer or "").units
            rows = [unit(check_direction(store, c.vector or "", channels)) for c in calls]
            out[f"vectors{index}"] = np.stack(rows).astype("float32")
    return out
