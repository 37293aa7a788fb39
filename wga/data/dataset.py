"""Build an image-classification dataset from a download: class folders and leak-free splits.

The layout is :mod:`wga.data.layout` (the fine-tuning code relies on it); ``manifest.csv`` has one
row per file: split, class, label, group, file, source file, catalog fields.

Classes come from one catalog column (``TYPE`` → portrait / landscape / still-life) or from a list
of filter dicts, like the 2018 notebook's ``{FORM: painting, TYPE: portrait}``.

The WGA lists details and near-duplicates of one artwork as separate rows
(``Venus and Adonis`` and ``Venus and Adonis (detail)``, pages ``adonis.html`` and
``adonis1.html``). A random split puts them on both sides and inflates validation accuracy, so
rows are first joined into groups — same page stem, or same author and title once detail markers
are stripped — and whole groups are assigned to splits.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wga.data.catalog import COLUMNS, fold
from wga.data.layout import CLASSES_FILE, COUNTS_FILE, MANIFEST_FILE, SPLITS
from wga.errors import InvalidInput, NotFound, closest_names

log = logging.getLogger(__name__)

DATASET_FIELDS: tuple[str, ...] = ("split", "class", "label", "group", "file", "source_file")

# "(detail)", "(detail 2)", "(details)", "(detail of the left wing)", "detail:" …
_DETAIL_PAREN = re.compile(r"\s*[\(\[][^\)\]]*\bdetails?\b[^\)\]]*[\)\]]", re.IGNORECASE)
_DETAIL_TAIL = re.compile(r"\s*[,;:\-–]\s*details?\b.*$", re.IGNORECASE)
_DETAIL_HEAD = re.compile(r"^\s*details?\s*(?:of|from)?\s*[:,\-–]?\s*", re.IGNORECASE)
# WGA detail pages add a number to the work's page: 1spring.html → 1spring1.html, 1spring2.html
# (also adonis_2, adonis-d3). The stem must keep a letter, so numbered works (0101, 0102) stay
# apart. This also joins 8-letter series such as portrai1 / portrai2: coarser groups, never a leak.
_STEM_NUMBER = re.compile(r"^(?P<base>.*[a-z].*?)\d+$", re.IGNORECASE)
_STEM_MARKER = re.compile(r"[_\-](?:det|detail|d)?$", re.IGNORECASE)
_UNSAFE_DIR_CHARS = re.compile(r"[^\w .,+()&'\-]+", re.UNICODE)


@dataclass(slots=True)
class DatasetItem:
    """One usable image of the download and what the dataset makes of it."""

    row: dict[str, str]
    source: Path
    cls: str = ""
    group: str = ""
    split: str = ""


@dataclass(slots=True)
class DatasetSummary:
    out_dir: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    groups: int
    unmatched: int = 0
    ambiguous: int = 0
    dropped_by_balance: int = 0
    linked: int = 0
    copied: int = 0
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        width = max(len(name) for name in self.classes)
        splits = [split for split in SPLITS if split in self.counts]
        lines = [f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in splits)]
        for name in self.classes:
            lines.append(
                f"{name:<{width}}  "
                + "  ".join(f"{self.counts[s].get(name, 0):>6}" for s in splits)
            )
        total = sum(sum(c.values()) for c in self.counts.values())
        lines.append(
            f"{total} images in {self.groups} artwork groups → {self.out_dir} "
            f"({self.linked} hard links, {self.copied} copies)"
        )
        if self.unmatched or self.ambiguous or self.dropped_by_balance:
            lines.append(
                f"left out: {self.unmatched} in no class, {self.ambiguous} in several classes, "
                f"{self.dropped_by_balance} by balancing"
            )
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return lines


# --------------------------------------------------------------------------- reading


def read_download_manifest(source: str | os.PathLike[str]) -> list[DatasetItem]:
    """The ``ok`` rows of a download folder's manifest (CSV or JSONL) whose files exist."""
    folder = Path(source)
    candidates = (
        [folder / "manifest.csv", folder / "manifest.jsonl"] if folder.is_dir() else [folder]
    )
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise NotFound(
            f"no manifest.csv in {str(folder)!r}; run `python -m wga download --out {folder}` first"
        )
    base = path.parent
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    else:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    items: list[DatasetItem] = []
    absent = 0
    for row in rows:
        if row.get("status", "ok") != "ok" or not row.get("file"):
            continue
        file = base / str(row["file"])
        if not file.is_file():
            absent += 1
            continue
        items.append(DatasetItem({k: str(v) for k, v in row.items()}, file))
    if absent:
        log.warning("%d files listed as ok in %s are not there; left out", absent, path)
    return items


# --------------------------------------------------------------------------- classes


def _column(name: str, available: Sequence[str]) -> str:
    """A column name as the manifest spells it (``type`` → ``TYPE``)."""
    for candidate in available:
        if candidate.casefold() == name.casefold():
            return candidate
    raise InvalidInput(
        f"no column {name!r} in the manifest: {closest_names(name, list(available))}"
    )


def _values(spec: str | Sequence[str]) -> set[str]:
    return {fold(spec)} if isinstance(spec, str) else {fold(v) for v in spec}


def safe_class_name(name: str) -> str:
    """A folder name for a class: the name itself unless it holds path or control characters."""
    safe = _UNSAFE_DIR_CHARS.sub("_", name.strip()).strip(" .")
    return safe or "class"


def assign_classes(
    items: Sequence[DatasetItem],
    *,
    by: str | None = None,
    classes: Sequence[str] | None = None,
    class_filters: Mapping[str, Mapping[str, str | Sequence[str]]] | None = None,
    where: Mapping[str, str | Sequence[str]] | None = None,
) -> tuple[list[DatasetItem], list[str], int, int]:
    """Give each item its class; returns (items with a class, class names, unmatched, ambiguous).

    Either ``by`` a column (classes = the listed values, or every value when ``classes`` is None)
    or ``class_filters`` = ``{class: {column: value or values}}``. ``where`` restricts all rows
    first (``{"FORM": "painting"}``). Comparisons ignore case and accents. A row that matches
    several filter dicts is left out (its label would be arbitrary).
    """
    if (by is None) == (class_filters is None):
        raise InvalidInput("give either a column to classify by (--by) or class filters, not both")
    available = list(items[0].row) if items else list(COLUMNS)
    restrict = {_column(col, available): _values(v) for col, v in (where or {}).items()}
    pool = [
        item
        for item in items
        if all(fold(item.row.get(col, "")) in vals for col, vals in restrict.items())
    ]
    if where and not pool:
        raise InvalidInput(f"no downloaded row matches {dict(where)}; check the values")

    names, tests = _class_tests(pool, available, by, classes, class_filters)
    if len(set(map(fold, names))) != len(names):
        raise InvalidInput(f"class names repeat: {names}")
    chosen, unmatched, ambiguous = _classify(pool, tests)
    return chosen, names, unmatched, ambiguous


ClassTest = tuple[str, dict[str, set[str]]]  # a class and the folded values its columns need


def _class_tests(
    pool: Sequence[DatasetItem],
    available: list[str],
    by: str | None,
    classes: Sequence[str] | None,
    class_filters: Mapping[str, Mapping[str, str | Sequence[str]]] | None,
) -> tuple[list[str], list[ClassTest]]:
    """The class names and, for each, the column values a row needs to belong to it."""
    if class_filters is not None:
        tests = [
            (name, {_column(col, available): _values(v) for col, v in spec.items()})
            for name, spec in class_filters.items()
        ]
        return list(class_filters), tests
    column = _column(str(by), available)
    present = Counter(item.row.get(column, "") for item in pool)
    if classes:
        names = list(classes)
        known = {fold(value) for value in present}
        for name in names:
            if fold(name) not in known:
                raise InvalidInput(
                    f"no downloaded row has {column} = {name!r}: "
                    + closest_names(name, sorted(v for v in present if v))
                )
    else:  # every value, spelt as most rows spell it ("still-life" over "Still-life")
        spelling: dict[str, str] = {}
        for value, _ in present.most_common():
            if value:
                spelling.setdefault(fold(value), value)
        names = sorted(spelling.values())
    return names, [(name, {column: {fold(name)}}) for name in names]


def _classify(
    pool: Sequence[DatasetItem], tests: list[ClassTest]
) -> tuple[list[DatasetItem], int, int]:
    """Items that match exactly one class (their ``cls`` set), unmatched and ambiguous counts."""
    chosen: list[DatasetItem] = []
    unmatched = ambiguous = 0
    for item in pool:
        hits = [
            name
            for name, spec in tests
            if all(fold(item.row.get(col, "")) in vals for col, vals in spec.items())
        ]
        if not hits:
            unmatched += 1
        elif len(hits) > 1:
            ambiguous += 1
        else:
            item.cls = hits[0]
            chosen.append(item)
    return chosen, unmatched, ambiguous


# --------------------------------------------------------------------------- groups


def page_stem(key_or_url: str) -> str:
    """``a/aachen/adonis1`` → ``a/aachen/adonis``: the page a detail page belongs to."""
    path = key_or_url.split("://", 1)[-1]
    path = re.sub(r"\.(html?|jpe?g)$", "", path, flags=re.IGNORECASE)
    folder, _, stem = path.rpartition("/")
    match = _STEM_NUMBER.match(stem)
    if match:
        stem = _STEM_MARKER.sub("", match.group("base")) or match.group("base")
    return f"{folder}/{stem.casefold()}" if folder else stem.casefold()


def title_key(author: str, title: str) -> str:
    """Author + title with detail markers, case, accents and punctuation removed."""
    text = _DETAIL_PAREN.sub("", title)
    text = _DETAIL_TAIL.sub("", text)
    text = _DETAIL_HEAD.sub("", text)
    words = re.findall(r"\w+", fold(text))
    return fold(author) + "|" + " ".join(words)


def assign_groups(items: Sequence[DatasetItem]) -> int:
    """Join items that share a page stem or an author+title into groups; returns their number.

    Union–find over both keys, so chains (a detail titled differently but on a numbered page of
    the same stem) end up together too. A group's id is its smallest page stem: deterministic.
    """
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_by_key: dict[str, int] = {}
    stems: list[str] = []
    for index, item in enumerate(items):
        key = item.row.get("key") or item.row.get("URL") or item.source.stem
        stem = page_stem(key)
        stems.append(stem)
        keys = ["page:" + stem]
        if item.row.get("TITLE", "").strip():
            keys.append("title:" + title_key(item.row.get("AUTHOR", ""), item.row["TITLE"]))
        for k in keys:
            other = first_by_key.setdefault(k, index)
            a, b = find(index), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    names: dict[int, str] = {}
    for index, stem in enumerate(stems):
        root = find(index)
        names[root] = min(names.get(root, stem), stem)
    for index, item in enumerate(items):
        item.group = names[find(index)]
    return len(names)


# --------------------------------------------------------------------------- balance and split


def balance(
    items: list[DatasetItem], names: Sequence[str], rng: random.Random
) -> list[DatasetItem]:
    """Cut every class to the size of the smallest, keeping as many distinct artworks as possible:
    first one image per group (in random order), then second images, and so on."""
    by_class: dict[str, list[DatasetItem]] = defaultdict(list)
    for item in items:
        by_class[item.cls].append(item)
    present = [name for name in names if by_class.get(name)]
    if not present:
        return []
    smallest = min(len(by_class[name]) for name in present)
    kept: list[DatasetItem] = []
    for name in present:
        members = sorted(by_class[name], key=lambda it: (it.group, str(it.source)))
        rng.shuffle(members)
        rank: Counter[str] = Counter()
        ordered = []
        for item in members:
            ordered.append((rank[item.group], item))
            rank[item.group] += 1
        ordered.sort(key=lambda pair: pair[0])  # stable: random order within a rank
        kept.extend(item for _, item in ordered[:smallest])
    return kept


def split_groups(
    items: Sequence[DatasetItem],
    names: Sequence[str],
    fractions: Mapping[str, float],
    rng: random.Random,
) -> None:
    """Assign whole groups to splits so every class gets close to its share in each split.

    Groups go in random order, largest first; each goes to the split whose per-class targets
    are furthest from being met for the classes in that group.
    """
    groups: dict[str, list[DatasetItem]] = defaultdict(list)
    for item in items:
        groups[item.group].append(item)
    totals = Counter(item.cls for item in items)
    target = {s: {c: fractions[s] * totals[c] for c in names} for s in fractions}
    have: dict[str, Counter[str]] = {s: Counter() for s in fractions}
    order = sorted(groups)
    rng.shuffle(order)
    order.sort(key=lambda g: -len(groups[g]))  # stable sort keeps the shuffle among equals
    for group in order:
        counts = Counter(item.cls for item in groups[group])

        def need(split: str, counts: Counter[str] = counts) -> float:
            return sum(
                n * (target[split][c] - have[split][c]) / max(totals[c], 1)
                for c, n in counts.items()
            )

        best = max(fractions, key=lambda s: (need(s), fractions[s]))
        have[best].update(counts)
        for item in groups[group]:
            item.split = best


# --------------------------------------------------------------------------- building


def _place(source: Path, target: Path, link: bool) -> bool:
    """Hard-link (same file system, no extra space) or copy; True if it was linked."""
    if link:
        try:
            os.link(source, target)
            return True
        except OSError:
            pass  # another file system, or links not allowed: copy instead
    shutil.copy2(source, target)
    return False


def _split_fractions(val: float, test: float) -> dict[str, float]:
    """``{split: share}``; test only when asked for."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise InvalidInput(
            f"--val {val} and --test {test} must be fractions adding up to less than 1"
        )
    fractions = {"train": 1.0 - val - test, "val": val}
    if test > 0:
        fractions["test"] = test
    return fractions


def _write_dataset(
    out_dir: Path,
    chosen: Sequence[DatasetItem],
    names: list[str],
    folders: list[str],
    columns: list[str],
    link: bool,
    summary: DatasetSummary,
) -> None:
    """Write the folder (files, manifest, classes, counts) into a temporary sibling, then rename
    it onto ``out_dir``: ``out_dir`` is either the complete new dataset or untouched."""
    counts = summary.counts
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for split in counts:
            for folder in folders:
                (staging / split / folder).mkdir(parents=True)
        # Keep the artwork's identity and catalog fields, not the download's bookkeeping.
        skip = {*DATASET_FIELDS, "status", "error", "source", "bytes"}
        extra = [k for k in columns if k not in skip]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=[*DATASET_FIELDS, *extra], lineterminator="\n")
        writer.writeheader()
        for item in sorted(chosen, key=lambda it: (it.split, names.index(it.cls), it.source.name)):
            label = names.index(item.cls)
            relative = f"{item.split}/{folders[label]}/{item.source.name}"
            if _place(item.source, staging / relative, link):
                summary.linked += 1
            else:
                summary.copied += 1
            counts[item.split][folders[label]] += 1
            row = {k: v for k, v in item.row.items() if k in extra}
            row.update(split=item.split, label=str(label), group=item.group, file=relative)
            row.update({"source_file": str(item.source), "class": folders[label]})
            writer.writerow(row)
        (staging / MANIFEST_FILE).write_text(text.getvalue(), encoding="utf-8")
        for name, value in ((CLASSES_FILE, folders), (COUNTS_FILE, counts)):
            (staging / name).write_text(
                json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def build_dataset(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    by: str | None = None,
    classes: Sequence[str] | None = None,
    class_filters: Mapping[str, Mapping[str, str | Sequence[str]]] | None = None,
    where: Mapping[str, str | Sequence[str]] | None = None,
    val: float = 0.1,
    test: float = 0.1,
    balance_classes: bool = False,
    seed: int = 0,
    link: bool = True,
    force: bool = False,
) -> DatasetSummary:
    """Build ``out`` from the download in ``source`` (see the module docstring for the layout).

    The dataset is written into a temporary sibling folder and renamed at the end, so ``out`` is
    either the complete new dataset or untouched. ``force`` replaces an existing ``out``.
    """
    fractions = _split_fractions(val, test)
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise InvalidInput(
            f"{str(out_dir)!r} exists and is not empty; choose another --out or add --force"
        )
    items = read_download_manifest(source)
    if not items:
        raise NotFound(f"the download in {str(source)!r} has no images yet; run the download first")
    chosen, names, unmatched, ambiguous = assign_classes(
        items, by=by, classes=classes, class_filters=class_filters, where=where
    )
    folders = [safe_class_name(name) for name in names]
    if len(set(folders)) != len(folders):
        raise InvalidInput(f"class names {names} give the same folder names {folders}; rename them")
    rng = random.Random(seed)
    assign_groups(chosen)
    before = len(chosen)
    if balance_classes:
        chosen = balance(chosen, names, rng)
    split_groups(chosen, names, fractions, rng)

    summary = DatasetSummary(
        out_dir=str(out_dir),
        classes=folders,
        counts={split: dict.fromkeys(folders, 0) for split in fractions},
        groups=len({item.group for item in chosen}),
        unmatched=unmatched,
        ambiguous=ambiguous,
        dropped_by_balance=before - len(chosen),
    )
    for name, folder in zip(names, folders, strict=True):
        if folder != name:
            summary.warnings.append(f"class {name!r} is stored in folder {folder!r}")
    _write_dataset(out_dir, chosen, names, folders, list(items[0].row), link, summary)
    for split, per_class in summary.counts.items():
        for folder, n in per_class.items():
            if n == 0 and fractions[split] > 0:
                summary.warnings.append(f"{split} has no {folder!r} images (too few artworks)")
    return summary
