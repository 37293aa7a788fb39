"""Where data lives (wga.paths): the start folder, flags and variables, always absolute."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wga import paths
from wga.paths import Places
from wga.serve.gateway import Gateway

VARIABLES = (
    "WGA_RUNS_DIR",
    "WGA_PROBES_DIR",
    "WGA_ATLASES_DIR",
    "WGA_CACHE_DIR",
    "WGA_VECTORS_DIR",
)


@pytest.fixture
def start_folder(tmp_path, monkeypatch):
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    home = tmp_path / "thesis"
    home.mkdir()
    monkeypatch.chdir(home)
    return home


def test_every_folder_defaults_to_the_start_folder(start_folder):
    places = Places.resolve()
    assert places == Places(
        runs=start_folder / "runs",
        probes=start_folder / "probes",
        atlases=start_folder / "atlases",
        cache=start_folder / "cache",
        vectors=start_folder / "vectors",
    )
    assert places.renders == start_folder / "cache" / "renders" == paths.renders_dir()


def test_flags_beat_variables_beat_defaults_and_relative_ones_become_absolute(
    start_folder, monkeypatch
):
    monkeypatch.setenv("WGA_PROBES_DIR", "../elsewhere/probes")
    monkeypatch.setenv("WGA_ATLASES_DIR", "/data/atlases")
    places = Places.resolve(probes=None, runs="../runs", cache="~/wga-cache")
    assert places.runs == start_folder / ".." / "runs"
    assert places.probes == start_folder / ".." / "elsewhere" / "probes"
    assert places.atlases == Path("/data/atlases")
    assert places.cache == Path.home() / "wga-cache"
    assert all(value.is_absolute() for value in vars(places).values())
    assert Places.resolve(probes="p").probes == start_folder / "p"  # the flag wins


def test_the_kernel_gets_absolute_folders_and_runs_in_the_start_folder(start_folder, tmp_path):
    places = Places.resolve(runs="runs", cache="cache")
    gateway = Gateway(places=places)
    env = gateway.environment()
    assert env["WGA_RUNS_DIR"] == str(start_folder / "runs")
    assert env["WGA_CACHE_DIR"] == str(start_folder / "cache")
    assert env["WGA_PROBES_DIR"] == str(start_folder / "probes")
    assert "WGA_STATIC_DIR" not in env
    assert gateway.workdir == start_folder
    assert f"--GuardedNotebookHTTPPersonality.wga_cache={start_folder / 'cache'}" in gateway.argv()
    assert f"--NotebookHTTPPersonality.static_path={paths.page_dir()}" in gateway.argv()


def test_a_base_other_than_the_current_folder(start_folder, tmp_path):
    other = tmp_path / "other"
    assert Places.resolve(base=other).probes == other / "probes"
    assert Places.resolve(base=other, probes="/abs").probes == Path("/abs")


def test_the_package_carries_the_page_and_the_backend_notebook():
    assert (paths.page_dir() / "index.html").is_file()
    assert paths.backend_notebook().suffix == ".ipynb" and paths.backend_notebook().is_file()
    assert paths.page_dir().parent.name == "serve"


def test_the_backend_notebook_is_normalised_every_cell_has_a_unique_id():
    import json

    import nbformat

    text = paths.backend_notebook().read_text(encoding="utf-8")
    cells = json.loads(text)["cells"]
    ids = [cell.get("id") for cell in cells]
    assert None not in ids, "a cell without an id: run nbformat's normalize() on the notebook"
    assert len(set(ids)) == len(ids)
    nbformat.validate(nbformat.reads(text, as_version=4))  # no MissingIDFieldWarning


def test_user_cache_follows_xdg_and_takes_numbas_compiled_code(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.user_cache_dir() == tmp_path / "xdg" / "wga"
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    paths.keep_compiled_code_out_of_packages()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "xdg" / "wga" / "numba")
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/mine")
    paths.keep_compiled_code_out_of_packages()
    assert os.environ["NUMBA_CACHE_DIR"] == "/mine"
