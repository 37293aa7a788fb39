"""The job journal: every accepted render job on disk before the client hears 202.

A server killed at any moment (SIGKILL, the OOM killer, a power cut) forgets nothing it accepted:
on start the next server reads the journal and queues those jobs again, with their priorities
and clients, as task queues with late acknowledgement do (Celery's ``acks_late``, RQ).

**Format.** ``<cache>/journal/jobs-<time_ns>-<pid>.jsonl``: one JSON object per line, appended —

* ``{"op": "add", "id", "recipe", "fingerprint", "priority", "client", "holders", "created",
  "seq"}``: a job was accepted;
* ``{"op": "hold", "id", "client", "priority"}``: another client wants it too (or more urgently);
* ``{"op": "release", "id", "client"}``: a client gave it up while others still want it;
* ``{"op": "end", "id", "status", "error"}``: done, failed or cancelled.

Each append is one ``write`` to a file opened with ``O_APPEND``: a kill in the middle of it
leaves at most a torn last line, which reading skips (it is not valid JSON). The data reaches
the kernel before the call returns (a process crash loses nothing); it reaches the disk within
:data:`DEFAULT_SYNC_INTERVAL_S` by a background ``fdatasync`` (a power cut loses at most that
much, as Redis's ``appendfsync everysec``), or at once with ``sync_interval_s=0``.

**Ownership.** A server holds an exclusive ``flock`` on its own file for its lifetime; the
operating system releases it when the process dies, however it dies. On start a server adopts
every file it can lock (their owners are gone): it folds them in order of creation into the jobs
still live, writes those into a new file of its own (written under a temporary name, locked,
then renamed: it appears whole and already locked) and deletes the adopted files. Two servers on
one cache folder each keep their own file and never adopt each other's.

**Checkpoints.** A running job's exact engine state may be saved beside the journal
(``checkpoints/<id>.npz``, written atomically) so that it resumes where it was; it is deleted
when the job ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wga.atomic import TEMP_MARK, atomic_path

log = logging.getLogger(__name__)

JOURNAL_FOLDER = "journal"  # beside the cache's renders/
CHECKPOINT_FOLDER = "checkpoints"
FILE_PREFIX = "jobs-"
FILE_SUFFIX = ".jsonl"
DEFAULT_SYNC_INTERVAL_S = 1.0
COMPACT_LINES = 20_000  # rewrite the file past this many lines when most are ended jobs
ENDED = ("done", "failed", "cancelled")


@dataclass
class Entry:
    """One accepted job as the journal knows it."""

    id: str
    recipe: dict[str, Any]
    fingerprint: str
    priority: int
    client: str
    holders: list[str]
    created: float
    seq: int
    status: str = "queued"  # queued (still wanted) or one of ENDED
    error: str | None = None

    @property
    def live(self) -> bool:
        return self.status not in ENDED

    def record(self) -> dict[str, Any]:
        fields = asdict(self)
        del fields["status"], fields["error"]
        return {"op": "add", **fields}


@dataclass
class Replayed:
    """What the journals of dead servers said: the live jobs in the order they were accepted,
    and the failed or cancelled ones (whose state a restarted server must still answer)."""

    live: list[Entry] = field(default_factory=list)
    ended: list[Entry] = field(default_factory=list)
    adopted_files: int = 0
    torn_lines: int = 0


def fold(lines: Iterable[bytes], jobs: dict[str, Entry]) -> int:
    """Apply journal lines to ``jobs`` (id → entry); the number of unreadable (torn) lines."""
    torn = 0
    for line in lines:
        try:
            event = json.loads(line)
            render = event["id"]
            op = event["op"]
        except (ValueError, KeyError, TypeError):
            torn += 1
            continue
        if op == "add":
            fields = {key: event[key] for key in Entry.__dataclass_fields__ if key in event}
            try:
                jobs[render] = Entry(**fields)
            except TypeError:
                torn += 1
            continue
        entry = jobs.get(render)
        if entry is None:
            continue
        if op == "hold":
            if event.get("client") not in entry.holders:
                entry.holders.append(event.get("client"))
            entry.priority = max(entry.priority, int(event.get("priority", entry.priority)))
        elif op == "release":
            with contextlib.suppress(ValueError):
                entry.holders.remove(event.get("client"))
        elif op == "end":
            entry.status = str(event.get("status", "done"))
            entry.error = event.get("error")
    return torn


def _lines(data: bytes) -> list[bytes]:
    """Complete lines only: a last line without its newline was torn by a kill."""
    parts = data.split(b"\n")
    return [part for part in parts[:-1] if part.strip()]


def _temp_owner_dead(path: Path) -> bool:
    """A temporary file (``….part-<pid>-…``) whose writer is no longer running."""
    try:
        pid = int(path.name.split(TEMP_MARK, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Journal:
    """This server's journal file (see the module docstring). Thread-safe; cheap to append."""

    def __init__(self, folder: str | os.PathLike[str], sync_interval_s: float) -> None:
        self.folder = Path(folder)
        self.checkpoints = self.folder / CHECKPOINT_FOLDER
        self.sync_interval_s = sync_interval_s
        self.path: Path | None = None
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._live: dict[str, Entry] = {}
        self._lines = 0
        self._dirty = False
        self._closed = threading.Event()
        self._syncer: threading.Thread | None = None

    # -- opening: adopt what dead servers left ---------------------------------------------------
    @classmethod
    def open(
        cls, folder: str | os.PathLike[str], sync_interval_s: float = DEFAULT_SYNC_INTERVAL_S
    ) -> tuple[Journal, Replayed]:
        """This server's journal, started with the live jobs of every journal no live server
        holds; those jobs (and the ended ones) to queue again."""
        journal = cls(folder, sync_interval_s)
        journal.folder.mkdir(parents=True, exist_ok=True)
        journal.checkpoints.mkdir(exist_ok=True)
        journal._remove_stale_temporaries()
        jobs: dict[str, Entry] = {}
        replayed = Replayed()
        adopted: list[tuple[Path, int]] = []
        for path in sorted(journal.folder.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}")):
            fd = _lock_if_orphaned(path)
            if fd is None:
                continue  # another server is alive and owns it
            adopted.append((path, fd))
            with os.fdopen(os.dup(fd), "rb") as handle:
                replayed.torn_lines += fold(_lines(handle.read()), jobs)
        ordered = sorted(jobs.values(), key=lambda entry: entry.seq)
        replayed.live = [entry for entry in ordered if entry.live]
        replayed.ended = [entry for entry in ordered if entry.status in ("failed", "cancelled")]
        replayed.adopted_files = len(adopted)
        journal._live = {entry.id: entry for entry in replayed.live}
        journal._start_file()
        for path, fd in adopted:  # their jobs are in our file now
            path.unlink(missing_ok=True)
            os.close(fd)
        if journal.sync_interval_s > 0:
            journal._syncer = threading.Thread(
                target=journal._sync_loop, name="wga-journal-sync", daemon=True
            )
            journal._syncer.start()
        return journal, replayed

    def _remove_stale_temporaries(self) -> None:
        for folder in (self.folder, self.checkpoints):
            for path in folder.iterdir():
                if TEMP_MARK in path.name and _temp_owner_dead(path):
                    path.unlink(missing_ok=True)

    def _start_file(self) -> None:
        """A new file with the live jobs: written under a temporary name, locked, then renamed
        (it appears whole and already ours); the old one, if any, is deleted after."""
        name = f"{FILE_PREFIX}{time.time_ns()}-{os.getpid()}{FILE_SUFFIX}"
        final = self.folder / name
        temp = self.folder / f".{name}{TEMP_MARK}{os.getpid()}-{threading.get_ident()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            live = sorted(self._live.values(), key=lambda entry: entry.seq)
            _write_all(fd, _encode(entry.record() for entry in live))
            os.fsync(fd)
            os.replace(temp, final)
            _sync_folder(self.folder)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        old_fd, old_path = self._fd, self.path
        self._fd, self.path, self._lines = fd, final, len(live)
        if old_path is not None:
            old_path.unlink(missing_ok=True)
        if old_fd is not None:
            os.close(old_fd)

    # -- appending ----------------------------------------------------------------------------
    def add(self, entries: Sequence[Entry]) -> None:
        """Accepted jobs (raises OSError when they cannot be written: refuse the request)."""
        if not entries:
            return
        with self._lock:
            self._append(entry.record() for entry in entries)
            for entry in entries:
                self._live[entry.id] = entry

    def hold(self, render: str, client: str, priority: int) -> None:
        """Another client wants a live job, or wants it more urgently."""
        with self._lock:
            entry = self._live.get(render)
            if entry is None:
                return
            if client not in entry.holders:
                entry.holders.append(client)
            entry.priority = max(entry.priority, priority)
            self._append([{"op": "hold", "id": render, "client": client, "priority": priority}])

    def release(self, render: str, client: str) -> None:
        with self._lock:
            entry = self._live.get(render)
            if entry is None or client not in entry.holders:
                return
            entry.holders.remove(client)
            self._append([{"op": "release", "id": render, "client": client}])

    def end(self, render: str, status: str, error: str | None = None) -> None:
        """The job is done, failed or cancelled: never queued again."""
        with self._lock:
            if self._live.pop(render, None) is not None:
                self._append([{"op": "end", "id": render, "status": status, "error": error}])
                if self._lines > COMPACT_LINES and self._lines > 4 * len(self._live):
                    self._start_file()
        self.drop_checkpoint(render)

    def _append(self, records: Iterable[dict[str, Any]]) -> None:
        if self._fd is None:
            raise OSError("the job journal is closed")
        data = _encode(records)
        _write_all(self._fd, data)
        self._lines += data.count(b"\n")
        if self.sync_interval_s <= 0:
            os.fdatasync(self._fd)
        else:
            self._dirty = True

    def _sync_loop(self) -> None:
        while not self._closed.wait(self.sync_interval_s):
            self.sync()

    def sync(self) -> None:
        """Push appended lines to the disk now (the syncer does it every interval)."""
        with self._lock:
            if not self._dirty or self._fd is None:
                return
            self._dirty = False
            fd = os.dup(self._fd)
        try:
            os.fdatasync(fd)
        except OSError as error:  # the next append reports a real problem; keep syncing
            log.warning("could not sync the job journal: %s", error)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Sync and let go of the file (it stays: a later server adopts its live jobs)."""
        self._closed.set()
        self.sync()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    @property
    def live_ids(self) -> set[str]:
        with self._lock:
            return set(self._live)

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_path(self, render: str) -> Path:
        return self.checkpoints / f"{render}.npz"

    def save_checkpoint(self, render: str, arrays: dict[str, Any]) -> None:
        import numpy as np

        with atomic_path(self.checkpoint_path(render)) as temp, open(temp, "wb") as handle:
            np.savez(handle, **arrays)

    def load_checkpoint(self, render: str) -> dict[str, Any] | None:
        import numpy as np

        path = self.checkpoint_path(render)
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return {key: arrays[key] for key in arrays.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("checkpoint of %s is unreadable (%s): it starts again", render, error)
            path.unlink(missing_ok=True)
            return None

    def drop_checkpoint(self, render: str) -> None:
        self.checkpoint_path(render).unlink(missing_ok=True)


def _lock_if_orphaned(path: Path) -> int | None:
    """An open, locked descriptor of ``path`` when no live process holds it, else None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:  # adopted and replaced meanwhile
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


def _encode(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(
        json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"
        for record in records
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
