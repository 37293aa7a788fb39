"""Fine-tune a registry model on a WGA dataset: a new head, two phases, resumable, evaluated.

The 2018 recipe (``shared/notes/original.md``): ImageNet InceptionV3 without its top, a new head
GlobalAveragePooling2D → Dense(1024, relu) → Dense(classes, softmax), the base frozen up to and
including ``mixed5``, SGD lr 1e-4 momentum 0.9, 10 epochs, batch 32. Kept as the defaults, with
what is plainly better:

* **phase 1** trains only the new head (Adam, lr 1e-3) so that the random head's large gradients
  do not wreck the pretrained layers; **phase 2** fine-tunes from a named layer with the paper's
  SGD. BatchNormalization layers stay frozen (inference statistics), the usual practice when
  fine-tuning with small batches.
* every epoch is **checkpointed** (model + optimizer state) and a run continues after an
  interruption with ``resume=True``; **early stopping** on the validation loss, the best weights
  are kept; a CSV log of every epoch.
* **evaluation** on val and test (:mod:`wga.train.evaluate`), never on augmented images.

A run folder (:mod:`wga.run`) is a model of the registry (:mod:`wga.models`): ``model.keras``
(float32, free input size), ``model.json`` (base, preprocessing, size, classes, colour
correlation), ``classes.json``.

TensorFlow and Keras are imported inside the functions that need them: the CLI reads this
module's defaults to build ``wga finetune --help``, which must answer without starting TensorFlow.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from wga.atomic import atomic_path, write_json_atomic
from wga.errors import InvalidInput, NotFound
from wga.models import ModelRegistry, ModelSpec, default_registry
from wga.quiet import silence_tensorflow
from wga.run import CHECKPOINT_DIR, RunFolder, RunInfo
from wga.train.evaluate import evaluate_run
from wga.train.pipeline import (
    ImageDataset,
    choose_cache,
    class_weights,
    color_correlation,
    make_dataset,
    read_dataset,
)

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

# Offert 2018, train.ipynb: "first 164 layers frozen", i.e. up to and including mixed5.
PAPER_FREEZE_THROUGH = "mixed5"
PAPER_LR = 1e-4  # Offert 2018, train.ipynb: SGD(lr=1e-4, momentum=0.9)
PAPER_MOMENTUM = 0.9
PAPER_EPOCHS = 10  # Offert 2018, train.ipynb
PAPER_BATCH = 32  # Offert 2018, train.ipynb
PAPER_DENSE_UNITS = 1024  # Offert 2018, train.ipynb: Dense(1024, activation="relu")
HEAD_LR = 1e-3  # Adam's default; the phase-1 head starts from random weights
HEAD_EPOCHS = 2
DROPOUT = 0.3
PATIENCE = 3  # epochs without a better val_loss before early stopping
MIN_SIZE = 32  # VGG's five poolings leave 1×1 at 32 px; InceptionV3 needs 75

# The last layer frozen in phase 2, per base: the paper's mixed5 for InceptionV3, elsewhere the
# boundary before the last stage (the block the paper's choice corresponds to).
DEFAULT_FREEZE_THROUGH: dict[str, str] = {
    "inceptionv3": PAPER_FREEZE_THROUGH,
    "vgg16": "block4_pool",
    "vgg19": "block4_pool",
    "vgg16-hed": "block4_pool",
    "resnet50": "conv4_block6_out",
    "xception": "block12_sepconv3_bn",
    "mobilenetv2": "block_12_add",
    "densenet121": "pool4_pool",
    "efficientnetb0": "block5c_add",
}
FALLBACK_FROZEN_FRACTION = 0.7  # other bases (e.g. a fine-tuned run): freeze the first 70 %
MIN_INPUT_SIZE = {"inceptionv3": 75, "xception": 71}

LAST_CHECKPOINT = "last.keras"
BEST_CHECKPOINT = "best.keras"
STATE_FILE = "state.json"
HEAD_LAYERS = ("head_pool", "head_norm", "head_dense", "head_dropout", "predictions")


@dataclass
class FinetuneConfig:
    """Everything that defines a run; recorded verbatim in ``metrics.json``."""

    data: Path
    out: Path
    model: str = "inceptionv3"
    epochs: int = PAPER_EPOCHS  # in all, phase 1 included
    head_epochs: int = HEAD_EPOCHS  # the first epochs train only the head
    size: int | None = None  # square input side; default: the base's native size
    batch: int = PAPER_BATCH  # global batch (split across GPUs)
    lr: float = PAPER_LR
    momentum: float = PAPER_MOMENTUM
    head_lr: float = HEAD_LR
    unfreeze_from: str | None = None  # first layer trained in phase 2; default per base
    dense_units: int = PAPER_DENSE_UNITS
    dropout: float = DROPOUT
    patience: int = PATIENCE
    augment: bool = True
    seed: int = 0
    title: str | None = None
    mixed_precision: bool | None = None  # None: on GPU yes, on CPU no
    resume: bool = False

    def __post_init__(self) -> None:
        # Absolute paths: a resumed run compares them, metrics.json records them.
        self.data, self.out = Path(self.data).resolve(), Path(self.out).resolve()
        if self.epochs < 1:
            raise InvalidInput(f"--epochs must be at least 1 (got {self.epochs})")
        if not 0 <= self.head_epochs <= self.epochs:
            raise InvalidInput(
                f"--head-epochs must be between 0 and --epochs ({self.epochs}); "
                f"got {self.head_epochs}"
            )
        if self.batch < 1:
            raise InvalidInput(f"--batch must be at least 1 (got {self.batch})")
        if self.size is not None and self.size < MIN_SIZE:
            raise InvalidInput(f"--size must be at least {MIN_SIZE} px (got {self.size})")
        if self.lr <= 0 or self.head_lr <= 0:
            raise InvalidInput("learning rates must be positive")
        if not 0 <= self.dropout < 1:
            raise InvalidInput(f"dropout must be in [0, 1) (got {self.dropout})")

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["data"], values["out"] = str(self.data), str(self.out)
        return values


@dataclass
class TrainingSetup:
    """Where and in which precision training runs."""

    strategy: Any  # tf.distribute.Strategy
    replicas: int
    dtype_policy: str
    devices: list[str] = field(default_factory=list)


def training_setup(mixed_precision: bool | None = None) -> TrainingSetup:
    """MirroredStrategy over several GPUs, mixed precision on GPU, plain float32 on CPU.

    float16 on CPU is slower and less exact than float32, so it is never used there.
    """
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        strategy: Any = tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    else:
        strategy = tf.distribute.get_strategy()
    use_mixed = bool(gpus) if mixed_precision is None else mixed_precision and bool(gpus)
    if mixed_precision and not gpus:
        log.warning("mixed precision asked for but no GPU found: training in float32")
    return TrainingSetup(
        strategy=strategy,
        replicas=int(strategy.num_replicas_in_sync),
        dtype_policy="mixed_float16" if use_mixed else "float32",
        devices=[gpu.name for gpu in gpus] or ["CPU"],
    )


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy for the block and restore the previous one."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _replace_policies(config: Any, name: str) -> Any:
    """A copy of a Keras config with every layer's dtype policy set to ``name``."""
    if isinstance(config, dict):
        if config.get("class_name") in {"DTypePolicy", "FloatDTypePolicy"} and isinstance(
            config.get("config"), dict
        ):
            return {**config, "config": {**config["config"], "name": name}}
        return {key: _replace_policies(value, name) for key, value in config.items()}
    if isinstance(config, list):
        return [_replace_policies(value, name) for value in config]
    return config


def with_dtype_policy(model: keras.Model, name: str) -> keras.Model:
    """A new functional model, same layers and weights, every layer computing in ``name``.

    Used twice: to copy a registry base into the training precision (never touching the
    registry's cached model), and to export a mixed-precision model as float32, which renders
    and predicts on CPU as well.
    """
    import keras

    config = _replace_policies(model.get_config(), name)
    with dtype_policy(name):
        copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def build_model(
    base: keras.Model,
    num_classes: int,
    *,
    dense_units: int = PAPER_DENSE_UNITS,
    dropout: float = DROPOUT,
) -> keras.Model:
    """The base's feature maps → GAP → LayerNorm → Dense(relu) → Dropout → Dense(softmax).

    The paper's head plus a normalisation after the pooling: bases differ in feature scale by
    orders of magnitude (vgg16-hed's block5 activations reach the hundreds, InceptionV3's a few
    units), and a head fed raw features diverges at any one learning rate. LayerNormalization
    rather than BatchNormalization: it has no moving statistics, so a short run (or a small
    dataset) behaves the same in training and in evaluation.

    The model is flat (the base's layers are its layers), so every base layer stays
    visualisable by name, and it keeps the base's free input size. The class layer computes in
    float32 even under mixed precision: a float16 softmax loses small probabilities.
    """
    import keras

    features = base.outputs[0]
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    x = keras.layers.LayerNormalization(name="head_norm")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)
    return keras.Model(base.inputs, outputs, name="finetuned")


def freeze_index(model: keras.Model, base_name: str, unfreeze_from: str | None) -> int:
    """Index of the first layer of ``model`` trained in phase 2.

    ``unfreeze_from`` names that layer; by default the layer after the base's
    :data:`DEFAULT_FREEZE_THROUGH` entry (InceptionV3: after ``mixed5``, as in the paper).
    """
    names = [layer.name for layer in model.layers]
    if unfreeze_from is not None:
        if unfreeze_from not in names:
            from wga.errors import closest_names

            candidates = [name for name in names if name not in HEAD_LAYERS]
            raise NotFound(
                f"--unfreeze-from {unfreeze_from!r} is not a layer of {base_name!r}: "
                f"{closest_names(unfreeze_from, candidates)} (python -m wga models --layers "
                f"{base_name})"
            )
        return names.index(unfreeze_from)
    through = DEFAULT_FREEZE_THROUGH.get(base_name)
    if through in names:
        return names.index(through) + 1
    head_start = names.index(HEAD_LAYERS[0])
    index = int(head_start * FALLBACK_FROZEN_FRACTION)
    log.info("no default freeze point for %s: training from layer %s", base_name, names[index])
    return index


def set_phase(model: keras.Model, phase: int, first_trainable: int) -> None:
    """Phase 1: only the head trains. Phase 2: layers from ``first_trainable`` on, BN frozen."""
    import keras

    head_start = [layer.name for layer in model.layers].index(HEAD_LAYERS[0])
    start = head_start if phase == 1 else first_trainable
    for index, layer in enumerate(model.layers):
        trainable = index >= start
        if isinstance(layer, keras.layers.BatchNormalization) and index < head_start:
            trainable = False
        layer.trainable = trainable


def _compile(model: keras.Model, phase: int, config: FinetuneConfig) -> None:
    import keras

    if phase == 1:
        optimizer: keras.optimizers.Optimizer = keras.optimizers.Adam(config.head_lr)
    else:
        optimizer = keras.optimizers.SGD(config.lr, momentum=config.momentum)
    model.compile(
        optimizer=optimizer,
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )


# -- files -------------------------------------------------------------------------------------
def save_model_atomic(model: keras.Model, path: Path) -> None:
    """``model.save`` to a temporary ``.keras`` file in the same folder, then rename."""
    with atomic_path(path) as temp:
        model.save(temp)


def _keep_as_best(last: Path, best: Path) -> None:
    """Make ``best`` the just-saved ``last`` checkpoint: a hard link, no second serialisation.

    ``last`` is later replaced by a new file (``os.replace``), so the link keeps this epoch.
    """
    temp = best.with_name(f".{best.stem}.tmp-{os.getpid()}.keras")
    temp.unlink(missing_ok=True)
    try:
        os.link(last, temp)
    except OSError:
        shutil.copyfile(last, temp)  # file systems without hard links
    os.replace(temp, best)


def _trim_log(path: Path, completed_epochs: int) -> None:
    """Drop log rows of epochs that were not checkpointed (an interruption in between)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    kept = [row for row in body if row and int(row[0]) < completed_epochs]
    if len(kept) != len(body):
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows([header, *kept])


# -- the per-epoch checkpoint ------------------------------------------------------------------
def _keras_callback_base() -> type:
    import keras

    return keras.callbacks.Callback


class _RunState:
    """What survives an interruption: epochs done, best val_loss, early-stopping patience."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.completed_epochs = 0
        self.phase = 1
        self.best_val_loss = float("inf")
        self.best_epoch = -1
        self.wait = 0
        self.stopped_early = False
        self.settings: dict[str, Any] = {}

    def summary(self, *, resumed: bool, seconds: float) -> dict[str, Any]:
        """The ``training`` section of ``metrics.json``."""
        return {
            "epochs_run": self.completed_epochs,
            "best_epoch": self.best_epoch + 1,
            "best_val_loss": self.best_val_loss,
            "stopped_early": self.stopped_early,
            "resumed": resumed,
            "seconds": round(seconds, 1),
        }

    def load(self) -> None:
        values = json.loads(self.path.read_text())
        for key in ("completed_epochs", "phase", "best_epoch", "wait", "stopped_early", "settings"):
            setattr(self, key, values[key])
        self.best_val_loss = float(values["best_val_loss"])

    def save(self) -> None:
        write_json_atomic(
            self.path,
            {
                "completed_epochs": self.completed_epochs,
                "phase": self.phase,
                "best_val_loss": self.best_val_loss,
                "best_epoch": self.best_epoch,
                "wait": self.wait,
                "stopped_early": self.stopped_early,
                "settings": self.settings,
            },
        )


def _make_checkpoint_callback(state: _RunState, folder: Path, phase: int, patience: int) -> Any:
    """Saves model + optimizer every epoch, the best weights, and stops early in phase 2.

    Keras' own EarlyStopping forgets its patience counter when ``fit`` restarts, so a resumed
    run would train longer than an uninterrupted one; this callback keeps it in ``state``.
    """

    class RunCheckpoint(_keras_callback_base()):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            val_loss = float(logs.get("val_loss", np.nan))
            save_model_atomic(self.model, folder / LAST_CHECKPOINT)
            if np.isfinite(val_loss) and val_loss < state.best_val_loss:
                state.best_val_loss, state.best_epoch, state.wait = val_loss, epoch, 0
                _keep_as_best(folder / LAST_CHECKPOINT, folder / BEST_CHECKPOINT)
            elif phase == 2:
                state.wait += 1
            state.completed_epochs, state.phase = epoch + 1, phase
            if phase == 2 and state.wait >= patience:
                state.stopped_early = True
                self.model.stop_training = True
                log.info(
                    "early stop after epoch %d: val_loss did not improve for %d epochs",
                    epoch + 1,
                    patience,
                )
            state.save()

    return RunCheckpoint()


def _epoch_logger() -> Any:
    class EpochLog(_keras_callback_base()):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            shown = ", ".join(f"{key} {value:.4f}" for key, value in (logs or {}).items())
            log.info("epoch %d: %s", epoch + 1, shown)

    return EpochLog()


# -- the run -----------------------------------------------------------------------------------
_COMPARED_ON_RESUME = (
    "data",
    "model",
    "size",
    "head_epochs",
    "unfreeze_from",
    "dense_units",
    "dropout",
    "batch",
    "lr",
    "head_lr",
    "momentum",
    "augment",
    "seed",
)


def has_checkpoint(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds an interrupted or finished run that ``resume`` can continue."""
    return (RunFolder(Path(run_dir)).checkpoints / STATE_FILE).exists()


@dataclass
class _TrainingData:
    """The two pipelines of a run and what they were made from."""

    train: Any  # tf.data.Dataset
    val: Any
    train_paths: list[str]
    class_weights: dict[int, float]


def finetune(
    config: FinetuneConfig,
    *,
    registry: ModelRegistry | None = None,
    progress: bool = False,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train, evaluate and write a run folder; returns the contents of ``metrics.json``.

    ``progress`` shows Keras' progress bars on a terminal (the CLI); elsewhere, and for library
    and notebook callers, each epoch is one log line. ``callbacks`` are extra Keras
    callbacks (e.g. to watch or interrupt training). A ``KeyboardInterrupt`` leaves the last
    finished epoch in ``RUN/checkpoints``; ``resume=True`` continues from there with the
    optimizer state.
    """
    import keras

    silence_tensorflow()
    started = time.monotonic()
    registry = registry or default_registry()
    run = RunFolder(config.out)
    state = _open_run(run, config)
    dataset = _read_training_dataset(config, state)
    spec = registry.spec(config.model)
    size = _input_size(spec, config)
    setup = training_setup(config.mixed_precision)
    log.info(
        "fine-tuning %s on %s (%s) at %d px, %s on %s",
        *(spec.name, config.data, ", ".join(dataset.classes), size),
        *(setup.dtype_policy, ", ".join(setup.devices)),
    )
    settings = {**config.as_dict(), "size": size, "classes": dataset.classes}
    state.settings = settings
    run.root.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    data = _training_data(dataset, run, config, spec.preprocessing, size)

    with setup.strategy.scope(), dtype_policy(setup.dtype_policy):
        model = _build_or_resume(registry, run, config, setup, len(dataset.classes), state)
        first_trainable = freeze_index(model, spec.name, config.unfreeze_from)
        settings["unfreeze_from"] = model.layers[first_trainable].name
        settings["frozen_through"] = model.layers[first_trainable - 1].name
        _train_phases(model, data, run, config, state, first_trainable, progress, callbacks)
        if (run.checkpoints / BEST_CHECKPOINT).exists():
            model.load_weights(run.checkpoints / BEST_CHECKPOINT)
    final = _export(model, run, config, spec, size, dataset.classes, data.train_paths)
    settings.update(_environment(setup))
    metrics = evaluate_run(
        final,
        dataset,
        run.root,
        size=size,
        preprocessing=spec.preprocessing,
        batch=config.batch,
        settings=settings,
        class_weights=data.class_weights,
        training=state.summary(resumed=config.resume, seconds=time.monotonic() - started),
    )
    shutil.rmtree(run.cache, ignore_errors=True)
    return metrics


def _open_run(run: RunFolder, config: FinetuneConfig) -> _RunState:
    """The run's state: loaded to resume, or fresh for a new run (never over a finished one)."""
    state = _RunState(run.checkpoints / STATE_FILE)
    if config.resume:
        if not state.path.exists():
            raise NotFound(
                f"nothing to resume in {run.root}: no {CHECKPOINT_DIR}/{STATE_FILE}; "
                "start the run without --resume"
            )
        state.load()
        _check_resume_settings(state.settings, config)
    elif state.path.exists() or run.model.exists():
        raise InvalidInput(
            f"{run.root} already holds a run: continue it with --resume, or choose another --out"
        )
    else:
        shutil.rmtree(run.checkpoints, ignore_errors=True)  # leftovers of a run killed in epoch 1
    return state


def _read_training_dataset(config: FinetuneConfig, state: _RunState) -> ImageDataset:
    dataset = read_dataset(config.data)
    if config.resume and state.settings.get("classes", dataset.classes) != dataset.classes:
        raise InvalidInput(
            f"the classes of {config.data} changed since the checkpoint "
            f"({state.settings['classes']} → {dataset.classes}); start a new run with another --out"
        )
    return dataset


def _input_size(spec: ModelSpec, config: FinetuneConfig) -> int:
    size = config.size or spec.input_size
    if size < MIN_INPUT_SIZE.get(spec.name, MIN_SIZE):
        raise InvalidInput(
            f"{spec.name} needs inputs of at least {MIN_INPUT_SIZE[spec.name]} px (got {size})"
        )
    return size


def _training_data(
    dataset: ImageDataset, run: RunFolder, config: FinetuneConfig, preprocessing: str, size: int
) -> _TrainingData:
    """The train pipeline (augmented, shuffled per epoch) and the val pipeline, cached."""
    train_paths, train_labels = dataset.files("train")
    val_paths, val_labels = dataset.files("val")
    common = {
        "num_classes": len(dataset.classes),
        "size": size,
        "batch_size": config.batch,
        "preprocessing": preprocessing,
    }
    train = make_dataset(
        train_paths,
        train_labels,
        **common,
        training=config.augment,
        seed=config.seed,
        cache=choose_cache(len(train_paths), size, training=True, folder=run.cache, name="train"),
    )
    val = make_dataset(
        val_paths,
        val_labels,
        **common,
        training=False,
        cache=choose_cache(len(val_paths), size, training=False, folder=run.cache, name="val"),
    )
    return _TrainingData(train, val, train_paths, class_weights(dataset.class_counts("train")))


def _build_or_resume(
    registry: ModelRegistry,
    run: RunFolder,
    config: FinetuneConfig,
    setup: TrainingSetup,
    num_classes: int,
    state: _RunState,
) -> keras.Model:
    """The last checkpoint when resuming, else the base (in the training precision) + a head."""
    import keras

    if config.resume:
        log.info("resuming %s after epoch %d", run.root, state.completed_epochs)
        return keras.saving.load_model(run.checkpoints / LAST_CHECKPOINT)
    base = registry.load(config.model).spatial_model()
    if base is None:
        raise InvalidInput(
            f"{config.model} cannot take free input sizes, so it cannot be a base here"
        )
    base = with_dtype_policy(_features_only(base), setup.dtype_policy)
    return build_model(base, num_classes, dense_units=config.dense_units, dropout=config.dropout)


def _train_phases(
    model: keras.Model,
    data: _TrainingData,
    run: RunFolder,
    config: FinetuneConfig,
    state: _RunState,
    first_trainable: int,
    progress: bool,
    callbacks: Sequence[Any],
) -> None:
    """Phase 1 (head only) then phase 2 (from ``first_trainable``), each skipped when done."""
    import keras

    verbose = fit_verbosity(progress)
    if config.resume:
        _trim_log(run.log, state.completed_epochs)
    else:
        run.log.unlink(missing_ok=True)
    for phase, end in ((1, config.head_epochs), (2, config.epochs)):
        if state.completed_epochs >= end or state.stopped_early:
            continue
        continuing = config.resume and state.phase == phase and state.completed_epochs > 0
        if not continuing:
            set_phase(model, phase, first_trainable)
            _compile(model, phase, config)
        trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        log.info(
            "phase %d: epochs %d–%d, %d trainable parameters",
            phase,
            state.completed_epochs + 1,
            end,
            trainable,
        )
        state.settings[f"phase{phase}_trainable_params"] = trainable
        model.fit(
            data.train,
            validation_data=data.val,
            epochs=end,
            initial_epoch=state.completed_epochs,
            class_weight=data.class_weights,
            shuffle=False,  # the tf.data pipeline shuffles, per epoch
            verbose=verbose,
            callbacks=[
                keras.callbacks.CSVLogger(str(run.log), append=True),
                _make_checkpoint_callback(state, run.checkpoints, phase, config.patience),
                *([] if verbose else [_epoch_logger()]),
                *callbacks,
            ],
        )
        state.phase = phase


def fit_verbosity(progress: bool, stream: TextIO | None = None) -> int:
    """Keras' ``verbose`` for ``fit``: its live progress bar (1) only when asked for and
    ``stream`` (stdout) is a terminal; else 0, and the run logs one line per epoch instead — in a
    file, a pipe or a notebook's log a bar's escape codes and carriage returns only garble it."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return 1 if progress and isatty is not None and isatty() else 0


def _export(
    model: keras.Model,
    run: RunFolder,
    config: FinetuneConfig,
    spec: ModelSpec,
    size: int,
    classes: list[str],
    train_paths: list[str],
) -> keras.Model:
    """``model.keras`` in float32 (renders and predicts on CPU too), ``model.json``,
    ``classes.json``; the exported model."""
    final = with_dtype_policy(model, "float32")
    save_model_atomic(final, run.model)
    run.write_info(
        RunInfo(
            base_model=spec.name,
            preprocessing=spec.preprocessing,
            input_size=size,
            classes=classes,
            title=config.title
            or f"{run.root.name}: {spec.title} fine-tuned on {', '.join(classes)}",
            description=f"{spec.name} fine-tuned on {config.data} ({len(train_paths)} training "
            "images) with python -m wga finetune",
            color_correlation=color_correlation(train_paths).tolist(),
            class_layer="predictions",
            dataset=str(config.data),
        )
    )
    return final


def _environment(setup: TrainingSetup) -> dict[str, Any]:
    """Where the run trained, for ``metrics.json``."""
    import keras
    import tensorflow as tf

    return {
        "strategy": type(setup.strategy).__name__,
        "replicas": setup.replicas,
        "dtype_policy": setup.dtype_policy,
        "devices": setup.devices,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def _features_only(base: keras.Model) -> keras.Model:
    """The base up to its last spatial feature map (drops a top that a file model may carry)."""
    import keras

    for layer in reversed(base.layers):
        shape = getattr(layer.output, "shape", None)
        if shape is not None and len(shape) == 4:
            if layer is base.layers[-1]:
                return base
            return keras.Model(base.inputs, layer.output, name=f"{base.name}_features")
    raise InvalidInput(f"{base.name} has no spatial feature maps to put a head on")


def _check_resume_settings(saved: dict[str, Any], config: FinetuneConfig) -> None:
    wanted = config.as_dict()
    differing = [
        f"{key} {saved.get(key)!r} → {wanted[key]!r}"
        for key in _COMPARED_ON_RESUME
        if key in saved
        and wanted.get(key) is not None
        and saved[key] != wanted[key]
        and not (key == "unfreeze_from" and wanted[key] is None)
    ]
    if differing:
        raise InvalidInput(
            "--resume must continue the same run, but these settings differ from the "
            f"checkpoint: {'; '.join(differing)}. Repeat the original settings (only --epochs "
            "may grow), or start a new run with another --out"
        )
