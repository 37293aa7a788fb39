"""The default executor: one worker in this process, items in order, nothing extra installed."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from wga.executors import Prepare, Row, WorkerSpec

PREPARED_AHEAD = 2  # rows prepared (decoded, resized) while the worker runs the current one


class LocalExecutor:
    """Builds each :class:`WorkerSpec` once per call (or takes the one the spec holds) and feeds
    it every item in order.

    In-process work is the reference the Ray executor must reproduce, so it does nothing clever
    with the work itself: no reordering, one worker (the backend already uses every core for one
    batch). The one overlap: :meth:`map_batches` prepares the next rows in a thread while the
    worker runs (decoding is Pillow's, which releases the GIL).
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
        self, rows: Sequence[Row], prepare: Prepare, spec: WorkerSpec, *, workers: int | None = None
    ) -> Iterator[Any]:
        worker = spec.build()
        with ThreadPoolExecutor(1, thread_name_prefix="wga-prepare") as pool:
            pending: deque[Future[Row]] = deque()
            try:
                for index in range(len(rows)):
                    while len(pending) <= PREPARED_AHEAD and index + len(pending) < len(rows):
                        pending.append(pool.submit(prepare, rows[index + len(pending)]))
                    yield worker(pending.popleft().result())
            finally:
                for future in pending:
                    future.cancel()

    def close(self) -> None:
        return None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
