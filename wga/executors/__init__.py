"""Where batch work runs: in this process (the default) or on a Ray cluster (``--ray ADDRESS``).

The probe, the atlas's icons and bulk renders describe their work the same way whatever runs it:
a :class:`WorkerSpec` (a picklable class and its arguments; each worker builds it once — a loaded
model, its compiled steps — and then calls it on many items) and the items to feed it. An
:class:`Executor` decides where the workers live:

* :class:`~wga.executors.local.LocalExecutor` — one worker in this process, items in order.
  Needs nothing beyond wga itself.
* :class:`~wga.executors.ray_cluster.RayExecutor` — one actor per GPU (or per CPU slot) on a Ray
  cluster, items handed out as workers free up (Ray Data for corpus-sized streams). Ray is the
  optional extra ``wga[ray]`` and is imported only in that module, so a one-machine install never
  needs it.

Results come back to the driver, which writes every file itself (through :mod:`wga.atomic`):
workers need no shared disk, and a run on Ray leaves exactly the files a local run leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from wga.errors import Unavailable

Row = dict[str, Any]
Prepare = Callable[[Row], Row]  # a row of a dataset pass → the worker's input (see map_batches)

RAY_EXTRA_MESSAGE = (
    "--ray needs Ray, which is an optional extra: pip install 'wga[ray]' "
    "(on the driver and on every worker machine)"
)


@dataclass(frozen=True)
class WorkerSpec:
    """How to build one worker: ``factory(*args, **kwargs)`` returns a callable ``item → result``.

    Picklable (a module-level class or function and plain arguments), so a Ray actor can build
    it far away. ``gpu``: the worker wants a whole GPU where the cluster has some (a renderer, a model pass);
    ``False`` for CPU-only work. ``here``: the worker already built in this process when the
    caller holds one (around the driver's loaded model and compiled steps), which
    :meth:`build` returns instead of building a second; never pickled, so a remote worker
    always builds its own from ``factory``.
    """

    factory: Callable[..., Callable[[Any], Any]]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    gpu: bool = True
    here: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)

    def build(self) -> Callable[[Any], Any]:
        if self.here is not None:
            return self.here
        return self.factory(*self.args, **self.kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "here": None}


class Executor(Protocol):
    """Runs workers built from a :class:`WorkerSpec` over items; see the module docstring."""

    name: str

    def slots(self, spec: WorkerSpec) -> int:
        """How many workers of ``spec`` can run at once (GPUs, else CPU slots; 1 locally)."""
        ...

    def map_unordered(
        self, spec: WorkerSpec, items: Iterable[Any], *, workers: int | None = None
    ) -> Iterator[Any]:
        """``worker(item)`` for every item, results as they complete (any order).

        A worker that dies mid-item is restarted (its model loaded again) and the item retried.
        """
        ...

    def map_batches(
        self, rows: Sequence[Row], prepare: Prepare, spec: WorkerSpec, *, workers: int | None = None
    ) -> Iterator[Any]:
        """A dataset pass: each row is one batch (e.g. a chunk of image ids); ``prepare(row)``
        makes it the worker's input (decode, resize: on CPUs, ahead of the workers, in parallel
        where it can) and ``worker(prepared)`` its result; yields the results (any order)."""
        ...

    def close(self) -> None: ...


def open_executor(address: str | None) -> Executor:
    """The executor for ``--ray ADDRESS``: ``None`` → in-process; ``local`` → a new Ray cluster
    on this machine; ``auto`` → the cluster in ``RAY_ADDRESS`` (or the one ``ray start`` began
    here); anything else → that cluster's address (``HOST:6379`` or ``ray://HOST:10001``).

    Raises :class:`Unavailable` (one line, naming the extra) when Ray is not installed.
    """
    if address is None:
        from wga.executors.local import LocalExecutor

        return LocalExecutor()
    try:
        from wga.executors.ray_cluster import RayExecutor
    except ImportError as error:
        if (error.name or "").split(".")[0] != "ray":
            raise
        raise Unavailable(RAY_EXTRA_MESSAGE) from None
    return RayExecutor(address)


__all__ = [
    "RAY_EXTRA_MESSAGE",
    "Executor",
    "Prepare",
    "Row",
    "WorkerSpec",
    "open_executor",
]
