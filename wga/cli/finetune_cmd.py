"""``python -m wga finetune``: fine-tune a registry model on a dataset folder, then evaluate it."""

from __future__ import annotations

import argparse
import json

from wga.train.finetune import (
    DROPOUT,
    HEAD_EPOCHS,
    HEAD_LR,
    PAPER_BATCH,
    PAPER_EPOCHS,
    PAPER_LR,
    PAPER_MOMENTUM,
    PATIENCE,
    FinetuneConfig,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on a dataset (`wga dataset`, or train/ + val/ class folders)",
        description=(
            "Put a new head on a registry model, train the head, then fine-tune from a named "
            "layer; checkpoint every epoch; evaluate on val and test. RUN becomes a model of the "
            "registry (place it under ./runs or $WGA_RUNS_DIR to render it by name)."
        ),
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="DS",
        help="dataset folder: made by `wga dataset`, or any train/<class>/ + val/<class>/ tree",
    )
    parser.add_argument(
        "--model", default="inceptionv3", help="base: a registry name (default inceptionv3)"
    )
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder to write")
    parser.add_argument(
        "--epochs", type=int, default=PAPER_EPOCHS, help=f"epochs in all (default {PAPER_EPOCHS})"
    )
    parser.add_argument(
        "--head-epochs",
        type=int,
        default=HEAD_EPOCHS,
        help=f"first epochs that train only the new head (default {HEAD_EPOCHS})",
    )
    parser.add_argument(
        "--size",
        type=int,
        metavar="PX",
        help="input side in px (default: the base's, 299 for InceptionV3)",
    )
    parser.add_argument(
        "--batch", type=int, default=PAPER_BATCH, help=f"batch size (default {PAPER_BATCH})"
    )
    _add_training_options(parser)
    parser.add_argument("--title", help="the model's title in the explorer")
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last epoch"
    )
    parser.add_argument(
        "--runs", help="folder of fine-tuned runs, for a run as base (default $WGA_RUNS_DIR)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    """The optimisation options (the paper's values as defaults)."""
    parser.add_argument(
        "--unfreeze-from",
        metavar="LAYER",
        help="first layer trained when fine-tuning (default: after mixed5 for InceptionV3, "
        "as in the paper; the last block for other bases)",
    )
    parser.add_argument(
        "--lr", type=float, default=PAPER_LR, help=f"fine-tuning SGD learning rate ({PAPER_LR})"
    )
    parser.add_argument(
        "--momentum", type=float, default=PAPER_MOMENTUM, help=f"SGD momentum ({PAPER_MOMENTUM})"
    )
    parser.add_argument(
        "--head-lr",
        type=float,
        default=HEAD_LR,
        help=f"Adam learning rate of the head phase ({HEAD_LR})",
    )
    parser.add_argument(
        "--dropout", type=float, default=DROPOUT, help=f"dropout before the class layer ({DROPOUT})"
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=PATIENCE,
        help=f"stop after this many epochs without a better val loss ({PATIENCE})",
    )
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from wga.errors import InvalidInput
    from wga.vis.backends import backend_name

    if backend_name() != "tensorflow":
        raise InvalidInput(
            f"finetune needs TensorFlow (its input pipeline is tf.data), not {backend_name()!r}: "
            "pip install 'wga[tensorflow]' and run it with --backend tensorflow"
        )
    from wga.models import ModelRegistry, default_registry
    from wga.train.finetune import finetune

    config = FinetuneConfig(
        data=args.data,
        out=args.out,
        model=args.model,
        epochs=args.epochs,
        head_epochs=args.head_epochs,
        size=args.size,
        batch=args.batch,
        lr=args.lr,
        momentum=args.momentum,
        head_lr=args.head_lr,
        unfreeze_from=args.unfreeze_from,
        dropout=args.dropout,
        patience=args.patience,
        augment=not args.no_augment,
        seed=args.seed,
        title=args.title,
        resume=args.resume,
    )
    registry = ModelRegistry(args.runs) if args.runs else default_registry()
    try:
        metrics = finetune(config, registry=registry, progress=not args.quiet)
    except KeyboardInterrupt:
        print(
            f"interrupted: the last finished epoch is saved; continue with the same command "
            f"and --resume (out: {config.out})"
        )
        raise
    summary = {
        "out": str(config.out),
        "val_accuracy": round(metrics["val_accuracy"], 4),
        "test_accuracy": None
        if metrics["test_accuracy"] is None
        else round(metrics["test_accuracy"], 4),
        "majority_baseline": metrics["majority_baseline_accuracy"],
        "epochs_run": metrics["training"]["epochs_run"],
    }
    print(json.dumps(summary))
    return 0
