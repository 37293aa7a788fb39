"""Helpers for tests that start ``python -m wga serve`` as a user would: in a folder of its own."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER_VARIABLES = ("WGA_RUNS_DIR", "WGA_PROBES_DIR", "WGA_ATLASES_DIR", "WGA_CACHE_DIR",
                    "WGA_VECTORS_DIR")  # fmt: skip


def serve_environment(**extra: str) -> dict[str, str]:
    """This environment without the ``WGA_*_DIR`` folders (the server finds its data under the
    folder it is started in, as for a user), the checkout importable, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in FOLDER_VARIABLES}
    paths = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(extra)
    return env
