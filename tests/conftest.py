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


@pytest.fixture(scope="session", autouse=True)
def _data_outside_the_checkout(tmp_path_factory):
    """Vectors and the render cache default to ./vectors and ./cache (wga.paths): tests that
    rely on the defaults write into a session folder, never into the checkout."""
    folder = tmp_path_factory.mktemp("wga-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "WGA_VECTORS_DIR", os.environ.get("WGA_VECTORS_DIR") or str(folder / "vectors")
        )
        patch.setenv("WGA_CACHE_DIR", os.environ.get("WGA_CACHE_DIR") or str(folder / "cache"))
        yield


@pytest.fixture(scope="session")
def server_home(tmp_path_factory):
    """The folder the shared real gateway is started in; its cache/renders/ is the render cache."""
    return tmp_path_factory.mktemp("server-home")


@pytest.fixture(scope="session")
def cache_dir(server_home):
    """The shared real gateway's cache folder (renders/, probes/)."""
    return server_home / "cache"


@pytest.fixture(scope="session")
def gateway(server_home, cache_dir, tmp_path_factory):
    """One real kernel gateway on the backend notebook, shared by the gateway-level tests
    (test_gateway.py, test_attacks.py): starting one costs ~10–60 s on a busy machine."""
    from wga.paths import Places
    from wga.serve.gateway import Gateway, free_port

    log_path = tmp_path_factory.mktemp("logs") / "gateway.log"
    places = Places.resolve(base=server_home, cache=cache_dir)
    with log_path.open("wb") as log_file:
        server = Gateway(port=free_port(), places=places, workdir=server_home, log_file=log_file)
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
