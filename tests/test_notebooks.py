"""The notebooks run top to bottom in a small offline mode (papermill parameters).

With their default parameters they do the real job (the real WGA, ImageNet InceptionV3, 900 px);
here they get a local fake WGA, the offline model ``vgg16-hed``, tiny sizes and few steps.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(Path(__file__).resolve().parent))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def execute(name: str, tmp_path: Path, **parameters) -> dict:
    """Run a notebook with papermill in ``tmp_path``; return the executed notebook as JSON."""
    import papermill

    output = tmp_path / f"executed-{name}"
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env_path]))
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS / name),
            str(output),
            parameters=parameters,
            cwd=str(tmp_path),
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
        )
    finally:
        os.environ["PYTHONPATH"] = env_path
    return json.loads(output.read_text())


def outputs_text(notebook: dict) -> str:
    parts = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", "")))
            parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_download_notebook_fetches_a_fake_wga_and_builds_grouped_splits(tmp_path):
    from wga_server import FakeWga, generate_artworks

    with FakeWga(generate_artworks(48, seed=3, size=(40, 30))) as server:
        notebook = execute(
            "download.ipynb",
            tmp_path,
            catalog_url=server.catalog_url,
            base_url=server.base_url,
            out_dir=str(tmp_path / "wga"),
            dataset_dir=str(tmp_path / "ds"),
            workers=4,
            rate=None,
            max_side=None,
            balance=False,
        )
    text = outputs_text(notebook)
    assert "48 rows" in text and "missing" in text
    classes = json.loads((tmp_path / "ds" / "classes.json").read_text())
    assert classes == ["portrait", "landscape", "still-life"]
    assert any((tmp_path / "ds" / "train").rglob("*.jpg"))
