"""Where wga keeps its data: one place decides, everything else asks here.

Project data lives under the folder a command is started in (a researcher's ``~/thesis``), each
kind in its own folder, which a flag or an environment variable can move elsewhere:

========  ===================  ==============================================================
kind      variable             default (relative to the start folder)
========  ===================  ==============================================================
runs      ``WGA_RUNS_DIR``     ``runs/``: fine-tuned models, offered by name
probes    ``WGA_PROBES_DIR``   ``probes/``: corpus indexes (``wga probe``)
atlases   ``WGA_ATLASES_DIR``  ``atlases/``: activation atlases (``wga atlas``)
vectors   ``WGA_VECTORS_DIR``  ``vectors/``: direction vectors by hash (recipes name them; they
                               cannot be recomputed, so they are data, not cache)
cache     ``WGA_CACHE_DIR``    ``cache/``: the render cache (``renders/``), the probes' crops
                               (``probes/``) and the job journal; served at ``/public/``
========  ===================  ==============================================================

What belongs to no project goes to the user's cache folder (:func:`user_cache_dir`,
``platformdirs``: ``~/.cache/wga``, or under ``$XDG_CACHE_HOME``): numba's compiled functions
(UMAP's, for atlas layouts). Nothing is ever written
inside the installed package, which carries only read-only resources: the explorer page and
the backend notebook.

``wga serve`` resolves every folder to an absolute path before its kernel starts
(:meth:`Places.environment`), so the kernel finds the same folders whatever its working
directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

import platformdirs

APP_NAME = "wga"
RUNS_ENV = "WGA_RUNS_DIR"
PROBES_ENV = "WGA_PROBES_DIR"
ATLASES_ENV = "WGA_ATLASES_DIR"
CACHE_ENV = "WGA_CACHE_DIR"
VECTORS_ENV = "WGA_VECTORS_DIR"
NUMBA_CACHE_ENV = "NUMBA_CACHE_DIR"
RENDERS_FOLDER = "renders"  # under the cache folder; served at /public/renders/
PROBE_IMAGES_FOLDER = "probes"  # under the cache folder; served at /public/probes/
LOOKS_FOLDER = "looks"  # under the cache folder: uploaded images; served at /public/looks/
# The cache's subfolders the server publishes under /public/ (beside the page's own files).
PUBLIC_CACHE_FOLDERS = (RENDERS_FOLDER, PROBE_IMAGES_FOLDER, LOOKS_FOLDER)


PathLike = str | os.PathLike[str]


def _folder(variable: str, default: str, given: PathLike | None, base: PathLike | None) -> Path:
    """``given`` (a flag), else ``$variable``, else ``default``; ``~`` expanded; a relative one
    is taken from ``base`` (default: the current directory), so the result is absolute."""
    chosen = given if given not in (None, "") else os.environ.get(variable) or default
    path = Path(chosen).expanduser()
    return path if path.is_absolute() else Path(base or Path.cwd()).absolute() / path


def runs_dir(given: PathLike | None = None, base: PathLike | None = None) -> Path:
    """Fine-tuned runs: ``given``, ``$WGA_RUNS_DIR`` or ``./runs``."""
    return _folder(RUNS_ENV, "runs", given, base)


def probes_dir(given: PathLike | None = None, base: PathLike | None = None) -> Path:
    """Corpus indexes: ``given``, ``$WGA_PROBES_DIR`` or ``./probes``."""
    return _folder(PROBES_ENV, "probes", given, base)


def atlases_dir(given: PathLike | None = None, base: PathLike | None = None) -> Path:
    """Activation atlases: ``given``, ``$WGA_ATLASES_DIR`` or ``./atlases``."""
    return _folder(ATLASES_ENV, "atlases", given, base)


def cache_dir(given: PathLike | None = None, base: PathLike | None = None) -> Path:
    """The server's cache (renders, probe crops, job journal): ``given``, ``$WGA_CACHE_DIR`` or
    ``./cache``."""
    return _folder(CACHE_ENV, "cache", given, base)


def renders_dir(cache: PathLike | None = None, base: PathLike | None = None) -> Path:
    """The render cache: ``renders/`` in :func:`cache_dir`."""
    return cache_dir(cache, base) / RENDERS_FOLDER


def vectors_dir(given: PathLike | None = None, base: PathLike | None = None) -> Path:
    """Direction vectors: ``given``, ``$WGA_VECTORS_DIR`` or ``./vectors``."""
    return _folder(VECTORS_ENV, "vectors", given, base)


def user_cache_dir() -> Path:
    """The user's own cache folder for wga (``~/.cache/wga`` on Linux, or under
    ``$XDG_CACHE_HOME``): for what no project owns."""
    return platformdirs.user_cache_path(APP_NAME)


def keep_compiled_code_out_of_packages() -> None:
    """numba (under UMAP) caches the functions it compiles beside their source, inside
    site-packages, unless told otherwise: send them to the user's cache instead (an explicit
    ``NUMBA_CACHE_DIR`` wins). Call it before numba is first imported."""
    os.environ.setdefault(NUMBA_CACHE_ENV, str(user_cache_dir() / "numba"))


@dataclass(frozen=True)
class Places:
    """Every folder a server uses, absolute; made once, before the kernel starts."""

    runs: Path
    probes: Path
    atlases: Path
    cache: Path
    vectors: Path

    @classmethod
    def resolve(
        cls,
        *,
        base: PathLike | None = None,
        runs: PathLike | None = None,
        probes: PathLike | None = None,
        atlases: PathLike | None = None,
        cache: PathLike | None = None,
        vectors: PathLike | None = None,
    ) -> Places:
        """Flags first, then the environment, then the defaults; relative ones are taken from
        ``base`` (default: the current directory, the folder the command was started in)."""
        return cls(
            runs=runs_dir(runs, base),
            probes=probes_dir(probes, base),
            atlases=atlases_dir(atlases, base),
            cache=cache_dir(cache, base),
            vectors=vectors_dir(vectors, base),
        )

    @property
    def renders(self) -> Path:
        return self.cache / RENDERS_FOLDER

    def environment(self) -> dict[str, str]:
        """The variables that hand these folders to another process (the kernel)."""
        variables = {
            "runs": RUNS_ENV,
            "probes": PROBES_ENV,
            "atlases": ATLASES_ENV,
            "cache": CACHE_ENV,
            "vectors": VECTORS_ENV,
        }
        return {variables[f.name]: str(getattr(self, f.name)) for f in fields(self)}


# -- read-only resources inside the package ---------------------------------------------------
def _resource(name: str) -> Path:
    """A file or folder of ``wga.serve``'s package data, as a path on disk (wheels install
    unpacked; a zipped install cannot serve the page)."""
    found = resources.files("wga.serve") / name
    if not isinstance(found, Path):  # pragma: no cover - zip imports only
        raise RuntimeError(
            f"wga's {name} is inside a zip archive ({found}); install wga as files (pip install)"
        )
    return found


def page_dir() -> Path:
    """The explorer page (``index.html`` with its scripts and styles), served at ``/public/``."""
    return _resource("page")


def backend_notebook() -> Path:
    """The backend notebook, whose annotated cells are the REST API."""
    return _resource("backend.ipynb")
