"""``python -m wga render``: files named by the contract, recipe in the PNG, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wga.cli.render_cmd import parse_units
from wga.errors import InvalidInput
from wga.vis.png import read_png_metadata
from wga.vis.recipe import Recipe, recipe_file_name


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wga", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_unit_lists_accept_ranges_and_commas():
    assert parse_units("0-3") == [0, 1, 2, 3]
    assert parse_units("3,5,9") == [3, 5, 9]
    assert parse_units("7, 0-2,2") == [0, 1, 2, 7]
    for bad in ("", "a", "5-2", "1,,2", "-3"):
        with pytest.raises(InvalidInput):
            parse_units(bad)


def test_output_names_follow_the_contract():
    assert recipe_file_name(Recipe("m", "mixed5", 66)) == "mixed5-66.png"
    assert recipe_file_name(Recipe("m", "a/b", 1)) == "a_b-1.png"
    full = recipe_file_name(Recipe("m", "a/b", 1, size=96, seed=3), full=True)
    assert full == "a_b-1-lucid-96px-seed3.png"


@pytest.mark.slow
def test_render_writes_one_png_per_unit_with_its_recipe(tmp_path):
    result = run_cli(
        "render",
        "--model",
        "vgg16-hed",
        "--layer",
        "block3_conv3",
        "--units",
        "2,3",
        "--size",
        "64",
        "--steps",
        "4",
        "--seed",
        "5",
        "--out",
        str(tmp_path),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "block3_conv3-2.png",
        "block3_conv3-3.png",
    ]
    metadata = read_png_metadata(tmp_path / "block3_conv3-3.png")
    assert metadata["model"] == "vgg16-hed" and metadata["unit"] == 3
    assert (metadata["size"], metadata["steps"], metadata["seed"]) == (64, 4, 5)
    assert metadata["preset"] == "lucid" and len(metadata["weights"]) == 16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "block9_conv9", "--units", "0"], "no visualisable layer 'block9_conv9'"),
        (["--layer", "block3_conv3", "--units", "250-256"], "unit 256 is out of range"),
        (["--layer", "block3_conv3", "--units", "0", "--size", "2048"], "size must be from 64"),
        (["--layer", "block3_conv3", "--units", "0", "--preset", "lucd"], "did you mean lucid"),
    ],
)
def test_mistakes_are_one_clear_line_and_exit_status_2(tmp_path, args, message):
    result = run_cli("render", "--model", "vgg16-hed", "--out", str(tmp_path), *args)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
