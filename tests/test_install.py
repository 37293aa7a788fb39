"""wga as a package: a wheel carries the page and the backend notebook, and an installed copy
serves from any folder without writing inside itself.

The wheel is built from a copy of the sources (``pip wheel``, no network), installed into a
scratch virtual environment with ``--no-deps``: its dependencies come from the test
environment's site-packages, which a ``.pth`` line puts after the scratch environment's own (so
the scratch copy of ``wga`` is the one imported, never the checkout). ``wga serve`` then starts
in an empty folder, with no ``WGA_*`` folder variables and no ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import requests
from serving import FOLDER_VARIABLES, ROOT

pytestmark = [pytest.mark.gateway, pytest.mark.slow]

QUICK = {"model": "vgg16-hed", "layer": "block1_conv2", "unit": 5, "size": 64, "steps": 4}
START_S = 240


def build_wheel(out: Path) -> Path:
    """``pip wheel`` of a clean copy of the sources (the checkout's build/ stays untouched)."""
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "wga", source / "wga", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(out / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (out / "dist").glob("wga-*.whl")
    return wheel


def scratch_environment(folder: Path, wheel: Path) -> tuple[Path, Path]:
    """A fresh venv with the wheel installed: its python and its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    # The test environment's packages (TensorFlow, the kernel gateway …), after the venv's own.
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (purelib / "test-dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--quiet", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return python, purelib


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    }


def make_probe(hed, folder: Path) -> None:
    """A probe index of three synthetic images at ``folder``."""
    import numpy as np
    from PIL import Image

    from wga.corpus.corpus import open_corpus
    from wga.corpus.probe import run_probe

    corpus = folder.parent.parent / "paintings"
    corpus.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for index in range(3):
        pixels = rng.integers(0, 256, size=(48, 40 + 8 * index, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(corpus / f"{index}.png")
    run_probe(hed, open_corpus(corpus), ["block1_conv2"], folder, k=2, progress=False)


def test_the_wheel_carries_the_page_and_the_notebook_and_serves_from_any_folder(hed, tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "wga/serve/page/index.html" in names and "wga/serve/backend.ipynb" in names
    assert {"wga/serve/page/js/app.js", "wga/serve/page/style.css"} <= set(names)
    assert not [name for name in names if "/renders/" in name or name.endswith(".png")]

    python, purelib = scratch_environment(tmp_path / "venv", wheel)
    home = tmp_path / "home"  # an empty folder, far from the checkout
    home.mkdir()
    make_probe(hed, tmp_path / "thesis" / "probes" / "my-probe")  # given relative to home
    env = {key: value for key, value in os.environ.items() if key not in FOLDER_VARIABLES}
    env.pop("PYTHONPATH", None)
    env.pop("WGA_TOKEN", None)
    where = subprocess.run(
        [str(python), "-c", "import wga.paths as p; print(p.page_dir())"],
        cwd=home, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(purelib), f"the scratch venv imports wga from {where}"
    before = snapshot(purelib)

    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(python), "-m", "wga", "serve", "--port", str(port),
             "--probes", "../thesis/probes"],
            cwd=home, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: "press Ctrl-C" in log.read_text(), process, log)
        page = requests.get(base + "/public/index.html", timeout=60)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert requests.get(base + "/public/js/app.js", timeout=60).status_code == 200
        assert requests.get(base + "/api/status", timeout=60).json()["workers_alive"] is True
        probes = requests.get(base + "/api/probes", timeout=60)
        assert [p["name"] for p in probes.json()["probes"]] == ["my-probe"]
        assert probes.json()["probes"][0]["corpus"] == "paintings"
        assert str(tmp_path) not in probes.text  # names, not the server's paths
        created = requests.post(base + "/api/renders", json=QUICK, timeout=60)
        assert created.status_code in (200, 202), created.text
        job = created.json()
        _wait_for(
            lambda: requests.get(base + job["status_url"], timeout=60).json()["status"] == "done",
            process,
            log,
        )
        image = requests.get(base + job["url"], timeout=60)
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        assert (home / "cache" / "renders" / f"{job['id']}.png").read_bytes() == image.content
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = log.read_text()
    assert process.returncode == 0, text[-3000:]
    assert snapshot(purelib) == before, "wga serve wrote inside the installed package"
    assert sorted(path.name for path in home.iterdir()) == ["cache"]
    # A quiet start: what a user can act on, no gateway or kernel chatter.
    for noise in ("MissingIDFieldWarning", "without encryption", "Registering resource",
                  "Could not find callback", "received signal", "Traceback"):  # fmt: skip
        assert noise not in text, f"{noise!r} in the log:\n{text[-3000:]}"


def _free_port() -> int:
    from wga.serve.gateway import free_port

    return free_port()


def _wait_for(condition, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"wga serve exited ({process.returncode}):\n{log.read_text()}")
        try:
            if condition():
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready in {START_S} s:\n{log.read_text()[-3000:]}")
