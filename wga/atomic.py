"""Files appear whole or not at all: write to a temporary file beside the target, then rename.

A reader (the page polling the render cache, a resumed download, a resumed training run) never
sees half a file, and a run killed at any moment leaves no corrupt one: at worst a temporary
file, whose name carries :data:`TEMP_MARK` so that cleanup can find it.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_MARK = ".part-"  # temporary files: ".<name>.part-<pid>-<thread>-<random><suffix>"


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write to; renamed onto ``target`` when the block succeeds.

    The temporary file keeps ``target``'s suffix, so writers that choose a format by suffix
    (matplotlib, Pillow, ``keras.Model.save``) work unchanged. On an error it is removed.
    """
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Unique per process, thread and call; created by the writer, so the umask applies.
    unique = f"{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}"
    temp = final.with_name(f".{final.name}{TEMP_MARK}{unique}{final.suffix}")
    try:
        yield temp
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as temp:
        temp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    with atomic_path(target) as temp:
        temp.write_text(text, encoding="utf-8")


def write_json_atomic(target: str | os.PathLike[str], value: Any) -> None:
    write_text_atomic(target, json.dumps(value, indent=2))
