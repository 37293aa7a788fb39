"""Datasets from a download: class folders, leak-free grouped splits, the layout contract."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from wga_server import Art, catalog_csv, generate_artworks, synthetic_jpeg

from wga.data.catalog import decode_catalog, parse_catalog
from wga.data.dataset import build_dataset, page_stem, title_key
from wga.data.download import Outcome, write_manifest
from wga.errors import InvalidInput, NotFound

ROOT = Path(__file__).resolve().parent.parent

NEAR_DUPLICATES = [
    Art("AACHEN, Hans von", "Venus and Adonis", "a/aachen/adonis", type="landscape"),
    Art("AACHEN, Hans von", "Venus and Adonis (detail)", "a/aachen/adonis1", type="landscape"),
    Art("AACHEN, Hans von", "Venus and Adonis, detail", "a/aachen/adonis2", type="landscape"),
    # A detail on an unrelated page name: joined through author + title only.
    Art("BOSCH, Hieronymus", "The Haywain", "b/bosch/03haywa", type="landscape"),
    Art("BOSCH, Hieronymus", "The Haywain (detail)", "b/bosch/05detail", type="landscape"),
    # Same title by another author is another artwork.
    Art("COROT, Camille", "The Haywain", "c/corot/haywain", type="landscape"),
]


def make_download(folder: Path, arts: list[Art]) -> Path:
    """A download folder as `wga download` leaves it: images/ and manifest.csv."""
    records = parse_catalog(decode_catalog(catalog_csv(arts))).records
    (folder / "images").mkdir(parents=True)
    outcomes = {}
    for index, record in enumerate(records):
        data = synthetic_jpeg(index % 50, 16, 12)
        (folder / "images" / record.file_name).write_bytes(data)
        outcomes[record.key] = Outcome("ok", "", "download", "", 16, 12, len(data))
    write_manifest(folder / "manifest.csv", records, outcomes)
    return folder


@pytest.fixture(scope="module")
def download_dir(tmp_path_factory):
    arts = [*NEAR_DUPLICATES, *generate_artworks(150, seed=7, details=0.3)]
    return make_download(tmp_path_factory.mktemp("download"), arts)


def read_rows(ds: Path) -> list[dict[str, str]]:
    with open(ds / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def splits_of(rows, column):
    where = defaultdict(set)
    for row in rows:
        where[row[column]].add(row["split"])
    return where


def test_layout_matches_the_contract(download_dir, tmp_path):
    ds = tmp_path / "ds"
    summary = build_dataset(
        download_dir, ds, by="TYPE", classes=["portrait", "landscape", "still-life"]
    )
    classes = json.loads((ds / "classes.json").read_text())
    assert classes == ["portrait", "landscape", "still-life"] == summary.classes
    counts = json.loads((ds / "counts.json").read_text())
    assert set(counts) == {"train", "val", "test"}
    for split, per_class in counts.items():
        assert list(per_class) == classes
        for name, n in per_class.items():
            assert len(list((ds / split / name).glob("*.jpg"))) == n
    rows = read_rows(ds)
    assert len(rows) == sum(sum(c.values()) for c in counts.values())
    for row in rows:
        assert (ds / row["file"]).is_file()
        assert row["file"] == f"{row['split']}/{row['class']}/{Path(row['file']).name}"
        assert classes[int(row["label"])] == row["class"] == row["TYPE"]
        assert row["group"] and row["AUTHOR"] and row["TITLE"]


def test_details_and_near_duplicates_never_straddle_splits(download_dir, tmp_path):
    for seed in range(4):
        ds = tmp_path / f"ds{seed}"
        build_dataset(download_dir, ds, by="TYPE", val=0.3, test=0.3, seed=seed)
        rows = read_rows(ds)
        for column in ("group", "key"):
            assert all(len(s) == 1 for s in splits_of(rows, column).values())
        by_stem = splits_of([{**r, "stem": page_stem(r["key"])} for r in rows], "stem")
        assert all(len(s) == 1 for s in by_stem.values())
        by_title = splits_of(
            [{**r, "title": title_key(r["AUTHOR"], r["TITLE"])} for r in rows], "title"
        )
        assert all(len(s) == 1 for s in by_title.values())
        group = {r["key"]: r["group"] for r in rows}
        assert group["a/aachen/adonis"] == group["a/aachen/adonis1"] == group["a/aachen/adonis2"]
        assert group["b/bosch/03haywa"] == group["b/bosch/05detail"]
        assert group["c/corot/haywain"] != group["b/bosch/03haywa"]


def test_split_fractions_are_close_per_class(download_dir, tmp_path):
    build_dataset(download_dir, tmp_path / "ds", by="TYPE", val=0.2, test=0.2, seed=1)
    counts = json.loads((tmp_path / "ds" / "counts.json").read_text())
    for name in counts["train"]:
        total = sum(counts[s][name] for s in counts)
        for split, share in (("val", 0.2), ("test", 0.2)):
            assert abs(counts[split][name] - share * total) <= max(3, 0.1 * total), (name, split)


def test_same_seed_same_split_other_seed_other_split(download_dir, tmp_path):
    def assignment(name, seed):
        build_dataset(download_dir, tmp_path / name, by="TYPE", seed=seed)
        return {r["key"]: r["split"] for r in read_rows(tmp_path / name)}

    assert assignment("a", 3) == assignment("b", 3)
    assert assignment("a2", 3) != assignment("c", 4)


def test_balance_gives_every_class_the_size_of_the_smallest(download_dir, tmp_path):
    summary = build_dataset(download_dir, tmp_path / "ds", by="type", balance_classes=True)
    totals = {c: sum(summary.counts[s][c] for s in summary.counts) for c in summary.classes}
    assert len(set(totals.values())) == 1
    assert summary.dropped_by_balance > 0


def test_filter_dicts_like_2018_and_where_restrict_rows(download_dir, tmp_path):
    filters = {
        "portrait": {"FORM": "painting", "TYPE": "portrait"},
        "landscape": {"form": "Painting", "type": ["LANDSCAPE"]},
        "everything": {"FORM": "painting"},  # overlaps both: those rows are ambiguous
    }
    summary = build_dataset(download_dir, tmp_path / "ds", class_filters=filters, test=0)
    assert summary.classes == ["portrait", "landscape", "everything"]
    assert summary.ambiguous > 0
    assert not (tmp_path / "ds" / "test").exists()
    assert set(json.loads((tmp_path / "ds" / "counts.json").read_text())) == {"train", "val"}
    only = build_dataset(
        download_dir, tmp_path / "ds2", by="TYPE", where={"AUTHOR": ["aachen, hans von"]}
    )
    assert only.classes == ["landscape"]
    assert sum(only.counts[s]["landscape"] for s in only.counts) == 3


def test_files_are_hard_linked_or_copied(download_dir, tmp_path):
    build_dataset(download_dir, tmp_path / "linked", by="TYPE")
    build_dataset(download_dir, tmp_path / "copied", by="TYPE", link=False)
    row = read_rows(tmp_path / "linked")[0]
    source = os.stat(row["source_file"])
    assert os.stat(tmp_path / "linked" / row["file"]).st_ino == source.st_ino
    assert os.stat(tmp_path / "copied" / row["file"]).st_ino != source.st_ino


def test_existing_output_needs_force_and_is_replaced_whole(download_dir, tmp_path):
    ds = tmp_path / "ds"
    build_dataset(download_dir, ds, by="TYPE")
    with pytest.raises(InvalidInput, match="--force"):
        build_dataset(download_dir, ds, by="SCHOOL")
    build_dataset(download_dir, ds, by="SCHOOL", force=True)
    assert "Dutch" in json.loads((ds / "classes.json").read_text())
    assert not (ds / "train" / "portrait").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no staging folder left behind


def test_unknown_class_or_column_is_a_clear_error(download_dir, tmp_path):
    with pytest.raises(InvalidInput, match="did you mean portrait"):
        build_dataset(download_dir, tmp_path / "a", by="TYPE", classes=["portraits"])
    with pytest.raises(InvalidInput, match="no column 'STYLE'"):
        build_dataset(download_dir, tmp_path / "b", by="STYLE")
    with pytest.raises(NotFound, match="run `python -m wga download"):
        build_dataset(tmp_path, tmp_path / "c", by="TYPE")
    with pytest.raises(InvalidInput, match="fractions"):
        build_dataset(download_dir, tmp_path / "d", by="TYPE", val=0.6, test=0.5)


def test_only_downloaded_rows_become_dataset_files(tmp_path):
    arts = generate_artworks(12, seed=9)
    folder = make_download(tmp_path / "dl", arts)
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["status"], rows[0]["file"] = "missing", ""
    (folder / rows[1]["file"]).unlink()  # listed ok but deleted since
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = build_dataset(folder, tmp_path / "ds", by="TYPE", val=0, test=0)
    assert sum(summary.counts["train"].values()) == len(arts) - 2


@pytest.mark.timeout(60)
def test_cli_dataset_builds_the_2018_three_classes(download_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "wga", "dataset", "--source", str(download_dir)]
    options = [
        "--by", "TYPE", "--classes", "portrait,landscape,still-life", "--where", "FORM=painting",
        "--out", str(tmp_path / "ds"), "--val", "0.2", "--test", "0", "--balance", "--seed", "5",
    ]  # fmt: skip
    result = subprocess.run(
        [*command, *options],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "portrait" in result.stdout and "artwork groups" in result.stdout
    assert json.loads((tmp_path / "ds" / "classes.json").read_text()) == [
        "portrait",
        "landscape",
        "still-life",
    ]
    assert not (tmp_path / "ds" / "test").exists()
    missing = subprocess.run(
        [*command[:-1], str(tmp_path / "nothing"), "--by", "TYPE", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: no manifest.csv")


def test_cli_filters_and_where_options_parse_to_library_arguments(tmp_path):
    from wga.cli.dataset_cmd import _parse_filters, _parse_where

    spec = (
        '{"portrait": {"FORM": "painting", "TYPE": "portrait"}, "still": {"TYPE": ["still-life"]}}'
    )
    assert _parse_filters(spec)["still"] == {"TYPE": ["still-life"]}
    (tmp_path / "classes.json").write_text(spec)
    assert list(_parse_filters(str(tmp_path / "classes.json"))) == ["portrait", "still"]
    assert _parse_where(["FORM=painting", "school=Dutch,Flemish", "FORM=sculpture"]) == {
        "FORM": ["painting", "sculpture"],
        "school": ["Dutch", "Flemish"],
    }
    with pytest.raises(InvalidInput, match="COLUMN=value1,value2"):
        _parse_where(["FORM"])
    with pytest.raises(InvalidInput, match="not valid JSON"):
        _parse_filters("{portrait: painting}")
