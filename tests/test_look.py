"""The artwork view, factor groups and similar artworks: exact against brute force and numpy."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wga.corpus.corpus import open_corpus
from wga.corpus.feed import valid_grid
from wga.corpus.index import ProbeIndex, original_position
from wga.corpus.look import (
    factor_groups,
    factorise,
    look,
    picture_from,
    picture_from_index,
    rank_units,
    resolve_image,
    see,
)
from wga.corpus.probe import run_probe
from wga.corpus.ranks import percentiles_among, sorted_maxima, unit_percentiles
from wga.corpus.similar import Search, query_features, similar, style_statistics
from wga.data.synthetic import SYNTHETIC_CLASSES, synthetic_image
from wga.errors import InvalidInput, NotFound

pytestmark = pytest.mark.backends  # run again on JAX by make test
LAYERS = ["block2_pool", "block3_conv3"]  # an output (post-ReLU pool) and a pre-activation


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """A `wga download`-style folder of 9 synthetic paintings (one an exact copy) and a broken one."""
    root = tmp_path_factory.mktemp("look-corpus")
    (root / "images").mkdir()
    rng = np.random.default_rng(3)
    rows = []
    for index in range(8):
        kind = SYNTHETIC_CLASSES[index % len(SYNTHETIC_CLASSES)]
        name = f"images/a{index:02d}.jpg"
        Image.fromarray(synthetic_image(kind, rng, side=72)).save(root / name, quality=92)
        rows.append((name, f"Painter {index}", f"{kind} {index}"))
    shutil.copyfile(root / "images/a04.jpg", root / "images/a08.jpg")  # equal rows: a tie
    rows.append(("images/a08.jpg", "Copyist", "copy of 4"))
    (root / "images/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rows.append(("images/broken.jpg", "Nobody", "Broken"))
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "file", "status", "AUTHOR", "TITLE", "DATE", "URL"])
        for i, (file, author, title) in enumerate(rows):
            writer.writerow([i, file, "ok", author, title, "1500", f"https://www.wga.hu/{i}.html"])
    return root


@pytest.fixture(scope="module")
def index(hed, corpus_dir, tmp_path_factory) -> ProbeIndex:
    out = tmp_path_factory.mktemp("look-index") / "hed"
    return run_probe(hed, open_corpus(corpus_dir), LAYERS, out, k=3, batch_size=4, progress=False)


def _brute_force(hed, index: ProbeIndex, image_id: int, layer: str) -> np.ndarray:
    """The layer's recorded values over the artwork's valid region, through plain Keras."""
    import keras

    from wga.corpus.look import index_rule
    from wga.corpus.views import image_path, model_input

    batch, shape, _ = model_input(image_path(index, image_id), index_rule(index))
    if layer == "block3_conv3":  # the probe records the pre-activation: conv without its ReLU
        before = keras.Model(hed.model.input, hed.model.get_layer("block3_conv2").output)(batch)
        conv = hed.model.get_layer("block3_conv3")
        out = np.asarray(keras.ops.conv(before, conv.kernel, padding="same") + conv.bias)[0]
    else:
        out = np.asarray(keras.Model(hed.model.input, hed.model.get_layer(layer).output)(batch))[0]
    rows, cols = valid_grid(np.asarray([shape]), out.shape[:2], index.side)[0]
    return out[:rows, :cols]


@pytest.mark.parametrize("layer", LAYERS)
def test_top_units_values_and_positions_equal_a_brute_force_pass(hed, index, layer):
    image_id = 2
    result = look(hed, picture_from_index(index, image_id), [layer], index=index, top=10, groups=0)
    (seen,) = result.layers
    values = _brute_force(hed, index, image_id, layer)
    maxima = values.reshape(-1, values.shape[-1]).max(axis=0)
    expected = sorted(range(len(maxima)), key=lambda u: (-maxima[u], u))[:10]
    assert [u.unit for u in seen.units] == expected
    size = tuple(int(v) for v in index.sizes()[image_id])
    for unit in seen.units:
        np.testing.assert_allclose(unit.value, maxima[unit.unit], rtol=1e-4, atol=1e-4)
        plane = values[..., unit.unit]
        gy, gx = divmod(int(np.argmax(plane)), plane.shape[1])
        assert unit.grid == (gy, gx)
        y, x, _ = original_position(index.field(layer), gy, gx, size, index.side)
        assert (unit.y, unit.x) == (y, x)
        # and the index recorded the same maximum for this artwork (float16)
        stored = float(index.maxima(layer)[image_id, unit.unit])
        np.testing.assert_allclose(unit.value, stored, rtol=2e-3, atol=2e-3)


def test_percentiles_equal_numpy_over_the_index_maxima(hed, index):
    layer = "block3_conv3"
    result = look(hed, picture_from_index(index, 1), [layer], index=index, top=40, groups=0)
    maxima = np.asarray(index.maxima(layer), np.float32)
    valid = ~np.isnan(maxima[:, 0])
    assert valid.sum() == 9  # the broken file is not counted
    for unit in result.layers[0].units:
        column = maxima[valid, unit.unit]
        value16 = np.float32(np.float16(unit.value))
        assert unit.percentile == pytest.approx(100.0 * np.mean(column < value16), abs=1e-3)
    # the sorted table (finished index) and the direct count agree on every unit
    values = np.random.default_rng(0).normal(size=maxima.shape[1]).astype(np.float32) * 50
    assert sorted_maxima(index, layer) is not None
    np.testing.assert_allclose(
        unit_percentiles(index, layer, values), percentiles_among(index.maxima(layer), values)
    )


def test_sorting_by_percentile_puts_the_unusual_first():
    maxima = np.array([5.0, 9.0, 1.0, 7.0])
    percentiles = np.array([99.0, 50.0, 99.0, np.nan])
    assert rank_units(maxima, percentiles, 4, "value").tolist() == [1, 3, 0, 2]
    assert rank_units(maxima, percentiles, 4, "percentile").tolist() == [0, 2, 1, 3]
    with pytest.raises(InvalidInput, match="needs a probe index"):
        rank_units(maxima, None, 2, "percentile")
    with pytest.raises(InvalidInput, match="sort must be"):
        rank_units(maxima, None, 2, "size")


def test_groups_reconstruct_with_the_error_sklearn_reports(hed, index):
    (seen,) = see(hed, ["block3_conv3"], picture_from_index(index, 0))
    groups, result = factor_groups(seen, 6)
    assert result is not None and len(groups) == 6
    activations = np.maximum(seen.values, 0).reshape(-1, seen.units).astype(np.float64)
    rebuilt = sum(np.outer(g.map.ravel(), g.vector) for g in groups)
    assert np.linalg.norm(activations - rebuilt) == pytest.approx(result.error, rel=1e-3)
    assert result.error < np.linalg.norm(activations)  # it explains something
    for group in groups:
        assert group.map.shape == seen.values.shape[:2]
        assert group.map.min() >= 0 and group.vector.min() >= 0
        assert np.linalg.norm(group.vector) == pytest.approx(1.0, abs=1e-5)
        assert group.units and group.vector[group.units[0]] == group.vector.max()
    shares = [g.share for g in groups]
    assert sum(shares) == pytest.approx(1.0) and shares == sorted(shares, reverse=True)


def test_factorise_refuses_negative_data_and_skips_silence():
    with pytest.raises(InvalidInput, match="non-negative"):
        factorise(np.array([[1.0, -1.0]]), 2)
    assert factorise(np.zeros((4, 3)), 2) is None
    small = factorise(np.random.default_rng(0).random((3, 5)), 6)
    assert small is not None and small.components.shape == (3, 5)  # K capped at min(P, C)


def test_group_icons_go_through_the_renderer_handed_in(hed, index, tmp_path):
    from wga.vis.vectors import VectorStore

    asked = []

    def renderer(recipes):
        asked.append(list(recipes))
        return [f"icon-{i}.png" for i in range(len(recipes))]

    store = VectorStore(tmp_path / "vectors")
    result = look(
        hed,
        picture_from_index(index, 3),
        LAYERS,
        index=index,
        groups=3,
        renderer=renderer,
        vectors=store,
    )
    assert len(asked) == 1  # one call: the renderer can batch them
    recipes = asked[0]
    assert len(recipes) == sum(len(layer.groups) for layer in result.layers) == 6
    icons = [g.icon for layer in result.layers for g in layer.groups]
    assert icons == [f"icon-{i}.png" for i in range(6)]
    for layer in result.layers:
        for group in layer.groups:
            assert group.recipe.objective == "direction" and group.recipe.layer == layer.layer
            assert group.recipe.vector == group.direction
            np.testing.assert_allclose(store.get(group.direction), group.vector, rtol=1e-6)


def test_look_document_has_the_design_fields(hed, index):
    document = look(hed, picture_from_index(index, 0), LAYERS, index=index, top=3).as_dict()
    assert document["model"] == "vgg16-hed"
    assert document["image"]["file"] == "images/a00.jpg" and document["image"]["id"] == 0
    assert document["image"]["author"] == "Painter 0"
    assert [layer["layer"] for layer in document["layers"]] == LAYERS
    for layer in document["layers"]:
        assert len(layer["units"]) == 3
        assert set(layer["units"][0]) >= {"unit", "value", "percentile", "y", "x"}
        assert len(layer["groups"]) == 6
        assert set(layer["groups"][0]) >= {"share", "units", "map", "icon"}


def test_an_image_from_outside_is_fed_by_the_same_rule(hed, index, corpus_dir, tmp_path):
    from wga.corpus.look import index_rule

    outside = tmp_path / "outside.png"
    Image.open(corpus_dir / "images/a02.jpg").save(outside)  # same pixels, another file
    by_path = picture_from(outside, index_rule(index))
    by_bytes = picture_from(outside.read_bytes(), index_rule(index))
    inside = picture_from_index(index, 2)
    np.testing.assert_array_equal(by_path.batch, inside.batch)
    np.testing.assert_array_equal(by_bytes.batch, inside.batch)
    assert by_path.id is None and by_path.size == inside.size
    with pytest.raises(InvalidInput, match="not a readable image"):
        picture_from(b"GIF89a nonsense", index_rule(index))


def test_images_are_named_by_id_or_corpus_path(index):
    assert resolve_image(index, "3") == 3
    assert resolve_image(index, "images/a03.jpg") == 3
    assert resolve_image(index, "elsewhere/picture.jpg") is None
    with pytest.raises(NotFound, match="ids run 0"):
        resolve_image(index, "99")


def test_without_an_index_there_are_no_percentiles(hed, index):
    result = look(hed, picture_from_index(index, 0), ["block2_pool"], top=2, groups=0)
    assert [u.percentile for u in result.layers[0].units] == [None, None]
    with pytest.raises(NotFound, match="no visualisable layer"):
        look(hed, picture_from_index(index, 0), ["block9_conv"], groups=0)


# -- similar artworks ----------------------------------------------------------------------------


def _brute_cosine(matrix: np.ndarray, query: np.ndarray) -> dict[int, float]:
    matrix = np.asarray(matrix, np.float64)
    query = np.asarray(query, np.float64)
    out = {}
    for row, values in enumerate(matrix):
        if np.isnan(values).any():
            continue
        norm = np.linalg.norm(values)
        out[row] = float(values @ query / (norm * np.linalg.norm(query))) if norm else 0.0
    return out


def test_similar_by_content_equals_brute_force_cosine_query_excluded_ties_by_id(index):
    layer = "block3_conv3"
    twin, original = 8, 4  # byte-identical files: equal rows
    stored = np.asarray(index.maxima(layer), np.float32)
    np.testing.assert_array_equal(stored[twin], stored[original])
    for query in (0, original):
        found = similar(index, layer, by="content", k=20, image=query)
        expected = _brute_cosine(stored, stored[query])
        expected.pop(query)
        order = sorted(expected, key=lambda row: (-round(expected[row], 6), row))
        assert [m.image for m in found] == order
        for match in found:
            assert match.score == pytest.approx(expected[match.image], abs=2e-6)
        assert query not in [m.image for m in found]
    # the twin of the original is its best match, with a cosine of 1
    best = similar(index, layer, k=1, image=original)[0]
    assert (best.image, best.score, best.file) == (twin, 1.0, "images/a08.jpg")


def test_search_ties_nan_rows_and_zero_queries():
    rows = np.array(
        [[1, 0, 0], [0, 1, 0], [1, 0, 0], [np.nan, np.nan, np.nan], [2, 0, 0], [0, 0, 0]],
        np.float16,
    )
    search = Search(rows)
    found = search.query(np.array([1.0, 0.0, 0.0]), k=4, exclude=0)
    assert found == [(2, 1.0), (4, 1.0), (1, 0.0), (5, 0.0)]  # ties by row, NaN row never
    assert search.query(np.array([1.0, 0.0, 0.0]), k=10) == [
        (0, 1.0),
        (2, 1.0),
        (4, 1.0),
        (1, 0.0),
        (5, 0.0),
    ]
    with pytest.raises(InvalidInput, match="all zero"):
        search.query(np.zeros(3), k=2)
    with pytest.raises(InvalidInput, match="same layer"):
        search.query(np.ones(4), k=2)


def test_style_statistics_are_mean_then_std_over_positions():
    output = np.random.default_rng(1).random((3, 4, 5)).astype(np.float32)
    stats = style_statistics(output)
    flat = output.reshape(-1, 5)
    np.testing.assert_allclose(stats[:5], flat.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats[5:], flat.std(axis=0), rtol=1e-5)


def test_similar_refuses_what_it_cannot_answer(index):
    with pytest.raises(InvalidInput, match="--by"):
        similar(index, "block2_pool", by="colour", image=0)
    with pytest.raises(InvalidInput, match="--k"):
        similar(index, "block2_pool", k=0, image=0)
    with pytest.raises(NotFound, match="did not record"):
        similar(index, "block1_conv1", image=0)
    broken = resolve_image(index, "images/broken.jpg")
    with pytest.raises(InvalidInput, match="not read by the probe"):
        similar(index, "block2_pool", image=broken)


# -- the CLI -------------------------------------------------------------------------------------


def test_look_cli_json_has_the_design_fields_and_out_writes_the_files(index, tmp_path, capsys):
    from wga.cli import main

    out = tmp_path / "look"
    arguments = ["look", "--index", str(index.root), "--image", "images/a01.jpg", "--top", "3"]
    assert main([*arguments, "--groups", "2", "--json", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    document = json.loads(printed[printed.index("{") :])
    assert document["model"] == "vgg16-hed"
    assert document["image"]["file"] == "images/a01.jpg" and document["image"]["id"] == 1
    for layer in document["layers"]:
        assert {"layer", "units", "groups"} <= layer.keys()
        for unit in layer["units"]:
            assert {"unit", "value", "percentile", "y", "x"} <= unit.keys()
            assert 0 <= unit["percentile"] <= 100
        assert len(layer["groups"]) == 2
        assert {"share", "units", "map", "icon"} <= layer["groups"][0].keys()
    assert (out / "contact.png").stat().st_size > 0
    assert json.loads((out / "look.json").read_text())["image"]["id"] == 1
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert len(overlays) == 2 * (3 + 2) and "block2_pool-group0.jpg" in overlays


def test_look_cli_with_a_model_and_a_file_has_no_percentiles(corpus_dir, capsys):
    from wga.cli import main

    image = str(corpus_dir / "images/a02.jpg")
    base = ["look", "--model", "vgg16-hed", "--image", image]
    layer = ["--layers", "block2_pool"]
    assert main([*base, *layer, "--top", "2", "--groups", "0", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [u["percentile"] for u in document["layers"][0]["units"]] == [None, None]
    assert document["image"]["id"] is None
    assert main(base) == 2
    assert "--layers is needed" in capsys.readouterr().err
    assert main([*base, *layer, "--sort", "percentile"]) == 2
    assert "needs a probe index" in capsys.readouterr().err


def test_similar_cli_json_matches_the_library_and_takes_a_file(index, corpus_dir, capsys):
    from wga.cli import main

    base = ["similar", "--index", str(index.root), "--layer", "block3_conv3", "--k", "3"]
    assert main([*base, "--image", "4", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["layer"] == "block3_conv3" and document["by"] == "content"
    expected = similar(index, "block3_conv3", k=3, image=4)
    assert [(r["file"], r["score"]) for r in document["results"]] == [
        (m.file, m.score) for m in expected
    ]
    # the same pixels from a file outside the index: found itself first, with a cosine of ~1
    assert main([*base, "--image", str(corpus_dir / "images/a04.jpg"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert {results[0]["file"], results[1]["file"]} == {"images/a04.jpg", "images/a08.jpg"}
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_look_and_similar_cli_errors_name_the_problem(index, tmp_path, capsys):
    from wga.cli import main

    assert main(["look", "--index", str(index.root), "--image", "nowhere.jpg"]) == 2
    assert "neither an image of probe" in capsys.readouterr().err
    assert main(["look", "--index", str(index.root), "--image", "1", "--icons"]) == 2
    assert "--out" in capsys.readouterr().err
    base = ["similar", "--index", str(index.root), "--image", "1"]
    assert main([*base, "--layer", "block3_conv4"]) == 2
    assert "block3_conv3" in capsys.readouterr().err
    assert main([*base, "--layer", "block3_conv3", "--k", "0"]) == 2
    assert "--k must be" in capsys.readouterr().err


# -- content, not frames -------------------------------------------------------------------------


def test_border_margin_zero_keeps_every_valid_position_and_one_keeps_whole_fields(hed):
    from wga.corpus.receptive import border_mask, inside_share, receptive_field

    field = receptive_field(hed.model, "block4_conv1", 224)
    shapes = np.array([[224, 224], [150, 224], [224, 97], [0, 0]])
    valid = valid_grid(shapes, (28, 28), 224)
    none = border_mask(field, shapes, (28, 28), 224, 0.0)
    for mask, (rows, cols) in zip(none, valid, strict=True):
        expected = np.zeros((28, 28), bool)
        expected[:rows, :cols] = True
        np.testing.assert_array_equal(mask, expected)
    whole = border_mask(field, shapes, (28, 28), 224, 1.0)
    for mask, (height, width) in zip(whole[:3], shapes[:3], strict=True):
        ys, xs = np.nonzero(mask)
        assert len(ys)
        assert inside_share(field, np.array([height]), 28, 0)[0, ys].min() >= 1 - 1e-6
        assert inside_share(field, np.array([width]), 28, 1)[0, xs].min() >= 1 - 1e-6
    assert not whole[3].any()  # an unreadable image keeps nothing


def test_border_margin_treats_all_four_sides_alike(hed):
    """The feed pads only the bottom and the right, but the margin is measured from the picture's
    own edges: the band dropped at the top equals the band dropped at the bottom."""
    from wga.corpus.receptive import border_mask, receptive_field

    field = receptive_field(hed.model, "block4_conv1", 224)
    square = border_mask(field, np.array([[224, 224]]), (28, 28), 224, 0.5)[0]
    np.testing.assert_array_equal(square, square[::-1, ::-1])
    for height in (150, 131, 97):
        mask = border_mask(field, np.array([[height, 224]]), (28, 28), 224, 0.5)[0]
        rows = np.nonzero(mask.any(axis=1))[0]
        centres = field.start[0] + rows * field.jump[0]
        top, bottom = centres[0] - (-0.5), (height - 0.5) - centres[-1]
        assert abs(top - bottom) <= field.jump[0]  # within one step of the grid
        assert top >= 0.5 * field.size[0] / 2 - 1e-6  # the margin: half the half-field inside


def test_a_field_wider_than_the_picture_keeps_its_most_central_positions(hed):
    from wga.corpus.receptive import border_mask, receptive_field

    field = receptive_field(hed.model, "block5_conv3", 224)
    assert field.size[0] > 150
    mask = border_mask(field, np.array([[60, 224]]), (14, 14), 224, 1.0)[0]
    assert mask.any() and mask.any(axis=1).sum() >= 1


def test_look_with_a_margin_reports_only_kept_positions(hed, index):
    from wga.corpus.receptive import border_mask

    picture = picture_from_index(index, 5)
    result = look(hed, picture, ["block3_conv3"], top=30, groups=0, margin=0.5)
    assert result.margin == 0.5
    field = index.field("block3_conv3")
    (layer,) = result.layers
    mask = border_mask(field, np.asarray([picture.shape]), layer.grid, index.side, 0.5)[0]
    for unit in result.layers[0].units:
        assert mask[unit.grid]
    (seen,) = see(hed, ["block3_conv3"], picture, margin=0.5)
    values = np.where(seen.kept[..., None], seen.values, -np.inf)
    for unit in result.layers[0].units:
        assert unit.value == pytest.approx(float(values[..., unit.unit].max()))


# -- style statistics and the border margin in the probe -----------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_stored_style_statistics_equal_a_brute_force_pass(hed, index, layer):
    style = np.asarray(index.style(layer), np.float32)
    assert style.shape == (len(index.images()), 2 * index.layer(layer)["units"])
    assert np.isnan(style[resolve_image(index, "images/broken.jpg")]).all()
    for image_id in (0, 3, 7):
        values = _brute_force(hed, index, image_id, layer)
        output = np.maximum(values, 0) if layer == "block3_conv3" else values
        flat = output.reshape(-1, output.shape[-1]).astype(np.float64)
        expected = np.concatenate([flat.mean(axis=0), flat.std(axis=0)])
        np.testing.assert_allclose(style[image_id], expected, rtol=2e-3, atol=2e-2)
        (seen,) = see(hed, [layer], picture_from_index(index, image_id))
        np.testing.assert_allclose(query_features(seen, "style"), expected, rtol=2e-3, atol=2e-2)


def test_similar_by_style_equals_brute_force_cosine(index):
    layer = "block2_pool"
    stored = np.asarray(index.style(layer), np.float32)
    found = similar(index, layer, by="style", k=20, image=2)
    expected = _brute_cosine(stored, stored[2])
    expected.pop(2)
    order = sorted(expected, key=lambda row: (-round(expected[row], 6), row))
    assert [m.image for m in found] == order
    for match in found:
        assert match.score == pytest.approx(expected[match.image], abs=2e-6)
    best = similar(index, layer, by="style", k=1, image=4)[0]
    assert (best.image, best.score) == (8, 1.0)  # the byte-identical copy


def test_a_probe_with_a_border_margin_records_it_and_agrees_with_look(hed, corpus_dir, tmp_path):
    out = tmp_path / "margin"
    corpus = open_corpus(corpus_dir)
    framed = run_probe(
        hed, corpus, ["block3_conv3"], out, k=3, batch_size=4, progress=False, border_margin=0.5
    )
    assert framed.description["border_margin"] == 0.5
    for image_id in (1, 6):
        result = look(
            hed,
            picture_from_index(framed, image_id),
            ["block3_conv3"],
            index=framed,
            top=256,
            groups=0,
        )
        assert result.margin == 0.5
        stored = np.asarray(framed.maxima("block3_conv3")[image_id], np.float32)
        for unit in result.layers[0].units:
            assert unit.value == pytest.approx(float(stored[unit.unit]), rel=2e-3, abs=2e-2)
    with pytest.raises(InvalidInput, match="border-margin"):
        run_probe(hed, corpus, ["block3_conv3"], out, k=3, progress=False, border_margin=0.25)
    with pytest.raises(InvalidInput, match="share from 0 to 1"):
        run_probe(hed, corpus, ["block3_conv3"], tmp_path / "x", progress=False, border_margin=2)
