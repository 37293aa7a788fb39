"""The probe: one streaming pass of a model over a corpus → the top artworks of every unit.

Shape (so that other executors can take the middle part)::

    driver:   IndexWriter (resume?) → todo chunks → executor → Partial … → merge → checkpoint → finish
    executor: for each chunk: feed (wga.corpus.feed) → Prober (model + on-device reduction)
              → batch_partial (wga.corpus.topk) → Partial

* :class:`Prober` is what a worker holds: the model truncated to a multi-output model of the
  chosen layers (several layers in one pass), and a compiled step that reduces each output on
  the device to per-image spatial maxima/minima and their positions, masked to the image's
  valid region (padding never wins). ``prober(batch) → Partial`` for a batch from
  :func:`wga.corpus.feed.feed`.
* :class:`ProbeJob` is a picklable description a remote worker rebuilds a :class:`Prober` from.
* An executor is anything with ``run(job, chunks) → Iterator[Partial]`` (order free);
  :class:`LocalExecutor` is the in-process one. The Ray adapter lives with the Ray code.
* :func:`run_probe` is the driver: it only merges (:func:`wga.corpus.topk.merge`) and writes
  (:class:`wga.corpus.index.IndexWriter`), so every executor yields the same index.

**Values.** Where a layer's pre-activation is reachable the probe records it, which also gives
negative examples (bottom-k): a ReLU layer → its input; a conv/Dense layer with a built-in ReLU
(vgg16-hed's convs) → the same layer rebuilt linear (weights copied); the class layer → its
logits. Otherwise (e.g. InceptionV3's ``mixedN`` concatenations, leaky ReLUs, ReLU6: what counts
as a ReLU is :func:`wga.models.surgery.is_relu`'s rule, the engine's too) the layer's output,
top-k only. For positive values ``relu(max pre) = max relu(pre)``, so the ranking is the layer's
own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from wga.corpus.corpus import Corpus, open_corpus
from wga.corpus.feed import FeedRule, feed, position_mask
from wga.corpus.topk import Partial, Reduced, batch_partial
from wga.errors import InvalidInput
from wga.models import model_reference

if TYPE_CHECKING:
    import keras

    from wga.corpus.index import ProbeIndex
    from wga.models import LoadedModel
    from wga.models.surgery import Tap

log = logging.getLogger(__name__)

DEFAULT_TOP = 16  # Feature Visualization shows 10 per sign; 16 leaves room for a 4 × 4 grid
DEFAULT_BATCH = 32
CHECKPOINT_SECONDS = 60.0

ValueKind = Literal["pre-activation", "logits", "output"]


@dataclass(frozen=True)
class ProbeLayer:
    """A probed layer: what its recorded values are and whether it has negatives."""

    name: str
    units: int
    kind: str  # LayerInfo.kind
    values: ValueKind
    grid: tuple[int, int]  # feature map (H, W) for a side × side input; (1, 1) without positions

    @property
    def bottom(self) -> bool:
        return self.values != "output"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "units": self.units,
            "kind": self.kind,
            "values": self.values,
            "bottom": self.bottom,
            "grid": list(self.grid),
        }


def _recorded_value(layer: keras.layers.Layer, kind: str) -> tuple[ValueKind, Tap]:
    """What the probe records for ``layer`` (see the module docstring); what a ReLU is, the
    surgery decides (:func:`wga.models.surgery.is_relu`)."""
    import keras

    from wga.models.surgery import has_builtin_relu, is_relu

    if is_relu(layer):
        return "pre-activation", "preactivation"
    if isinstance(layer, keras.layers.Activation):
        return "output", "output"
    if kind == "class":  # a linear class layer's output is its pre-activation: the logits
        return "logits", "preactivation"
    if has_builtin_relu(layer):
        return "pre-activation", "preactivation"
    return "output", "output"


def feed_rule(loaded: LoadedModel) -> FeedRule:
    """The rule for ``loaded``: its default input side (a fixed input shape wins), its preprocessing."""
    shape = tuple(loaded.model.inputs[0].shape)
    side = int(shape[1]) if shape[1] is not None else int(loaded.spec.input_size)
    return FeedRule(side, loaded.spec.preprocessing)


def build_probe_model(
    loaded: LoadedModel, layers: Sequence[str]
) -> tuple[keras.Model, list[ProbeLayer]]:
    """A model from the input to the recorded values of ``layers`` (in that order), and their plan.

    The graph is rewired (:func:`wga.models.surgery.rewire`, sharing every weight) with each
    recorded layer that has its activation built in split into its linear twin and the
    activation, so the pre-activation is computed once and feeds both the record and the rest
    of the network.
    """
    from wga.models.surgery import cut, rewire

    if not layers:
        raise InvalidInput("name at least one layer to probe (--layers L1,L2)")
    if len(set(layers)) != len(layers):
        raise InvalidInput(f"a layer is named twice in {','.join(layers)}")
    side = feed_rule(loaded).side
    infos = {name: loaded.layer(name) for name in layers}  # NotFound with the closest names
    recorded = {
        name: _recorded_value(loaded.model.get_layer(name), info.kind)
        for name, info in infos.items()
    }
    values = {name: value for name, (value, _) in recorded.items()}
    rewired = rewire(loaded.model, taps={name: tap for name, (_, tap) in recorded.items()})
    outputs = [rewired.taps[name] for name in layers]
    plan = []
    for name, output in zip(layers, outputs, strict=True):
        shape = tuple(output.shape)
        grid = (int(shape[1] or 0), int(shape[2] or 0)) if len(shape) == 4 else (1, 1)
        plan.append(ProbeLayer(name, infos[name].units, infos[name].kind, values[name], grid))
    probe_model = cut(rewired.model, outputs)
    if any(0 in p.grid for p in plan):  # a free-size model: learn the grids from one call
        results = probe_model(np.zeros((1, side, side, 3), np.float32))
        results = results if isinstance(results, list | tuple) else [results]
        plan = [
            ProbeLayer(
                p.name,
                p.units,
                p.kind,
                p.values,
                (int(r.shape[1]), int(r.shape[2])) if len(r.shape) == 4 else (1, 1),
            )
            for p, r in zip(plan, results, strict=True)
        ]
    return probe_model, plan


def reduce_layer(output: Any, mask: Any, bottom: bool) -> dict[str, Any]:
    """One layer's per-image reduction on ``keras.ops`` (backend-free, compiled by the caller).

    ``output`` (B, H, W, C) or (B, C); ``mask`` (B, H, W) bool from
    :func:`wga.corpus.feed.position_mask`. Returns the fields of
    :class:`wga.corpus.topk.Reduced` by name: the spatial maximum of each unit over the kept
    positions and its flat position (and the minimum where ``bottom``). A new statistic is one
    more entry here and one more field there.
    """
    from keras import ops

    out = ops.cast(output, "float32")
    if len(out.shape) == 2:
        out = out[:, None, None, :]
    height, width, units = out.shape[1], out.shape[2], out.shape[3]
    flat = ops.reshape(out, (-1, height * width, units))
    keep = ops.reshape(mask, (-1, height * width, 1))
    high = ops.where(keep, flat, -np.inf)
    result = {"max": ops.max(high, axis=1), "argmax": ops.argmax(high, axis=1)}
    if bottom:
        low = ops.where(keep, flat, np.inf)
        result["min"] = ops.min(low, axis=1)
        result["argmin"] = ops.argmin(low, axis=1)
    return result


class Prober:
    """A model and a compiled reduction step: a batch of the feed → its :class:`Partial`."""

    def __init__(self, loaded: LoadedModel, layers: Sequence[str], k: int = DEFAULT_TOP) -> None:
        from wga.corpus.inference import compile_inference

        if k < 1:
            raise InvalidInput(f"--top must be at least 1, not {k}")
        self.loaded = loaded
        self.k = k
        self.rule = feed_rule(loaded)
        self.model, self.plan = build_probe_model(loaded, layers)
        plan = self.plan

        def reduce(outputs: Any, masks: list[Any]) -> list[dict[str, Any]]:
            outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
            return [
                reduce_layer(out, mask, layer.bottom)
                for layer, out, mask in zip(plan, outputs, masks, strict=True)
            ]

        self._reduce = compile_inference(self.model, reduce)

    @property
    def layers(self) -> list[str]:
        return [layer.name for layer in self.plan]

    def reduce(self, images: np.ndarray, shapes: np.ndarray) -> dict[str, Reduced]:
        """Per layer, the per-image maxima (and minima) with positions (numpy)."""
        masks = [position_mask(shapes, layer.grid, self.rule.side) for layer in self.plan]
        reduced = self._reduce(np.asarray(images, np.float32), masks)
        return {
            layer.name: Reduced(grid=layer.grid, **fields)
            for layer, fields in zip(self.plan, reduced, strict=True)
        }

    def __call__(self, batch: dict[str, Any]) -> Partial:
        """The :class:`Partial` of one feed batch (:func:`wga.corpus.feed.feed`'s dict)."""
        reduced = self.reduce(batch["images"], batch["shapes"])
        errors = [
            e.decode() if isinstance(e, bytes) else str(e) for e in np.asarray(batch["error"])
        ]
        return batch_partial(
            np.asarray(batch["ids"]),
            np.asarray(batch["sizes"]),
            reduced,
            self.k,
            ok=np.asarray(batch["ok"]),
            errors=errors,
        )


@dataclass(frozen=True)
class ProbeJob:
    """Everything a worker needs to rebuild the probe's model and feed (picklable)."""

    model: str  # registry name, or the path of a .keras file
    corpus: str  # corpus root
    layers: tuple[str, ...]
    k: int
    batch_size: int
    rule: FeedRule | None = None  # how workers decode the corpus (the driver's prober.rule)

    def prober(self) -> Prober:
        from wga.models import default_registry

        return Prober(default_registry().load(self.model), self.layers, self.k)


class Executor(Protocol):
    """Runs chunks of image ids through a :class:`Prober` somewhere; yields one Partial per chunk."""

    def run(self, job: ProbeJob, chunks: Sequence[np.ndarray]) -> Iterator[Partial]: ...


class LocalExecutor:
    """In-process: one feed (parallel decode, prefetch) into one Prober."""

    def __init__(self, prober: Prober | None = None, corpus: Corpus | None = None) -> None:
        self.prober = prober
        self.corpus = corpus

    def run(self, job: ProbeJob, chunks: Sequence[np.ndarray]) -> Iterator[Partial]:
        prober = self.prober or job.prober()
        corpus = self.corpus or open_corpus(job.corpus)
        if not chunks:
            return
        ordered = sorted(chunks, key=lambda c: int(c[0]))
        sizes = {len(c) for c in ordered[:-1]}
        if len(sizes) > 1 or (sizes and len(ordered[-1]) > next(iter(sizes))):
            raise ValueError("chunks must be of equal size, the last one may be shorter")
        batch = len(ordered[0])
        for data in feed(corpus, prober.rule, np.concatenate(ordered), batch):
            yield prober(data)


def run_probe(
    loaded: LoadedModel,
    corpus: Corpus,
    layers: Sequence[str],
    out: str | Path,
    *,
    k: int = DEFAULT_TOP,
    batch_size: int = DEFAULT_BATCH,
    executor: Executor | None = None,
    progress: bool = True,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
) -> ProbeIndex:
    """Build (or resume) the index of ``loaded`` over ``corpus`` at ``out``; returns it, opened.

    A run killed at any moment resumes from its last checkpoint (written every
    ``checkpoint_seconds``): done chunks are never fed again, and the finished index is the
    same as an uninterrupted run's.
    """
    from tqdm.auto import tqdm

    from wga.corpus.index import IndexWriter, ProbeIndex

    if batch_size < 1:
        raise InvalidInput(f"--batch must be at least 1, not {batch_size}")
    prober = Prober(loaded, layers, k)
    writer = IndexWriter.open(
        out,
        loaded=loaded,
        corpus=corpus,
        plan=prober.plan,
        rule=prober.rule,
        k=k,
        batch_size=batch_size,
    )
    todo = writer.todo_chunks()
    job = ProbeJob(
        model_reference(loaded),
        str(corpus.root),
        tuple(prober.layers),
        k,
        writer.batch_size,
        prober.rule,
    )
    executor = executor or LocalExecutor(prober, corpus)
    done_before = writer.done_count()
    if done_before:
        log.info("resuming %s: %d of %d images done", out, done_before, len(corpus))
    last = time.monotonic()
    with tqdm(
        total=len(corpus), initial=done_before, unit="img", disable=not progress, desc="probe"
    ) as bar:
        for partial in executor.run(job, todo):
            writer.add(partial)
            bar.update(len(partial.ids) + len(partial.skipped))
            if time.monotonic() - last >= checkpoint_seconds:
                writer.checkpoint()
                last = time.monotonic()
    writer.finish()
    if writer.skipped:
        log.warning(
            "%d image(s) could not be read and were skipped (listed in %s)",
            len(writer.skipped),
            Path(out) / "probe.json",
        )
    return ProbeIndex.open(out)
