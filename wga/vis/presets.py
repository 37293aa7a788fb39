"""Named render recipes: parameterisation, transforms, optimiser, octaves, steps — as data.

* ``lucid`` (default): Fourier basis with 1/f scaling and colour decorrelation, sigmoid, Lucid's
  transform stack scaled with the size, ReLU warm-up; Adam at 0.1 for 192 steps (Lucid: 0.05
  for 512), which measured 90 % of Lucid's activation in a third of the time.
  Above 256 px it renders in octaves (×2, most steps at the smallest size).
* ``offert2018``: the 2018 original (``shared/notes/original.md``): pixel space in model-input
  range, normalised gradient ascent ``x += 0.01 · g / mean|g|``, 100 steps per octave, octaves ×1.2
  from ~174 px up to the size with DeepDream-style re-injection of lost detail, a 5×5 median filter
  every 4 steps, a channel mean that excludes a 2 px border, autotone at the end. Two fixes: class
  units use the logit (as everywhere in wga), and the first 16 steps redirect ReLU gradients, so
  a unit that is dead on the start noise can still rise (the original left such units blank).
* ``preview``: ``lucid`` with 48 steps at rate 0.2 and a display contrast stretch — grid
  thumbnails in seconds that read at a glance (issue 12: the rate-0.08 ones were grey).
* ``pixel``: ``lucid`` without the Fourier basis — the comparison that shows why Fourier helps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from wga.errors import InvalidInput, closest_names

LUCID_STEPS = 512  # Lucid render_vis thresholds=(512,)
LUCID_LEARNING_RATE = 0.05  # Lucid render_vis: tf.train.AdamOptimizer(0.05)
# The default preset's steps and rate, by measurement (benchmarks/time_to_quality.py, vgg16-hed,
# 128 px): Lucid's rate reaches 90 % of its own 512-step activation after 288 steps; twice the
# rate after ~170 (0.89 at 160, 0.92 at 192). 192 steps at 0.1: a 224 px unit in ~2 minutes on
# 2 cores instead of ~8 (--steps 512 and the pixel preset keep Lucid's own figures).
DEFAULT_STEPS = 192
DEFAULT_LEARNING_RATE = 0.1
LUCID_OCTAVE_MAX = 256  # renders above this side start smaller and double (our choice)
OFFERT_STEPS_PER_OCTAVE = 100  # explain.ipynb: 100 iterations per octave
OFFERT_OCTAVE_SCALE = 1.2  # explain.ipynb: octave_scale = 1.2
OFFERT_PAPER_SIZE = 900  # explain.ipynb: 10 octaves up to 900 px
OFFERT_PAPER_OCTAVES = 10
OFFERT_SMALLEST = OFFERT_PAPER_SIZE / OFFERT_OCTAVE_SCALE ** (OFFERT_PAPER_OCTAVES - 1)  # ≈ 174 px
OFFERT_STEP_SIZE = 0.01  # explain.ipynb: img += 0.01 * grad / mean(|grad|)
OFFERT_MEDIAN_EVERY = 4  # explain.ipynb: 5×5 median filter every 4 steps
OFFERT_MEDIAN_SIZE = 5
OFFERT_BORDER = 2  # explain.ipynb: channel mean without a 2-pixel border
# preview: measured with benchmarks/preview_quality.py (vgg16-hed, 128 px, vs lucid 512 steps):
# rate 0.08 gave 0.41 of the full render's activation and 0.60 of its pixel spread (grey);
# rate 0.2 gives 0.56 and 0.87, at the same 48 steps; the stretch is for display only.
PREVIEW_STEPS = 48
PREVIEW_LEARNING_RATE = 0.2
PREVIEW_STRETCH_PERCENTILE = 1.0


Part = tuple[str, tuple[tuple[str, Any], ...]]
"""A named part with its options (hashable): ``("median_filter", (("every", 4), ("size", 5)))``."""


def part(name: str, **options: Any) -> Part:
    """A hook by name with its options, as a preset lists it (see :mod:`wga.vis.hooks`)."""
    return (name, tuple(sorted(options.items())))


@dataclass(frozen=True)
class DoublingOctaves:
    """Lucid-style: sides above ``largest_first`` start at half the size (or less) and double;
    each octave gets steps ∝ 1/side, so the costly large octaves only refine."""

    largest_first: int = LUCID_OCTAVE_MAX

    def sizes(self, size: int) -> list[int]:
        count = (
            1 if size <= self.largest_first else 1 + math.ceil(math.log2(size / self.largest_first))
        )
        return [round(size / 2**k) for k in range(count - 1, -1, -1)]

    def default_steps(self, size: int, preset_steps: int) -> int:
        return preset_steps

    def weights(self, size: int, sizes: list[int]) -> list[float]:
        return [size / side for side in sizes]


@dataclass(frozen=True)
class ScaledOctaves:
    """The 2018 original: octaves ×``scale`` from ``smallest`` up to the size, the same steps in
    each (``steps_per_octave`` by default)."""

    scale: float = OFFERT_OCTAVE_SCALE
    smallest: float = OFFERT_SMALLEST
    steps_per_octave: int = OFFERT_STEPS_PER_OCTAVE

    def sizes(self, size: int) -> list[int]:
        count = 1
        if size >= self.smallest:
            count = 1 + math.floor(math.log(size / self.smallest) / math.log(self.scale) + 1e-9)
        # int(), as Keras' DeepDream example that the original followed (900 → 520, not 521)
        return [int(size / self.scale**k) for k in range(count - 1, -1, -1)]

    def default_steps(self, size: int, preset_steps: int) -> int:
        return self.steps_per_octave * len(self.sizes(size))

    def weights(self, size: int, sizes: list[int]) -> list[float]:
        return [1.0] * len(sizes)


Octaves = DoublingOctaves | ScaledOctaves


@dataclass(frozen=True)
class Preset:
    """Everything about a render except the model, layer, unit, size and seed, by its parts:
    parameterisation, optimiser (a name in :data:`wga.vis.optim.OPTIMISERS`), octave schedule,
    transforms, and hooks (names in :data:`wga.vis.hooks.HOOKS`, run by the step loop)."""

    name: str
    description: str
    param: Literal["fourier", "pixel"]
    decorrelate: bool
    output: Literal["sigmoid", "affine"]
    optimizer: Literal["adam", "normalized"]
    learning_rate: float
    default_steps: int  # at the reference size; see resolve_steps
    octaves: Octaves = DoublingOctaves()
    decay: float = 1.0
    transforms: bool = True
    warmup_steps: int = 16  # Lucid: relu_gradient_override for the first 16 steps
    border: int = 0  # pixels of the feature map a channel mean leaves out
    hooks: tuple[Part, ...] = ()

    def octave_sizes(self, size: int) -> list[int]:
        """The sides rendered in turn, smallest first, ending at ``size``."""
        return self.octaves.sizes(size)

    def resolve_steps(self, size: int, steps: int | None) -> int:
        """Total steps over all octaves; ``None`` → this preset's default for ``size``."""
        if steps is not None:
            return steps
        return self.octaves.default_steps(size, self.default_steps)

    def schedule(self, size: int, steps: int | None) -> list[tuple[int, int]]:
        """``(side, steps)`` per octave, the steps shared by the octaves' weights."""
        total = self.resolve_steps(size, steps)
        sizes = self.octave_sizes(size)[-total:]  # never an octave without a step
        weights = self.octaves.weights(size, sizes)
        shares = [max(1, math.floor(total * w / sum(weights))) for w in weights]
        shares[0] += total - sum(shares)
        return list(zip(sizes, shares, strict=True))


PRESETS: dict[str, Preset] = {
    "lucid": Preset(
        name="lucid",
        description="Fourier basis, 1/f scaling, colour decorrelation, Lucid's transforms, "
        "ReLU warm-up (Lucid's recipe); Adam 0.1 for 192 steps: 90 % of Lucid's 512 steps "
        "at 0.05, in a third of the time",
        param="fourier",
        decorrelate=True,
        output="sigmoid",
        optimizer="adam",
        learning_rate=DEFAULT_LEARNING_RATE,
        default_steps=DEFAULT_STEPS,
    ),
    "offert2018": Preset(
        name="offert2018",
        description="the 2018 paper's recipe: pixel space, normalised gradient, octaves ×1.2 "
        "with detail re-injection, 5×5 median every 4 steps, autotone",
        param="pixel",
        decorrelate=False,
        output="affine",
        optimizer="normalized",
        learning_rate=OFFERT_STEP_SIZE,
        default_steps=OFFERT_STEPS_PER_OCTAVE * OFFERT_PAPER_OCTAVES,
        octaves=ScaledOctaves(),
        transforms=False,
        warmup_steps=16,  # not in 2018: without it, units dead on grey noise never move
        border=OFFERT_BORDER,
        hooks=(
            part("detail_reinjection"),
            part("median_filter", every=OFFERT_MEDIAN_EVERY, size=OFFERT_MEDIAN_SIZE),
            part("autotone"),
        ),
    ),
    "preview": Preset(
        name="preview",
        description="lucid with 48 steps at rate 0.2 and a contrast stretch: quick thumbnails",
        param="fourier",
        decorrelate=True,
        output="sigmoid",
        optimizer="adam",
        learning_rate=PREVIEW_LEARNING_RATE,
        default_steps=PREVIEW_STEPS,
        warmup_steps=8,
        hooks=(part("display_stretch", percentile=PREVIEW_STRETCH_PERCENTILE),),
    ),
    "pixel": Preset(
        name="pixel",
        description="lucid in pixel space (no Fourier basis): for comparison",
        param="pixel",
        decorrelate=True,
        output="sigmoid",
        optimizer="adam",
        learning_rate=LUCID_LEARNING_RATE,
        default_steps=LUCID_STEPS,
    ),
}
DEFAULT_PRESET = "lucid"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidInput(
            f"unknown preset {name!r}: {closest_names(name, list(PRESETS))}"
        ) from None
