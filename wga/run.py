"""A fine-tuning run folder, as one typed thing: its files' names, and ``model.json`` as
:class:`RunInfo`.

``wga finetune`` writes it, evaluation writes its metrics into it, and the model registry
(:mod:`wga.models`) reads it to offer the run as a model::

    RUN/model.keras      the fine-tuned model (float32, free input size)
    RUN/model.json       RunInfo: base model, preprocessing, input size, classes, colours …
    RUN/classes.json     the class names in label order (also in model.json)
    RUN/log.csv          one row per epoch (Keras' CSVLogger)
    RUN/metrics.json     val/test metrics, settings, file index (``wga.train.evaluate``)
    RUN/checkpoints/     last.keras, best.keras, state.json: what ``--resume`` continues from

Shared ground: imports nothing of wga above the root. Adding a field to ``model.json``: one
field of :class:`RunInfo` (with a default, so older runs still read), set where finetune
writes it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wga.atomic import write_json_atomic
from wga.errors import InvalidInput

MODEL_FILE = "model.keras"
INFO_FILE = "model.json"
CLASSES_FILE = "classes.json"
LOG_FILE = "log.csv"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
CACHE_DIR = "cache"  # decoded training images while a run trains; removed at its end


@dataclass
class RunInfo:
    """``model.json``: how to feed the run's model and what it was trained on."""

    base_model: str = ""
    preprocessing: str = "tf"
    input_size: int = 299
    classes: list[str] | None = None
    title: str = ""
    description: str = ""
    color_correlation: list[list[float]] | None = None  # 3×3 sqrt-covariance of training images
    class_layer: str = "predictions"
    dataset: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunInfo:
        """Fields that ``data`` lacks take their defaults; keys this version does not know are
        ignored (a run written by a newer wga still loads)."""
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (nothing is read or created until asked)."""

    root: Path

    @classmethod
    def of_model(cls, model_path: Path) -> RunFolder | None:
        """The run that ``model_path`` belongs to, if it is a run's ``model.keras``."""
        return cls(model_path.parent) if model_path.name == MODEL_FILE else None

    @property
    def model(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def info_path(self) -> Path:
        return self.root / INFO_FILE

    @property
    def classes_path(self) -> Path:
        return self.root / CLASSES_FILE

    @property
    def log(self) -> Path:
        return self.root / LOG_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINT_DIR

    @property
    def cache(self) -> Path:
        return self.root / CACHE_DIR

    def read_info(self) -> RunInfo | None:
        """``model.json`` (``None`` when absent); the classes from ``classes.json`` when
        ``model.json`` lacks them."""
        info = None
        if self.info_path.exists():
            try:
                info = RunInfo.from_json(json.loads(self.info_path.read_text()))
            except (json.JSONDecodeError, TypeError) as error:
                raise InvalidInput(
                    f"{self.info_path} is not a valid run description ({error}); "
                    "re-save it or delete it to use defaults"
                ) from error
        if self.classes_path.exists() and (info is None or info.classes is None):
            info = info or RunInfo()
            info.classes = list(json.loads(self.classes_path.read_text()))
        return info

    def write_info(self, info: RunInfo) -> None:
        """``model.json`` and ``classes.json``, each written atomically."""
        write_json_atomic(self.info_path, info.to_json())
        write_json_atomic(self.classes_path, info.classes)
