"""``python -m wga render``: feature visualisations of units of one layer, as PNG files.

    python -m wga render --model vgg16-hed --layer block4_conv3 --units 0-7 --size 224 --out out/

writes ``out/block4_conv3-0.png`` … ``-7.png``, each carrying its recipe in PNG text metadata.
All units render in one batch (one forward/backward pass per step).

    python -m wga render --model vgg16-hed --layer block4_conv3 --units all --out out/ [--ray local]

renders every unit of the layer (:mod:`wga.vis.bulk`): resumable (finished PNGs are skipped),
also written to the server's render cache, in-process or on a Ray cluster (``--ray``).

    python -m wga render --model vgg16-hed --layer block4_conv3 --direction v.npy --out out/

renders a direction in the layer's channel space (one value per channel, ``dot × cos²`` at the
centre; ``--objective direction_map`` for the whole map) to ``out/block4_conv3-direction-<hash>.png``;
the vector is kept in the vector store (``$WGA_VECTORS_DIR``) under its sha256.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from wga.cli.cluster import add_cluster_options, check_cluster_options
from wga.errors import InvalidInput
from wga.models import DEFAULT_MODEL, default_registry
from wga.quiet import quiet_keras
from wga.vis.bulk import DEFAULT_BULK_BATCH
from wga.vis.objective_table import AUTO, OBJECTIVES
from wga.vis.presets import DEFAULT_PRESET, PRESETS
from wga.vis.recipe import check_recipes, recipe_file_name, recipes_from_request

if TYPE_CHECKING:
    from wga.executors import Executor
    from wga.models import LoadedModel

log = logging.getLogger(__name__)

MAX_UNITS_PER_COMMAND = 4096


def parse_units(text: str) -> list[int]:
    """``"0-7"``, ``"3,5,9"`` or ``"0-3,8"`` → sorted unique unit numbers."""
    units: set[int] = set()
    for part in (piece.strip() for piece in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise InvalidInput(
                f"cannot read units {text!r}: give numbers and ranges like 0-7 or 3,5,9"
            )
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        if high < low:
            raise InvalidInput(f"unit range {part!r} runs backwards: write {high}-{low}")
        if high - low + len(units) >= MAX_UNITS_PER_COMMAND:
            raise InvalidInput(f"at most {MAX_UNITS_PER_COMMAND} units per command")
        units.update(range(low, high + 1))
    return sorted(units)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "render",
        help="render feature visualisations of units to PNG files",
        description="Render what units of a layer respond to, one PNG per unit "
        "(DIR/<layer>-<unit>.png, recipe in its text metadata).",
    )
    parser.add_argument(
        "--model", help="registry name or .keras path (default: inceptionv3, or vgg16-hed offline)"
    )
    parser.add_argument("--layer", required=True, help="layer name (see: wga models --layers M)")
    _add_target_options(parser)
    parser.add_argument("--size", type=int, default=224, help="image side in px, 64 … 1024")
    parser.add_argument("--steps", type=int, help="optimisation steps (default: the preset's)")
    parser.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        help=f"one of {', '.join(PRESETS)} (default {DEFAULT_PRESET})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same image)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_bulk_options(parser)
    parser.set_defaults(handler=run)


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    """What to render: units, or a direction; the objective and what it reads."""
    parser.add_argument(
        "--units",
        help="units: 0-7, 3,5,9, 0-3,8, or all (every unit, resumable); not with --direction",
    )
    parser.add_argument(
        "--direction",
        type=Path,
        metavar="FILE.npy",
        help="render this direction in channel space instead of units (a .npy vector)",
    )
    parser.add_argument(
        "--position", help="Y,X: the feature-map cell for neuron and direction (default centre)"
    )
    parser.add_argument("--cos-power", type=float, help="the direction objectives' cosine power")
    parser.add_argument(
        "--objective",
        default=AUTO,
        help="what to maximise: auto (channel; logit for the class layer), one of "
        + ", ".join(OBJECTIVES)
        + ', or a weighted sum such as "channel(mixed5, 3) - 0.5 * channel(mixed5, 7) + '
        '0.05 * tv" (arguments left out come from --layer, the unit, --position, --direction; '
        "see README)",
    )


def _add_bulk_options(parser: argparse.ArgumentParser) -> None:
    """``--units all`` and ``--ray``: resumable renders of many units."""
    bulk = parser.add_argument_group(
        "bulk rendering (--units all, or any units with --ray)",
        "Resumable: PNGs already in --out with the same recipe are skipped. Each image also "
        "lands in the explorer's render cache.",
    )
    add_cluster_options(bulk, "render")
    bulk.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BULK_BATCH,
        help=f"units per task (default {DEFAULT_BULK_BATCH}; a GPU likes more)",
    )
    cache = bulk.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache",
        type=Path,
        help="render cache folder (default: renders/ in $WGA_CACHE_DIR or ./cache, as "
        "`wga serve` started here uses)",
    )
    cache.add_argument("--no-cache", action="store_true", help="write only to --out")


def _position(text: str | None) -> list[int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", text)
    if not match:
        raise InvalidInput(f"--position must be Y,X (two whole numbers), not {text!r}")
    return [int(match.group(1)), int(match.group(2))]


def _every_unit(args: argparse.Namespace) -> bool:
    return args.units is not None and args.units.strip().lower() == "all"


def _target_fields(args: argparse.Namespace) -> tuple[list[int], dict[str, object]]:
    """The units and the objective's extra fields (direction, position, cosine power)."""
    extra: dict[str, object] = {}
    objective = args.objective
    if args.direction is not None:
        if args.units is not None:
            raise InvalidInput("give either --units or --direction, not both")
        from wga.vis.vectors import VectorStore

        extra["vector"] = VectorStore().load_file(args.direction)
        objective = "direction" if objective == AUTO else objective
    elif args.units is None:
        raise InvalidInput("say what to render: --units 0-7, or --direction FILE.npy")
    if args.position is not None:
        extra["position"] = _position(args.position)
    if args.cos_power is not None:
        extra["cos_power"] = args.cos_power
    whole = args.direction is not None or _every_unit(args)  # "all": the layer decides, later
    return ([0] if whole else parse_units(args.units)), {
        "objective": objective,
        **extra,
    }


def run(args: argparse.Namespace) -> int:
    every = _every_unit(args)
    units, target = _target_fields(args)
    if args.batch < 1:
        raise InvalidInput(f"--batch must be ≥ 1, got {args.batch}")
    check_cluster_options(args)
    fields = {
        "model": args.model or DEFAULT_MODEL,  # the registry may pick another default offline
        "layer": args.layer,
        "size": args.size,
        "preset": args.preset,
        "steps": args.steps,
        "seed": args.seed,
        **target,
    }
    recipes_from_request(fields, units)  # every value checked before TensorFlow starts
    executor = None
    if every or args.ray:
        from wga.executors import open_executor

        executor = open_executor(args.ray)  # before TensorFlow too: a missing extra fails at once

    # TensorFlow loads here, not at the top: `wga render --help` and bad options answer at once.
    from wga.vis.render import render_to_files

    quiet_keras()
    registry = default_registry()
    loaded = registry.load(args.model or registry.default_name())
    fields["model"] = args.model or loaded.name
    if executor is not None:
        with contextlib.closing(executor):
            return _bulk(args, executor, loaded, fields, None if every else units)
    recipes = recipes_from_request(fields, units)
    check_recipes(recipes, loaded)
    log.info(
        "rendering %d unit(s) of %s/%s at %d px (%s)",
        len(recipes),
        loaded.name,
        args.layer,
        args.size,
        args.preset,
    )
    render_to_files(
        loaded,
        recipes,
        args.out,
        file_name=recipe_file_name,
        progress=not args.no_progress,
    )
    for recipe in recipes:
        print(args.out / recipe_file_name(recipe))
    return 0


def _bulk(
    args: argparse.Namespace,
    executor: Executor,
    loaded: LoadedModel,
    fields: dict,
    units: list[int] | None,
) -> int:
    from wga.paths import renders_dir
    from wga.vis.bulk import bulk_render, layer_recipes
    from wga.vis.store import RenderStore

    recipes = layer_recipes(loaded, fields, units)
    cache = None if args.no_cache else (args.cache or renders_dir())
    log.info(
        "rendering %d unit(s) of %s/%s at %d px on %s",
        len(recipes),
        loaded.name,
        args.layer,
        args.size,
        executor.name,
    )
    result = bulk_render(
        executor,
        loaded,
        recipes,
        args.out,
        file_name=recipe_file_name,
        store=RenderStore(cache) if cache is not None else None,
        batch=args.batch,
        workers=args.workers,
        progress=not args.no_progress,
    )
    log.info(
        "%d rendered (%.2f units/s), %d already done, %d from the render cache%s",
        result.rendered,
        result.units_per_second,
        result.skipped,
        result.from_cache,
        f" ({cache})" if cache else "",
    )
    for path in result.files:
        print(path)
    return 0
