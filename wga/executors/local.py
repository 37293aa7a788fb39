"""The default executor: one worker in this process, items in order, nothing extra installed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from wga.executors import WorkerSpec


class LocalExecutor:
    """Builds each :class:`WorkerSpec` once per call and feeds it every item in order.

    In-process work is the reference the Ray executor must reproduce, so it does nothing
    clever: no threads, no reordering (TensorFlow already uses every core for one batch).
    """

    name = "in-process"

    def slots(self, spec: WorkerSpec) -> int:
        return 1

    def map_unordered(
        self, spec: WorkerSpec, items: Iterable[Any], *, workers: int | None = None
    ) -> Iterator[Any]:
        worker = spec.build()
        for item in items:
            yield worker(item)

    def map_batches(
        self,
        rows: Sequence[dict[str, Any]],
        prepare: Callable[[dict[str, Any]], dict[str, Any]],
        spec: WorkerSpec,
        *,
        batch_size: int,
        workers: int | None = None,
    ) -> Iterator[Any]:
        worker = spec.build()
        size = max(1, int(batch_size))
        for start in range(0, len(rows), size):
            prepared = [prepare(row) for row in rows[start : start + size]]
            yield worker(_columns(prepared))

    def close(self) -> None:
        return None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _columns(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows → a dict of columns (lists), the batch shape Ray Data hands a worker."""
    keys = list(rows[0]) if rows else []
    return {key: [row[key] for row in rows] for key in keys}
