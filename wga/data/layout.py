"""A dataset folder's layout, named once (``wga dataset`` writes it, fine-tuning reads it)::

    DS/train/<class>/<file>.jpg     DS/val/<class>/…     DS/test/<class>/… (optional)
    DS/classes.json   JSON list of class names in label order (= the folder names)
    DS/counts.json    {split: {class: n}}
    DS/manifest.csv   one row per file (also the name of a download's manifest)

A plain ``train/<class>/``, ``val/<class>/`` tree without ``classes.json`` (Keras'
``image_dataset_from_directory`` convention) reads too: classes are the sorted folder names.
"""

from __future__ import annotations

SPLITS: tuple[str, ...] = ("train", "val", "test")
CLASSES_FILE = "classes.json"
COUNTS_FILE = "counts.json"
MANIFEST_FILE = "manifest.csv"
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
