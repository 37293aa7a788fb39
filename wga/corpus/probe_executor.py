"""The probe on any :mod:`wga.executors` executor — on a Ray cluster, Ray Data ``map_batches``.

The probe's driver (:func:`wga.corpus.probe.run_probe`) hands out chunks of image ids and folds
the :class:`~wga.corpus.topk.Partial` of each with its own merge; this adapter is where the chunks
run. Each chunk is one row of the dataset: ``prepare`` decodes and resizes its images by the feed
rule (:func:`wga.corpus.feed.feed`, the very code of the local pass), and a :class:`ProbeWorker`
— the model loaded once per actor, one GPU each where the cluster has them — turns the batch into
a Partial. One chunk is one batch, exactly as in-process, so every image meets the same batch
and the index is the same bit for bit; a chunk whose worker died is retried by Ray, and the
driver writes the index alone, atomically.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from wga.executors import Executor, WorkerSpec

if TYPE_CHECKING:
    from wga.corpus.probe import ProbeJob
    from wga.corpus.topk import Partial


class ChunkDecoder:
    """``{"ids": chunk}`` → the feed's batch for it, as numpy (runs wherever the CPUs are)."""

    def __init__(self, job: ProbeJob) -> None:
        self.job = job

    @cached_property
    def _corpus(self) -> Any:
        from wga.corpus.corpus import open_corpus

        return open_corpus(self.job.corpus)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from wga.corpus.feed import feed

        ids = np.asarray(row["ids"], np.int64)
        return next(iter(feed(self._corpus, self.job.rule, ids, len(ids), prefetch=0)))

    def __getstate__(self) -> dict[str, Any]:
        return {"job": self.job}  # the corpus listing is rebuilt where it runs


class ProbeWorker:
    """One probe worker: the job's :class:`~wga.corpus.probe.Prober` built once, then batches."""

    def __init__(self, job: ProbeJob) -> None:
        self.prober = job.prober()

    def __call__(self, columns: dict[str, list[Any]]) -> list[dict[str, np.ndarray]]:
        """Each row of ``columns`` is one chunk's batch; their Partials as flat arrays."""
        count = len(next(iter(columns.values())))
        out = []
        for i in range(count):
            batch = {key: np.asarray(values[i]) for key, values in columns.items()}
            out.append(self.prober(batch).to_arrays())
        return out


class ExecutorProbe:
    """The probe's executor protocol (``run(job, chunks) → Partials``) on a wga executor."""

    def __init__(self, executor: Executor, workers: int | None = None) -> None:
        self.executor = executor
        self.workers = workers

    def run(self, job: ProbeJob, chunks: Sequence[np.ndarray]) -> Iterator[Partial]:
        from wga.corpus.topk import Partial

        rows = [{"ids": np.asarray(chunk, np.int64)} for chunk in chunks]
        spec = WorkerSpec(ProbeWorker, (job,), gpu=True)
        results = self.executor.map_batches(
            rows, ChunkDecoder(job), spec, batch_size=1, workers=self.workers
        )
        for arrays_list in results:
            for arrays in arrays_list:
                yield Partial.from_arrays(arrays)
