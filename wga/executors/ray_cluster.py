"""The Ray executor: workers as Ray actors on a cluster — the only module that imports Ray.

* :meth:`RayExecutor.map_unordered` — a pool of actors (one per GPU, or per CPU slot), each
  building its worker once (a loaded model keeps its compiled steps in the engine's cache) and
  fed items through :class:`ray.util.ActorPool` as actors free up. Actors restart when they die
  and the interrupted item is retried (``max_restarts`` / ``max_task_retries``).
* :meth:`RayExecutor.map_batches` — Ray Data: the rows as a dataset, ``prepare`` (decode, resize)
  as parallel tasks, then ``map_batches`` with a callable class on an
  :class:`~ray.data.ActorPoolStrategy` (``num_gpus=1`` per actor where the cluster has GPUs), one
  row a call: a row is already one batch (a chunk of images). On a CPU-only cluster every CPU
  slot holds an actor, so decoding runs inside the actors (a separate decode stage would find no
  free CPU and stall).

Results travel back to the driver, which writes the files: nothing here needs a shared disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import ray
from ray.util import ActorPool

from wga.errors import InvalidInput, Unavailable
from wga.executors import Prepare, Row, WorkerSpec

log = logging.getLogger(__name__)

ACTOR_MAX_RESTARTS = 3  # a worker killed (OOM, preempted node) comes back this often per run
TASK_RETRIES = 3  # an item whose worker died is retried on the restarted worker
ACTOR_PREFIX = "wga-worker"
FORWARDED_ENV = ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND", "KERAS_HOME", "CUDA_VISIBLE_DEVICES")


def _worker_env() -> dict[str, str]:
    """Settings a worker must share with the driver (model folders, quiet TensorFlow)."""
    env = {key: value for key, value in os.environ.items() if key.startswith("WGA_")}
    env.update({key: os.environ[key] for key in FORWARDED_ENV if key in os.environ})
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("CUDA_VISIBLE_DEVICES", None)  # Ray assigns GPUs to actors itself
    return env


def _quiet_worker() -> None:
    from wga.quiet import quiet_keras, silence_tensorflow

    silence_tensorflow()
    with contextlib.suppress(ImportError):  # a worker without Keras: nothing to quiet
        quiet_keras()


class _Host:
    """A Ray actor that builds one worker from its spec and calls it on items."""

    def __init__(self, spec: WorkerSpec) -> None:
        _quiet_worker()
        self._worker = spec.build()

    def call(self, item: Any) -> Any:
        return self._worker(item)

    def pid(self) -> int:
        """The worker's process id (operators and the crash test find workers by it)."""
        return os.getpid()


class _BatchHost:
    """Ray Data's callable class: one worker per actor; one row in (Ray Data's batch of one,
    prepared here unless a decode stage did it), one pickled result out."""

    def __init__(self, spec: WorkerSpec, prepare: Prepare | None) -> None:
        _quiet_worker()
        self._worker = spec.build()
        self._prepare = prepare

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        row = {key: values[0] for key, values in batch.items()}
        result = self._worker(self._prepare(row) if self._prepare is not None else row)
        out = np.empty(1, dtype=object)
        out[0] = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        return {"result": out}


def _prepare_row(row: Row, prepare: Prepare) -> Row:
    return prepare(row)


LOCAL_START_ATTEMPTS = 3


def init_ray(**options: Any) -> None:
    """``ray.init(**options)``, retried when a new local node times out while starting.

    Ray gives a starting raylet a fixed 30 s to register; on a busy machine (a CI runner, a
    laptop mid-build) that can run out. Joining an existing cluster is not retried.
    """
    starts_local = options.get("address") in (None, "local")
    for attempt in range(LOCAL_START_ATTEMPTS if starts_local else 1):
        try:
            ray.init(**options)
            return
        except Exception as error:
            ray.shutdown()
            timed_out = "timed out during startup" in str(error)
            if not timed_out or attempt + 1 >= LOCAL_START_ATTEMPTS or not starts_local:
                raise
            log.info("the local Ray node was slow to start; trying again")


class RayExecutor:
    """Work on a Ray cluster; see the module docstring. Joins (or starts) the cluster at once.

    If Ray is already initialised in this process (a notebook, the test suite), that connection
    is used and left open on :meth:`close`; otherwise this executor owns it and shuts it down.
    """

    name = "ray"

    def __init__(self, address: str) -> None:
        if not address:
            raise InvalidInput("--ray needs an address: local, auto, HOST:PORT or ray://HOST:PORT")
        self.address = address
        self._owns = False
        if not ray.is_initialized():
            self._connect(address)
            self._owns = True
        # The driver shows one tqdm bar of its own; Ray Data's bars and progress log would
        # interleave with it (and with the CLI's output) every few seconds.
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)

    def _connect(self, address: str) -> None:
        options: dict[str, Any] = {
            "log_to_driver": False,  # TensorFlow's chatter stays in the workers' log files
            "runtime_env": {"env_vars": _worker_env()},
        }
        if address == "local":
            # A private cluster on this machine, gone when we are: no auth token to write.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            options["include_dashboard"] = False
            target = "local"
        elif address == "auto":
            target = os.environ.get("RAY_ADDRESS") or "auto"
        else:
            target = address
        try:
            init_ray(address=target, **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            raise Unavailable(
                f"cannot join the Ray cluster at {target!r}: {first} "
                "(start one with `ray start --head`, or use --ray local)"
            ) from None
        log.info("joined Ray at %s: %s", target, _describe(ray.cluster_resources()))

    # -- sizing ---------------------------------------------------------------------------------
    def _gpus(self) -> int:
        return int(ray.cluster_resources().get("GPU", 0))

    def _actor_resources(self, spec: WorkerSpec) -> dict[str, float]:
        if spec.gpu and self._gpus() > 0:
            return {"num_gpus": 1, "num_cpus": 1}
        return {"num_cpus": 1}

    def slots(self, spec: WorkerSpec) -> int:
        resources = ray.cluster_resources()
        if spec.gpu and resources.get("GPU", 0) >= 1:
            return int(resources["GPU"])
        return max(1, int(resources.get("CPU", 1)))

    def _pool_size(self, spec: WorkerSpec, workers: int | None) -> int:
        slots = self.slots(spec)
        if workers is None:
            return slots
        if workers < 1:
            raise InvalidInput(f"workers must be ≥ 1, got {workers}")
        return min(int(workers), slots)

    # -- actors ---------------------------------------------------------------------------------
    def map_unordered(
        self, spec: WorkerSpec, items: Iterable[Any], *, workers: int | None = None
    ) -> Iterator[Any]:
        items = list(items)
        if not items:
            return
        size = min(self._pool_size(spec, workers), len(items))
        host = ray.remote(
            max_restarts=ACTOR_MAX_RESTARTS,
            max_task_retries=TASK_RETRIES,
            max_concurrency=2,  # one item at a time (the pool's rule); pid() answers meanwhile
            **self._actor_resources(spec),
        )(_Host)
        run = uuid.uuid4().hex[:8]
        actors = [
            host.options(name=f"{ACTOR_PREFIX}-{run}-{i}", lifetime=None).remote(spec)
            for i in range(size)
        ]
        try:
            pool = ActorPool(actors)
            yield from pool.map_unordered(lambda actor, item: actor.call.remote(item), items)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)

    # -- Ray Data -------------------------------------------------------------------------------
    def map_batches(
        self, rows: Sequence[Row], prepare: Prepare, spec: WorkerSpec, *, workers: int | None = None
    ) -> Iterator[Any]:
        if not rows:
            return
        size = min(self._pool_size(spec, workers), len(rows))
        resources = self._actor_resources(spec)
        dataset = ray.data.from_items(list(rows), override_num_blocks=_blocks(len(rows)))
        fused_prepare: Prepare | None = prepare
        if "num_gpus" in resources:
            # GPUs do the model; the CPUs decode and resize ahead of them, in parallel tasks.
            dataset = dataset.map(_prepare_row, fn_kwargs={"prepare": prepare})
            fused_prepare = None
        dataset = dataset.map_batches(
            _BatchHost,
            fn_constructor_args=(spec, fused_prepare),
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),  # Ray Data restarts dead actors
            runtime_env={"env_vars": _worker_env()},
            **resources,
        )
        for row in dataset.iter_rows():
            yield pickle.loads(row["result"])

    def close(self) -> None:
        if self._owns and ray.is_initialized():
            ray.shutdown()
            self._owns = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _blocks(rows: int) -> int:
    """Enough blocks for the actors to share the work, few enough to keep overhead small."""
    return max(1, min(rows, 200))


def _describe(resources: dict[str, float]) -> str:
    return ", ".join(
        f"{key} {value:g}" for key, value in sorted(resources.items()) if "/" not in key
    )
