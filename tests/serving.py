"""Helpers for tests that start ``python -m wga serve`` as a user would: in a folder of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import time
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


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def kill_tree(root: int, timeout: float = 30) -> None:
    """SIGKILL ``root`` and every process under it at once (launcher, gateway, kernel), as the
    OOM killer or a power cut would; wait until they are gone (``root`` is the caller's child:
    the caller reaps it)."""
    tree = descendants(root)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in tree[1:]):
        if time.monotonic() > deadline:
            raise AssertionError("a process of the server survived SIGKILL")
        time.sleep(0.1)
