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


def execute(
    name: str | Path, tmp_path: Path, env: dict[str, str] | None = None, **parameters
) -> dict:
    """Run a notebook (a name in notebooks/, or a path) with papermill in ``tmp_path``; return the
    executed notebook as JSON."""
    import papermill

    source = name if isinstance(name, Path) else NOTEBOOKS / name
    output = tmp_path / f"executed-{source.name}"
    variables = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    }
    variables.update(env or {})
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)  # the kernel inherits them
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            cwd=str(tmp_path),
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
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


def test_finetune_then_figures_notebooks_make_a_run_and_the_papers_figures(tmp_path):
    from wga.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(
        tmp_path / "ds", per_class={"train": 8, "val": 4, "test": 4}, side=64
    )
    classes = json.loads((data / "classes.json").read_text())
    run = tmp_path / "runs" / "tiny"
    notebook = execute(
        "finetune.ipynb",
        tmp_path,
        data=str(data),
        model="vgg16-hed",
        run_dir=str(run),
        epochs=2,
        head_epochs=1,
        size=64,
        batch=8,
    )
    assert "validation accuracy" in outputs_text(notebook)
    assert (run / "model.keras").exists() and (run / "metrics.json").exists()

    figures = tmp_path / "figures"
    notebook = execute(
        "figures.ipynb",
        tmp_path,
        imagenet_model="vgg16-hed",
        finetuned_run=str(run),
        class_units=classes[:2],
        class_size=64,
        variations=1,
        unit_layer="block4_conv3",
        unit=66,
        unit_size=64,
        gallery_layer="block5_conv3",
        gallery_units=2,
        gallery_size=64,
        compare_layer="block5_conv3",
        compare_units=[3],
        compare_size=64,
        steps=4,
        out_dir=str(figures),
    )
    for name in (
        "class-units-offert2018.png",
        "class-units-lucid.png",
        "block4_conv3-66.png",
        "gallery-block5_conv3.png",
        "before-after-block5_conv3-3.png",
    ):
        assert (figures / name).stat().st_size > 1000, name
    from wga.vis.png import read_png_metadata

    saved = sorted((figures / "class-units").glob("*.png"))
    assert len(saved) == 2 * 2  # two classes × two presets
    recipe = read_png_metadata(saved[0])
    assert recipe["layer"] == "predictions" and recipe["steps"] == 4


def test_backend_notebook_runs_top_to_bottom_outside_the_gateway(tmp_path):
    from wga.paths import backend_notebook

    cache = tmp_path / "cache"
    notebook = execute(
        backend_notebook(),
        tmp_path,
        env={"WGA_CACHE_DIR": str(cache), "WGA_RUNS_DIR": str(tmp_path / "runs")},
    )
    text = outputs_text(notebook)
    assert '"vgg16-hed"' in text and '"status": 200' in text
    assert "Traceback" not in text
    assert (cache / "renders").is_dir()


def _tiny_run(folder: Path, classes: list[str]) -> Path:
    """A "fine-tuned run" with random weights and named classes (its class units get probed)."""
    import keras

    folder.mkdir(parents=True)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax", name="predictions")(x)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    (folder / "model.json").write_text(json.dumps({"preprocessing": "tf", "input_size": 64}))
    (folder / "classes.json").write_text(json.dumps(classes))
    return folder


def test_probe_notebook_downloads_a_fake_wga_and_shows_a_units_artworks(tmp_path):
    from wga_server import FakeWga, generate_artworks

    run = _tiny_run(tmp_path / "runs" / "tiny", ["portrait", "landscape"])
    with FakeWga(generate_artworks(12, seed=5, size=(64, 48))) as server:
        notebook = execute(
            "probe.ipynb",
            tmp_path,
            corpus_dir=str(tmp_path / "wga"),
            catalog_url=server.catalog_url,
            base_url=server.base_url,
            download_limit=12,
            model="vgg16-hed",
            layers=["block3_conv3", "block5_pool"],
            unit_layer="block3_conv3",
            unit=3,
            top=4,
            batch=8,
            probe_dir=str(tmp_path / "probes" / "wga"),
            render_size=64,
            steps=4,
            finetuned_run=str(run),
            class_probe_dir=str(tmp_path / "probes" / "classes"),
        )
    text = outputs_text(notebook)
    assert "images probed" in text and "receptive field" in text
    assert "https://www.wga.hu/html/" in text or "/html/p/painter" in text  # the WGA pages
    assert "Traceback" not in text
    description = json.loads((tmp_path / "probes" / "wga" / "probe.json").read_text())
    assert description["complete"] and description["done"] >= 8
    classes = json.loads((tmp_path / "probes" / "classes" / "probe.json").read_text())
    assert classes["layers"][0]["values"] == "logits"
    assert list((tmp_path / "probes" / "classes" / "cache" / "overlays").glob("*.jpg"))
    figures = [
        output
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(figures) >= 3  # the unit beside its artworks, the histogram, the class units


def test_atlas_notebook_maps_a_layer_of_a_fake_wga_and_shows_cells_artworks(tmp_path):
    from wga_server import FakeWga, generate_artworks

    with FakeWga(generate_artworks(12, seed=7, size=(64, 48))) as server:
        notebook = execute(
            "atlas.ipynb",
            tmp_path,
            corpus_dir=str(tmp_path / "wga"),
            catalog_url=server.catalog_url,
            base_url=server.base_url,
            download_limit=12,
            model="vgg16-hed",
            layer="block2_conv2",
            probe_dir=str(tmp_path / "probes" / "wga"),
            atlas_dir=str(tmp_path / "atlases" / "wga"),
            grid=2,
            icon=64,
            steps=4,
            per_image=12,
            cells_shown=2,
        )
    text = outputs_text(notebook)
    assert "activations of block2_conv2" in text and "Traceback" not in text
    atlas = json.loads((tmp_path / "atlases" / "wga" / "atlas.json").read_text())
    assert atlas["cells"] and all(cell["icon"] for cell in atlas["cells"])
    images = [
        output
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 1 + min(2, len(atlas["cells"]))  # the atlas and the cells shown


def test_look_notebook_shows_what_the_model_sees_in_one_fake_wga_painting(tmp_path):
    from wga_server import FakeWga, generate_artworks

    out = tmp_path / "looks"
    with FakeWga(generate_artworks(12, seed=9, size=(64, 48))) as server:
        notebook = execute(
            "look.ipynb",
            tmp_path,
            corpus_dir=str(tmp_path / "wga"),
            catalog_url=server.catalog_url,
            base_url=server.base_url,
            download_limit=12,
            model="vgg16-hed",
            layers=["block3_conv3", "block4_conv2"],
            probe_dir=str(tmp_path / "probes" / "wga"),
            image=1,
            top=4,
            groups=3,
            icons=True,
            icon_steps=4,
            similar_k=3,
            out_dir=str(out),
        )
    text = outputs_text(notebook)
    assert "Traceback" not in text
    assert "%ile" in text and "group 3:" in text and "content [" in text and "style [" in text
    assert len(list((out / "icons").glob("*.png"))) == 2 * 3  # each group's icon, rendered
    assert len(list((out / "overlays").glob("*.jpg"))) == 2 * (4 + 3)
    figures = [
        output
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(figures) >= 3  # the painting, the contact sheet, the similar paintings
