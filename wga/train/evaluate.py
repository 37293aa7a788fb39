"""Honest evaluation of a fine-tuned run: numbers, plots and the images behind them.

The 2018 code never reported an accuracy. Here every run gets, for val and (when present) test,
computed on centre-cropped, un-augmented images:

* accuracy, balanced accuracy, loss, per-class precision / recall / F1, the confusion matrix;
* the **majority-class baseline** (always answer the most frequent training class) — the first
  number to beat (SemArt's TYPE majority is .379, see ``shared/notes/wga.md``);
* plots: training curves from the CSV log, a confusion matrix per split;
* a **contact sheet per class**: the images the model finds most typical of the class, and those
  it most confidently puts into the class although they belong elsewhere — what an art
  historian needs to judge what the model learned;
* ``predictions-<split>.csv``: every image with its true and predicted class.

Plots use Matplotlib's Agg canvas directly (no pyplot), so nothing changes a notebook's backend.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from wga.atomic import atomic_path, write_json_atomic, write_text_atomic
from wga.figures import new_figure, save_figure
from wga.run import LOG_FILE, METRICS_FILE, MODEL_FILE
from wga.train.pipeline import ImageDataset, make_dataset

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

CURVES_FILE = "curves.png"
CONTACT_DIR = "contact"
CONTACT_PER_ROW = 8  # images per row of a contact sheet
THUMB = 128  # contact-sheet thumbnail side, px
CAPTION = 30  # caption height under a thumbnail, px
CORRECT_RGB = (46, 160, 67)
WRONG_RGB = (215, 58, 73)


def predict(
    model: keras.Model,
    paths: list[str],
    labels: np.ndarray,
    *,
    num_classes: int,
    size: int,
    preprocessing: str,
    batch: int,
) -> np.ndarray:
    """Class probabilities for ``paths`` in order, from centre crops (no augmentation)."""
    data = make_dataset(
        paths,
        labels,
        num_classes=num_classes,
        size=size,
        batch_size=batch,
        preprocessing=preprocessing,
        training=False,
        cache=False,  # type: ignore[arg-type]
    )
    probabilities = model.predict(data.map(lambda x, _y: x), verbose=0)
    return np.asarray(probabilities, dtype="float64")


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, classes: list[str], majority: int
) -> dict[str, Any]:
    """Accuracy, loss, per-class precision/recall/F1, confusion matrix, majority baseline.

    ``majority`` is the label of the most frequent *training* class: always answering it is the
    baseline any model must beat. Precision of a never-predicted class is 0 (sklearn's
    ``zero_division=0``).
    """
    labels = np.asarray(labels, dtype="int64")
    count = len(classes)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((count, count), dtype="int64")
    np.add.at(confusion, (labels, predicted), 1)
    support, predicted_totals = confusion.sum(axis=1), confusion.sum(axis=0)
    correct = np.diag(confusion)
    precision = np.divide(
        correct, predicted_totals, out=np.zeros(count), where=predicted_totals > 0
    )
    recall = np.divide(correct, support, out=np.zeros(count), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(count), where=denominator > 0)
    picked = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    present = support > 0
    return {
        "images": len(labels),
        "accuracy": float(correct.sum() / max(len(labels), 1)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "loss": loss,
        "majority_baseline": {
            "class": classes[majority],
            "accuracy": float(support[majority] / max(len(labels), 1)),
        },
        "per_class": {
            name: {
                "precision": float(precision[index]),
                "recall": float(recall[index]),
                "f1": float(f1[index]),
                "support": int(support[index]),
                "predicted": int(predicted_totals[index]),
            }
            for index, name in enumerate(classes)
        },
        "confusion_matrix": confusion.tolist(),
    }


# -- plots -------------------------------------------------------------------------------------
def read_log(path: Path) -> dict[str, list[float]]:
    """The CSV log as columns of floats (epochs counted from 1)."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(float("nan"))
    if "epoch" in columns:
        columns["epoch"] = [epoch + 1 for epoch in columns["epoch"]]
    return columns


def plot_training_curves(log_path: Path, out: Path, *, head_epochs: int = 0) -> None:
    """Loss and accuracy per epoch, train and val; a line where fine-tuning begins."""
    columns = read_log(log_path)
    epochs = columns.get("epoch", [])
    figure = new_figure(10, 4)
    for index, metric in enumerate(("loss", "accuracy")):
        axes = figure.add_subplot(1, 2, index + 1)
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + metric in columns:
                axes.plot(
                    epochs,
                    columns[prefix + metric],
                    style,
                    marker="o",
                    label=f"{'val' if prefix else 'train'} {metric}",
                )
        if 0 < head_epochs < (max(epochs) if epochs else 0):
            axes.axvline(head_epochs + 0.5, color="grey", linewidth=1, linestyle=":")
            axes.text(
                head_epochs + 0.6,
                axes.get_ylim()[1],
                "fine-tuning",
                va="top",
                fontsize=8,
                color="grey",
            )
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.legend()
        axes.grid(alpha=0.3)
    save_figure(figure, out)


def plot_confusion(confusion: list[list[int]], classes: list[str], out: Path, title: str) -> None:
    """Row-normalised confusion matrix (recall on the diagonal) with the counts written in."""
    matrix = np.asarray(confusion, dtype="float64")
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    side = 2.5 + 0.6 * len(classes)
    figure = new_figure(side + 1, side)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = np.arange(len(classes))
    axes.set_xticks(ticks, classes, rotation=45, ha="right")
    axes.set_yticks(ticks, classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for row in range(len(classes)):
        for column in range(len(classes)):
            colour = "white" if normalised[row, column] > 0.5 else "black"
            axes.text(
                column,
                row,
                f"{int(matrix[row, column])}",
                ha="center",
                va="center",
                color=colour,
                fontsize=9,
            )
    save_figure(figure, out)


# -- contact sheets ----------------------------------------------------------------------------
def _thumbnail(path: str, caption: str, correct: bool) -> Any:

    tile = Image.new("RGB", (THUMB, THUMB + CAPTION), "white")
    with Image.open(path) as image:
        image.draft("RGB", (THUMB * 2, THUMB * 2))
        picture = ImageOps.fit(image.convert("RGB"), (THUMB - 8, THUMB - 8))
    frame = Image.new("RGB", (THUMB, THUMB), CORRECT_RGB if correct else WRONG_RGB)
    frame.paste(picture, (4, 4))
    tile.paste(frame, (0, 0))
    draw = ImageDraw.Draw(tile)
    for line_index, line in enumerate(caption.split("\n")[:2]):
        draw.text((3, THUMB + 2 + 13 * line_index), line[:24], fill="black")
    return tile


def contact_sheet(
    class_index: int,
    classes: list[str],
    paths: list[str],
    labels: np.ndarray,
    probabilities: np.ndarray,
    out: Path,
    *,
    per_row: int = CONTACT_PER_ROW,
) -> dict[str, list[str]]:
    """Two rows for one class: the highest-scoring images, and the most confident mistakes.

    Row 1: images with the highest probability of the class (green frame: truly of the class,
    red: not). Row 2: images predicted as the class that belong to another, most confident
    first. Returns the file names shown, for ``metrics.json``.
    """

    name = classes[class_index]
    scores = probabilities[:, class_index]
    predicted = probabilities.argmax(axis=1)
    top = np.argsort(-scores, kind="stable")[:per_row]
    wrong = np.flatnonzero((predicted == class_index) & (labels != class_index))
    wrong = wrong[np.argsort(-scores[wrong], kind="stable")][:per_row]
    title_height = 24
    sheet = Image.new("RGB", (per_row * THUMB, 2 * (THUMB + CAPTION + title_height)), "white")
    draw = ImageDraw.Draw(sheet)
    rows = (
        (f"{name}: highest scores", top),
        (f"{name}: most confidently wrong (predicted {name}, true class differs)", wrong),
    )
    for row_index, (title, indices) in enumerate(rows):
        y = row_index * (THUMB + CAPTION + title_height)
        draw.text((4, y + 6), title if len(indices) else f"{title}: none", fill="black")
        for column, index in enumerate(indices):
            caption = f"p={scores[index]:.2f}\ntrue: {classes[labels[index]]}"
            tile = _thumbnail(paths[index], caption, bool(labels[index] == class_index))
            sheet.paste(tile, (column * THUMB, y + title_height))
    with atomic_path(out) as temp:
        sheet.save(temp, quality=90)
    return {
        "top": [Path(paths[i]).name for i in top],
        "confidently_wrong": [Path(paths[i]).name for i in wrong],
    }


def _write_predictions(
    path: Path, paths: list[str], labels: np.ndarray, probabilities: np.ndarray, classes: list[str]
) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", "true", "predicted", "confidence", *classes])
    for index, image_path in enumerate(paths):
        row = probabilities[index]
        writer.writerow(
            [
                image_path,
                classes[labels[index]],
                classes[int(row.argmax())],
                f"{row.max():.4f}",
                *(f"{value:.4f}" for value in row),
            ]
        )
    write_text_atomic(path, text.getvalue())


def _evaluate_splits(
    dataset: ImageDataset,
    out: Path,
    predict_split: Callable[[list[str], np.ndarray], np.ndarray],
) -> tuple[dict[str, tuple[list[str], np.ndarray, np.ndarray]], dict[str, Any]]:
    """Predictions (paths, labels, probabilities: ``predict_split(paths, labels)``) and metrics
    of val and test; each split's confusion plot and predictions CSV written into ``out``."""
    classes = dataset.classes
    majority = int(dataset.class_counts("train").argmax())
    splits: dict[str, Any] = {}
    results: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}
    for split in ("val", "test"):
        if split not in dataset.splits:
            continue
        paths, labels = dataset.files(split)
        probabilities = predict_split(paths, labels)
        results[split] = (paths, labels, probabilities)
        splits[split] = classification_metrics(labels, probabilities, classes, majority)
        plot_confusion(
            splits[split]["confusion_matrix"],
            classes,
            out / f"confusion-{split}.png",
            f"{split}: accuracy {splits[split]['accuracy']:.3f} "
            f"(majority {splits[split]['majority_baseline']['accuracy']:.3f})",
        )
        _write_predictions(out / f"predictions-{split}.csv", paths, labels, probabilities, classes)
        log.info(
            "%s accuracy %.3f (majority-class baseline %.3f, %d images)",
            split,
            splits[split]["accuracy"],
            splits[split]["majority_baseline"]["accuracy"],
            len(paths),
        )
    return results, splits


def evaluate_run(
    model: keras.Model,
    dataset: ImageDataset,
    out: Path,
    *,
    size: int,
    preprocessing: str,
    batch: int,
    settings: dict[str, Any],
    class_weights: dict[int, float],
    training: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate on val and test, write plots, contact sheets and ``metrics.json``; return it."""
    out = Path(out)
    classes = dataset.classes

    def predict_split(paths: list[str], labels: np.ndarray) -> np.ndarray:
        options = {"size": size, "preprocessing": preprocessing, "batch": batch}
        return predict(model, paths, labels, num_classes=len(classes), **options)

    results, splits = _evaluate_splits(dataset, out, predict_split)
    log_path = out / LOG_FILE
    if log_path.exists():
        plot_training_curves(
            log_path, out / CURVES_FILE, head_epochs=settings.get("head_epochs", 0)
        )
    sheet_split = "test" if "test" in results else "val"
    paths, labels, probabilities = results[sheet_split]
    sheets = {
        name: contact_sheet(
            index, classes, paths, labels, probabilities, out / CONTACT_DIR / f"{name}.jpg"
        )
        for index, name in enumerate(classes)
    }
    metrics = {
        "val_accuracy": splits["val"]["accuracy"],
        "test_accuracy": splits["test"]["accuracy"] if "test" in splits else None,
        "majority_baseline_accuracy": {
            s: v["majority_baseline"]["accuracy"] for s, v in splits.items()
        },
        "classes": classes,
        "counts": {split: dataset.counts.get(split, {}) for split in dataset.splits},
        "class_weights": {classes[i]: weight for i, weight in class_weights.items()},
        **splits,
        "training": training,
        "settings": settings,
        "contact_sheets": {"split": sheet_split, "classes": sheets},
        "files": {
            "model": MODEL_FILE,
            "log": LOG_FILE,
            "curves": CURVES_FILE if log_path.exists() else None,
            "confusion": {split: f"confusion-{split}.png" for split in splits},
            "predictions": {split: f"predictions-{split}.csv" for split in splits},
            "contact_sheets": {name: f"{CONTACT_DIR}/{name}.jpg" for name in classes},
        },
    }
    write_json_atomic(out / METRICS_FILE, metrics)
    return metrics
