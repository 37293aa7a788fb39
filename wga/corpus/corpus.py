"""A corpus: the images a probe (or an atlas) runs a model over, with stable ids and catalog fields.

Three kinds of folder are a corpus, recognised in this order:

* a ``wga download`` folder — ``manifest.csv`` with a ``status`` column; the ``ok`` rows whose
  file exists are the images, with the catalog's author, title, date and WGA page;
* a ``wga dataset`` folder — ``manifest.csv`` and ``classes.json``; every row is an image (all
  splits), catalog fields carried over from the download;
* any other folder — every image file below it (recursively), without catalog fields.

**Ids.** Images are sorted by their path relative to the corpus root (POSIX separators), and an
image's id is its position in that order. Ids are therefore stable for an unchanged corpus, equal
on every machine (a Ray worker and the driver agree without exchanging file lists), and a probe
index stores the list it used, so ids stay meaningful if the folder changes later.

Nothing here decodes images: :mod:`wga.corpus.feed` does that (and lists the corrupt ones).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wga.data.layout import CLASSES_FILE, MANIFEST_FILE  # a download and a dataset write these
from wga.errors import InvalidInput, NotFound

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})

# Catalog column (wga.data.catalog.COLUMNS) → the field name used in the index, API and page.
CATALOG_FIELDS: dict[str, str] = {
    "AUTHOR": "author",
    "TITLE": "title",
    "DATE": "date",
    "URL": "page",
}


@dataclass(frozen=True)
class CorpusImage:
    """One image: its id, its file relative to the corpus root, and catalog fields (maybe empty)."""

    id: int
    file: str  # POSIX path relative to the corpus root
    meta: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Corpus:
    """The images of a corpus folder in id order (see the module docstring)."""

    root: Path
    kind: str  # "download", "dataset" or "folder"
    images: tuple[CorpusImage, ...]

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[CorpusImage]:
        return iter(self.images)

    def path(self, image_id: int) -> Path:
        """The image file of ``image_id`` on this machine."""
        return self.root / self.images[image_id].file

    def files(self) -> list[str]:
        return [image.file for image in self.images]

    def fingerprint(self) -> str:
        """A short hash of the file list: equal fingerprints mean equal ids for equal files."""
        digest = hashlib.sha256()
        for image in self.images:
            digest.update(image.file.encode("utf-8") + b"\0")
        return digest.hexdigest()[:16]


def _catalog_fields(row: dict[str, str]) -> dict[str, str]:
    return {name: (row.get(column) or "").strip() for column, name in CATALOG_FIELDS.items()}


def _manifest_rows(root: Path) -> list[dict[str, str]] | None:
    path = root / MANIFEST_FILE
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "file" not in reader.fieldnames:
            return None  # someone else's manifest.csv: treat the folder as plain images
        return [dict(row) for row in reader]


def _scan(root: Path) -> list[str]:
    files: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue  # hidden files include wga.atomic's temporaries
            files.append(Path(folder, name).relative_to(root).as_posix())
    return files


def open_corpus(root: str | os.PathLike[str]) -> Corpus:
    """The corpus in folder ``root`` (a download, a dataset, or any folder of images)."""
    folder = Path(root).expanduser().resolve()
    if not folder.is_dir():
        raise NotFound(
            f"corpus folder {str(root)!r} does not exist: give a folder made by "
            "`python -m wga download`, `python -m wga dataset`, or any folder of images"
        )
    rows = _manifest_rows(folder)
    entries: dict[str, dict[str, str]] = {}
    if rows is not None:
        kind = "dataset" if (folder / CLASSES_FILE).is_file() else "download"
        for row in rows:
            if row.get("status", "ok") != "ok" or not row.get("file"):
                continue
            file = Path(row["file"]).as_posix()
            if (folder / file).is_file():
                entries.setdefault(file, _catalog_fields(row))
    else:
        kind = "folder"
        entries = {file: {} for file in _scan(folder)}
    if not entries:
        raise InvalidInput(
            f"the corpus {str(folder)!r} has no images"
            + (" listed as ok in its manifest.csv" if rows is not None else "")
            + f": put image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in it, "
            "or download some with `python -m wga download`"
        )
    images = tuple(
        CorpusImage(index, file, entries[file]) for index, file in enumerate(sorted(entries))
    )
    return Corpus(folder, kind, images)


def describe(corpus: Corpus) -> dict[str, object]:
    """A small JSON-able description (for index metadata and logs)."""
    return {
        "root": str(corpus.root),
        "kind": corpus.kind,
        "images": len(corpus),
        "fingerprint": corpus.fingerprint(),
    }
