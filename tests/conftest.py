"""Shared fixtures: the offline model is loaded once per test session."""

from __future__ import annotations

import os

import pytest

from wga.quiet import silence_tensorflow

silence_tensorflow()
os.environ.setdefault("WGA_RUNS_DIR", os.path.join(os.path.dirname(__file__), "no-runs-here"))


@pytest.fixture(scope="session")
def registry():
    from wga.models import ModelRegistry

    return ModelRegistry(runs_dir=None)


@pytest.fixture(scope="session")
def hed(registry):
    """The real trained VGG16 (HED weights) that works offline."""
    return registry.load("vgg16-hed")


@pytest.fixture(scope="session")
def static_dir(tmp_path_factory):
    """The static folder of the shared real gateway (its renders/ is the render cache)."""
    return tmp_path_factory.mktemp("static")


@pytest.fixture(scope="session")
def gateway(static_dir, tmp_path_factory):
    """One real kernel gateway on the backend notebook, shared by the gateway-level tests
    (test_gateway.py, test_attacks.py): starting one costs ~10–60 s on a busy machine."""
    from wga.serve.gateway import Gateway, free_port

    log_path = tmp_path_factory.mktemp("logs") / "gateway.log"
    with log_path.open("wb") as log_file:
        server = Gateway(port=free_port(), static_dir=static_dir, log_file=log_file)
        server.start()
        try:
            server.wait_ready()
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def ray_cluster():
    """One small local Ray cluster for every Ray test of the session (started on first use).

    Ray is in the ``test`` extra, so a missing Ray fails here rather than skipping silently.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no auth token written under ~/.ray
    import ray

    from wga.executors.ray_cluster import init_ray

    init_ray(  # retried: Ray gives its raylet a fixed 30 s to start, a busy CI may need more
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        log_to_driver=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
