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
