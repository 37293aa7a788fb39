"""The probe: one streaming pass of a model over a corpus → the top artworks of every unit.

Shape (the middle part runs on any :mod:`wga.executors` executor: this process, or Ray Data)::

    driver:   IndexWriter (resume?) → todo chunks → executor → Partial … → merge → checkpoint → finish
    executor: for each chunk: ChunkFeed (wga.corpus.feed) → Prober (model + on-device reduction)
              → batch_partial (wga.corpus.topk) → Partial

* :class:`Prober` is what a worker holds: the model truncated to a multi-output model of the
  chosen layers (several layers in one pass), and a compiled step that reduces each output on
  the device to per-image spatial maxima/minima and their positions, masked to the image's
  valid region (padding never wins). ``prober(batch) → Partial`` for a batch from
  :func:`wga.corpus.feed.feed`.
* :class:`ProbeJob` is a picklable description a remote worker rebuilds a :class:`Prober` from;
  in this process the worker holds the driver's own prober (:attr:`WorkerSpec.here`).
* Each chunk of image ids is one row of the executor's dataset pass
  (:meth:`~wga.executors.Executor.map_batches`): one chunk is one batch everywhere, so every
  image meets the same batch and the index is the same bit for bit.
* :func:`run_probe` is the driver: it only merges (:func:`wga.corpus.topk.merge`) and writes
  (:class:`wga.corpus.index.IndexWriter`), alone and atomically, so every executor yields the
  same index and workers need no shared disk.

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
from typing import TYPE_CHECKING, Any

import numpy as np

from wga.corpus.corpus import Corpus
from wga.corpus.feed import ChunkFeed, FeedRule, chunk_rows
from wga.corpus.index import IndexWriter, ProbeIndex, ProbeLayer, ValueKind
from wga.corpus.receptive import border_mask, check_border_margin
from wga.corpus.topk import Partial, Reduced, batch_partial
from wga.errors import InvalidInput
from wga.executors import Executor, WorkerSpec
from wga.models import model_reference

if TYPE_CHECKING:
    import keras

    from wga.models import LoadedModel
    from wga.models.surgery import Tap

log = logging.getLogger(__name__)

DEFAULT_TOP = 16  # Feature Visualization shows 10 per sign; 16 leaves room for a 4 × 4 grid
DEFAULT_BATCH = 32
CHECKPOINT_SECONDS = 60.0


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


def reduce_layer(
    output: Any, mask: Any, bottom: bool, *, relu: bool = False, style: bool = True
) -> dict[str, Any]:
    """One layer's per-image reduction on ``keras.ops`` (backend-free, compiled by the caller).

    ``output`` (B, H, W, C) or (B, C); ``mask`` (B, H, W) bool, the kept positions
    (:func:`wga.corpus.receptive.border_mask`: on the image, past the border margin). Returns the
    fields of :class:`wga.corpus.topk.Reduced` by name: the spatial maximum of each unit over the
    kept positions and its flat position (and the minimum where ``bottom``); with ``style``, the
    per-channel mean and standard deviation over the kept positions of the layer's output (the
    ReLU of ``output`` where ``relu``: a recorded pre-activation) — the style statistics. A new
    statistic is one more entry here and one more field there.
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
    if style:
        # Sums over the kept positions as (1 × P) · (P × C) products: a product reads the layer
        # once and writes nothing, where a masked multiply and a sum write a copy of it first
        # (benchmarks/look_speed.py: +5.3 % of a block1_conv2/block2_conv2 probe, from +13.6 %).
        active = ops.relu(flat) if relu else flat
        weight = ops.cast(ops.reshape(mask, (-1, 1, height * width)), "float32")
        count = ops.maximum(ops.sum(weight, axis=2), 1.0)  # an unreadable image keeps nothing
        mean = ops.matmul(weight, active)[:, 0] / count
        spread = ops.square(active - mean[:, None, :])  # two passes: exact for large activations
        result["mean"] = mean
        result["std"] = ops.sqrt(ops.matmul(weight, spread)[:, 0] / count)
    return result


class Prober:
    """A model and a compiled reduction step: a batch of the feed → its :class:`Partial`."""

    def __init__(
        self,
        loaded: LoadedModel,
        layers: Sequence[str],
        k: int = DEFAULT_TOP,
        *,
        border_margin: float = 0.0,
        style: bool = True,
    ) -> None:
        from wga.corpus.inference import compile_inference
        from wga.corpus.receptive import receptive_field

        if k < 1:
            raise InvalidInput(f"--top must be at least 1, not {k}")
        self.loaded = loaded
        self.k = k
        self.border_margin = check_border_margin(border_margin)
        self.rule = feed_rule(loaded)
        self.model, self.plan = build_probe_model(loaded, layers)
        self.fields = [receptive_field(loaded.model, p.name, self.rule.side) for p in self.plan]
        plan = self.plan

        def reduce(outputs: Any, masks: list[Any]) -> list[dict[str, Any]]:
            outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
            return [
                reduce_layer(
                    out, mask, layer.bottom, relu=layer.values == "pre-activation", style=style
                )
                for layer, out, mask in zip(plan, outputs, masks, strict=True)
            ]

        self._reduce = compile_inference(self.model, reduce)

    @property
    def layers(self) -> list[str]:
        return [layer.name for layer in self.plan]

    def reduce(self, images: np.ndarray, shapes: np.ndarray) -> dict[str, Reduced]:
        """Per layer, the per-image maxima (and minima) with positions (numpy)."""
        masks = [
            border_mask(field, shapes, layer.grid, self.rule.side, self.border_margin)
            for layer, field in zip(self.plan, self.fields, strict=True)
        ]
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
    rule: FeedRule  # how workers decode the corpus (the driver's prober.rule)
    border_margin: float = 0.0  # positions kept (wga.corpus.receptive.border_mask)

    def prober(self) -> Prober:
        from wga.models import default_registry

        return Prober(
            default_registry().load(self.model),
            self.layers,
            self.k,
            border_margin=self.border_margin,
        )


def probe_chunks(
    executor: Executor,
    job: ProbeJob,
    chunks: Sequence[np.ndarray],
    *,
    prober: Prober | None = None,
    workers: int | None = None,
) -> Iterator[Partial]:
    """The Partial of every chunk (any order) on ``executor``; ``prober``: the driver's, for
    an in-process executor to use rather than build another."""
    spec = WorkerSpec(ProbeJob.prober, (job,), gpu=True, here=prober)
    feed = ChunkFeed(job.corpus, job.rule)
    yield from executor.map_batches(chunk_rows(chunks), feed, spec, workers=workers)


def run_probe(
    loaded: LoadedModel,
    corpus: Corpus,
    layers: Sequence[str],
    out: str | Path,
    *,
    k: int = DEFAULT_TOP,
    batch_size: int = DEFAULT_BATCH,
    executor: Executor | None = None,
    workers: int | None = None,
    progress: bool = True,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    border_margin: float = 0.0,
) -> ProbeIndex:
    """Build (or resume) the index of ``loaded`` over ``corpus`` at ``out``; returns it, opened.

    The chunks run on ``executor`` (default: this process; ``workers``: how many on Ray). A run
    killed at any moment resumes from its last checkpoint (written every
    ``checkpoint_seconds``): done chunks are never fed again, and the finished index is the
    same as an uninterrupted run's. ``border_margin`` (:func:`wga.corpus.receptive.border_mask`):
    0 keeps every position on the image (the library's default, as before the margin existed);
    ``python -m wga probe`` uses the measured :data:`~wga.corpus.receptive.DEFAULT_BORDER_MARGIN`.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise InvalidInput(f"--batch must be at least 1, not {batch_size}")
    prober = Prober(loaded, layers, k, border_margin=border_margin)
    writer = IndexWriter.open(
        out,
        loaded=loaded,
        corpus=corpus,
        plan=prober.plan,
        rule=prober.rule,
        k=k,
        batch_size=batch_size,
        border_margin=prober.border_margin,
    )
    todo = writer.todo_chunks()
    job = ProbeJob(
        model_reference(loaded),
        str(corpus.root),
        tuple(prober.layers),
        k,
        writer.batch_size,
        prober.rule,
        prober.border_margin,
    )
    if executor is None:
        from wga.executors.local import LocalExecutor

        executor = LocalExecutor()
    done_before = writer.done_count()
    if done_before:
        log.info("resuming %s: %d of %d images done", out, done_before, len(corpus))
    last = time.monotonic()
    with tqdm(
        total=len(corpus), initial=done_before, unit="img", disable=not progress, desc="probe"
    ) as bar:
        for partial in probe_chunks(executor, job, todo, prober=prober, workers=workers):
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
