"""The probe end to end on tiny corpora: exact against brute force, shardable, resumable, honest."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wga.corpus.corpus import open_corpus
from wga.corpus.feed import FeedRule, chunks, feed, valid_grid
from wga.corpus.index import ProbeIndex
from wga.corpus.probe import ProbeJob, Prober, probe_chunks, run_probe
from wga.corpus.receptive import DEFAULT_BORDER_MARGIN
from wga.corpus.topk import merge
from wga.executors.local import LocalExecutor

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.backends  # make test runs these again on JAX
HED_LAYERS = ["block1_conv2", "block2_pool"]  # a conv with its ReLU inside, and a pooled output


def _noise_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def download_corpus(tmp_path_factory) -> Path:
    """A `wga download`-style folder: manifest.csv with catalog fields, 9 images, 1 corrupt."""
    root = tmp_path_factory.mktemp("download")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for index in range(9):
        height, width = int(rng.integers(30, 70)), int(rng.integers(30, 70))
        name = f"images/art{index}.{'png' if index % 3 else 'jpg'}"
        Image.fromarray(_noise_image(rng, height, width)).save(root / name)
        rows.append((name, "ok", f"Painter {index}", f"Work {index}", f"15{index}0"))
    (root / "images/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows.append(("images/broken.jpg", "ok", "Nobody", "Broken", ""))
    rows.append(("", "missing", "Gone", "Missing", ""))
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "file", "status", "AUTHOR", "TITLE", "DATE", "URL"])
        for i, (file, status, author, title, date) in enumerate(rows):
            writer.writerow(
                [i, file, status, author, title, date, f"https://www.wga.hu/html/{i}.html"]
            )
    return root


@pytest.fixture(scope="module")
def hed_index(hed, download_corpus, tmp_path_factory) -> ProbeIndex:
    out = tmp_path_factory.mktemp("index") / "hed"
    corpus = open_corpus(download_corpus)
    return run_probe(hed, corpus, HED_LAYERS, out, k=3, batch_size=3, progress=False)


def _brute_force(hed, corpus, layer: str, k: int, largest: bool):
    """Each image alone, through plain Keras ops, then a numpy sort (ties by image id)."""
    import keras
    from keras import ops

    from wga.corpus.views import model_input

    rule = FeedRule(224, "caffe")
    per_image = {}
    for image in corpus:
        try:
            batch, shape, _ = model_input(corpus.path(image.id), rule)
        except OSError:
            continue
        if layer == "block1_conv2":
            first = keras.Model(hed.model.input, hed.model.get_layer("block1_conv1").output)(batch)
            first = ops.convert_to_numpy(first)
            kernel, bias = hed.model.get_layer("block1_conv2").get_weights()
            out = ops.convert_to_numpy(ops.conv(first, kernel, 1, "same") + bias)[0]
        else:
            model = keras.Model(hed.model.input, hed.model.get_layer(layer).output)
            out = ops.convert_to_numpy(model(batch))[0]
        rows, cols = valid_grid(np.asarray([shape]), out.shape[:2], 224)[0]
        per_image[image.id] = out[:rows, :cols]
    results = []
    units = next(iter(per_image.values())).shape[-1]
    for unit in range(units):
        entries = []
        for image_id, out in per_image.items():
            plane = out[..., unit]
            flat = int(np.argmax(plane) if largest else np.argmin(plane))
            y, x = divmod(flat, plane.shape[1])
            entries.append((float(plane[y, x]), image_id, y, x))
        entries.sort(key=lambda e: (-e[0] if largest else e[0], e[1]))
        results.append(entries)
    return results


@pytest.mark.parametrize(
    ("layer", "largest"), [("block1_conv2", True), ("block1_conv2", False), ("block2_pool", True)]
)
def test_values_ids_and_positions_equal_a_brute_force_pass(
    hed, hed_index, download_corpus, layer, largest
):
    corpus = open_corpus(download_corpus)
    expected = _brute_force(hed, corpus, layer, 3, largest)
    top = hed_index.top(layer, negatives=not largest)
    compared = 0
    for unit, entries in enumerate(expected):
        values = [e[0] for e in entries[:4]]
        gaps = np.abs(np.diff(values))
        if gaps.min() <= 1e-3 * max(1.0, abs(values[0])):
            continue  # a near-tie: the order of two equal values is a matter of rounding
        compared += 1
        np.testing.assert_allclose(top.values[unit], values[:3], rtol=1e-4, atol=1e-4)
        assert top.ids[unit].tolist() == [e[1] for e in entries[:3]]
        assert top.ys[unit].tolist() == [e[2] for e in entries[:3]]
        assert top.xs[unit].tolist() == [e[3] for e in entries[:3]]
    assert compared > len(expected) // 2


def test_corrupt_images_are_skipped_listed_and_never_examples(hed_index):
    skipped = hed_index.description["skipped"]
    assert [entry["file"] for entry in skipped] == ["images/broken.jpg"]
    assert "Error" in skipped[0]["error"]
    broken = next(
        i for i, image in enumerate(hed_index.images()) if image["file"] == "images/broken.jpg"
    )
    assert np.isnan(hed_index.maxima("block1_conv2")[broken]).all()
    for layer in HED_LAYERS:
        assert broken not in hed_index.top(layer).ids
    assert hed_index.description["complete"] is True
    assert len(hed_index.images()) == 10  # the "missing" manifest row is not an image


def test_no_image_appears_twice_for_a_unit(hed_index):
    for layer in HED_LAYERS:
        for negatives in (False, True):
            top = hed_index.top(layer, negatives)
            if top is None:
                continue
            for row in top.ids:
                assert len(set(row.tolist())) == len(row)


def test_merging_shards_in_any_order_equals_the_single_pass(hed, hed_index, download_corpus):
    corpus = open_corpus(download_corpus)
    prober = Prober(hed, HED_LAYERS, k=3)
    job = ProbeJob("vgg16-hed", str(corpus.root), tuple(HED_LAYERS), 3, 3, prober.rule)
    parts = list(probe_chunks(LocalExecutor(), job, chunks(len(corpus), 3), prober=prober))
    single = None
    for part in parts:
        single = merge(single, part)
    shard_a = merge(merge(None, parts[3]), parts[0])
    shard_b = merge(merge(None, parts[2]), parts[1])
    assert merge(shard_b, shard_a).equal(single)
    for layer in HED_LAYERS:
        recorded = hed_index.top(layer)
        assert recorded.equal(single.layers[layer].top)


def test_rerunning_a_recorded_position_reproduces_its_value(hed, hed_index):
    from wga.corpus.views import activation_map

    for layer in HED_LAYERS:
        for unit in (0, 5):
            for example in hed_index.examples(layer, unit)[:2]:
                heat = activation_map(hed, hed_index, layer, unit, example.image)
                again = heat[example.grid]
                assert again == pytest.approx(example.value, rel=1e-3, abs=1e-4)
                assert np.isclose(heat.max(), example.value, rtol=1e-3, atol=1e-4)


def test_examples_json_has_the_design_fields_in_original_pixels(hed_index, capsys):
    from wga.cli import main

    assert (
        main(
            [
                "examples",
                "--index",
                str(hed_index.root),
                "--layer",
                "block2_pool",
                "--unit",
                "3",
                "--json",
            ]
        )
        == 0
    )
    document = json.loads(capsys.readouterr().out)
    assert {"model", "layer", "unit", "examples", "negatives", "histogram"} <= document.keys()
    assert document["negatives"] == []  # block2_pool is post-ReLU: no reachable pre-activation
    sizes = {image["file"]: None for image in hed_index.images()}
    for example in document["examples"]:
        assert example["file"] in sizes and example["author"].startswith("Painter")
        image_id = example["image"]
        height, width = hed_index.sizes()[image_id]
        assert 0 <= example["y"] < height and 0 <= example["x"] < width
        top, left, bottom, right = example["crop"]
        assert (
            0 <= top <= example["y"] < bottom <= height
            and 0 <= left <= example["x"] < right <= width
        )
    values = [e["value"] for e in document["examples"]]
    assert values == sorted(values, reverse=True)
    assert len(document["histogram"]["edges"]) == 65 and sum(document["histogram"]["counts"]) == 9


def _red_squares(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Grey noise artworks of odd sizes; three carry a red square (box in original pixels)."""
    rng = np.random.default_rng(5)
    boxes = {}
    for index in range(8):
        height, width = int(rng.integers(80, 140)), int(rng.integers(80, 140))
        grey = rng.integers(90, 150, size=(height, width, 1))
        image = np.clip(grey + rng.integers(-10, 10, size=(height, width, 3)), 0, 255).astype(
            np.uint8
        )
        if index in (1, 4, 6):
            top, left = int(rng.integers(0, height - 20)), int(rng.integers(0, width - 20))
            image[top : top + 20, left : left + 20] = (230, 20, 20)
            boxes[f"{index}.png"] = (top, left, top + 20, left + 20)
        elif index == 3:
            image[10:30, 10:30] = (20, 20, 230)  # a blue square must not fire
        Image.fromarray(image).save(root / f"{index}.png")
    return boxes


def _red_model():
    import keras

    from wga.models import LoadedModel, ModelSpec

    inputs = keras.Input((None, None, 3))
    red = keras.layers.Conv2D(1, 3, padding="same", activation="relu", name="red")(inputs)
    pooled = keras.layers.MaxPooling2D(2, name="pool")(red)
    deep = keras.layers.Conv2D(1, 5, padding="same", activation="relu", name="deep")(pooled)
    model = keras.Model(inputs, deep)
    kernel = np.zeros((3, 3, 3, 1), np.float32)
    kernel[1, 1, :, 0] = (1.0, -1.0, -1.0)  # R - G - B: only red pixels are positive
    model.get_layer("red").set_weights([kernel, np.zeros(1, np.float32)])
    model.get_layer("deep").set_weights(
        [np.full((5, 5, 1, 1), 1 / 25, np.float32), np.zeros(1, np.float32)]
    )
    spec = ModelSpec("red-squares", "red squares", "raw", 64, "file")
    return LoadedModel(spec, model, "red-squares")


def test_a_unit_built_for_red_squares_finds_them_and_where_they_are(tmp_path):
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    boxes = _red_squares(corpus_dir)
    corpus = open_corpus(corpus_dir)
    index = run_probe(
        _red_model(), corpus, ["red", "deep"], tmp_path / "index", k=3, batch_size=4, progress=False
    )
    for layer, slack in (("red", 3), ("deep", 6)):
        examples = index.examples(layer, 0)
        assert sorted(e.file for e in examples) == sorted(boxes)
        for example in examples:
            top, left, bottom, right = boxes[example.file]
            assert top - slack <= example.y < bottom + slack
            assert left - slack <= example.x < right + slack
    negatives = index.examples("red", 0, negatives=True)
    assert negatives and negatives[0].file not in boxes and negatives[0].value < 0


def test_probe_resumes_after_sigkill_and_gives_the_same_index(hed, tmp_path):
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    rng = np.random.default_rng(7)
    for index in range(16):
        Image.fromarray(_noise_image(rng, 32, 40)).save(corpus_dir / f"{index:02d}.png")
    command = [
        sys.executable,
        "-m",
        "wga",
        "probe",
        "--model",
        "vgg16-hed",
        "--corpus",
        str(corpus_dir),
        "--layers",
        "block1_conv2",
        "--top",
        "3",
        "--batch",
        "2",
        "--checkpoint",
        "0",
        "--no-progress",
        "--out",
        str(tmp_path / "killed"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    description = tmp_path / "killed" / "probe.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if description.exists() and json.loads(description.read_text()).get("done", 0) >= 4:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the probe finished before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(60)
    done_at_kill = json.loads(description.read_text())["done"]
    assert 4 <= done_at_kill < 16
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    killed = ProbeIndex.open(tmp_path / "killed")
    whole = run_probe(
        hed,
        open_corpus(corpus_dir),
        ["block1_conv2"],
        tmp_path / "whole",
        k=3,
        batch_size=2,
        progress=False,
        border_margin=DEFAULT_BORDER_MARGIN,  # the CLI's default
    )
    for negatives in (False, True):
        assert killed.top("block1_conv2", negatives).equal(whole.top("block1_conv2", negatives))
    np.testing.assert_array_equal(killed.maxima("block1_conv2"), whole.maxima("block1_conv2"))
    np.testing.assert_array_equal(killed.style("block1_conv2"), whole.style("block1_conv2"))
    assert killed.histogram("block1_conv2", 7) == whole.histogram("block1_conv2", 7)


def test_feed_keeps_aspect_longer_side_and_marks_failures(download_corpus):
    corpus = open_corpus(download_corpus)
    assert corpus.kind == "download"
    batch = next(iter(feed(corpus, FeedRule(64, "tf"), np.arange(len(corpus)), len(corpus))))
    shapes, sizes, ok = batch["shapes"], batch["sizes"], batch["ok"]
    assert ok.sum() == len(corpus) - 1
    for shape, size, good in zip(shapes, sizes, ok, strict=True):
        if good:
            assert shape.max() == 64
            assert abs(shape[0] / shape[1] - size[0] / size[1]) < 0.05
    images = batch["images"]
    first = int(np.argmax(ok))
    rows, cols = shapes[first]
    assert (images[first, rows:] == 0).all() and (images[first, :, cols:] == 0).all()


def test_cli_errors_name_the_problem_and_the_fix(hed_index, download_corpus, tmp_path, capsys):
    from wga.cli import main

    missing = ["probe", "--corpus", str(tmp_path / "nowhere"), "--layers", "block1_conv1"]
    assert main([*missing, "--model", "vgg16-hed", "--out", str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err
    wrong = ["probe", "--model", "vgg16-hed", "--corpus", str(download_corpus), "--no-progress"]
    assert main([*wrong, "--layers", "block2_pol", "--out", str(tmp_path / "b")]) == 2
    assert "block2_pool" in capsys.readouterr().err  # the closest names
    # Resuming an index with other settings is refused, not mixed.
    other = [*wrong, "--layers", "block1_conv2", "--top", "5", "--out", str(hed_index.root)]
    assert main(other) == 2
    assert "another" in capsys.readouterr().err
    assert (
        main(
            ["examples", "--index", str(hed_index.root), "--layer", "block2_pool", "--unit", "9999"]
        )
        == 2
    )
    assert "out of range" in capsys.readouterr().err
