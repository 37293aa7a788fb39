"""The default executor: one worker in this process, items in order, nothing extra installed."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from wga.executors import WorkerSpec

PREPARED_AHEAD = 2  # batches prepared (decoded, resized) while the worker runs the current one


class LocalExecutor:
    """Builds each :class:`WorkerSpec` once per call (or takes the one the spec holds) and feeds
    it every item in order.

    In-process work is the reference the Ray executor must reproduce, so it does nothing clever
    with the work itself: no reordering, one worker (the backend already uses every core for one
    batch). The one overlap: :meth:`map_batches` prepares the next batches' rows in a thread
    while the worker runs (decoding is Pillow's, which releases the GIL).
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
        batches = [rows[start : start + size] for start in range(0, len(rows), size)]
        with ThreadPoolExecutor(1, thread_name_prefix="wga-prepare") as pool:
            pending: deque[Future[list[dict[str, Any]]]] = deque()
            try:
                for index in range(len(batches)):
                    while len(pending) <= PREPARED_AHEAD and index + len(pending) < len(batches):
                        batch = batches[index + len(pending)]
                        pending.append(pool.submit(lambda b: [prepare(row) for row in b], batch))
                    yield worker(_columns(pending.popleft().result()))
            finally:
                for future in pending:
                    future.cancel()

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
