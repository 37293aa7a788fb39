"""``python -m wga render``: feature visualisations of units of one layer, as PNG files.

    python -m wga render --model vgg16-hed --layer block4_conv3 --units 0-7 --size 224 --out out/

writes ``out/block4_conv3-0.png`` … ``-7.png``, each carrying its recipe in PNG text metadata.
All units render in one batch (one forward/backward pass per step).
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from wga.errors import InvalidInput
from wga.models import DEFAULT_MODEL, default_registry
from wga.quiet import quiet_keras
from wga.vis.objective_table import AUTO, OBJECTIVES, objective_names
from wga.vis.presets import DEFAULT_PRESET, PRESETS
from wga.vis.recipe import check_recipes, recipe_file_name, recipes_from_request

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
    parser.add_argument("--units", required=True, help="units: 0-7, 3,5,9 or 0-3,8")
    parser.add_argument("--size", type=int, default=224, help="image side in px, 64 … 1024")
    parser.add_argument("--steps", type=int, help="optimisation steps (default: the preset's)")
    parser.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        help=f"one of {', '.join(PRESETS)} (default {DEFAULT_PRESET})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same image)")
    parser.add_argument(
        "--objective",
        default=AUTO,
        choices=objective_names(),
        help="what to maximise: auto (channel; logit for the class layer) or "
        + "; ".join(f"{spec.name}: {spec.description}" for spec in OBJECTIVES.values()),
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    units = parse_units(args.units)
    fields = {
        "model": args.model or DEFAULT_MODEL,  # the registry may pick another default offline
        "layer": args.layer,
        "size": args.size,
        "preset": args.preset,
        "steps": args.steps,
        "seed": args.seed,
        "objective": args.objective,
    }
    recipes_from_request(fields, units)  # every value checked before TensorFlow starts

    # TensorFlow loads here, not at the top: `wga render --help` and bad options answer at once.
    from wga.vis.render import render_to_files

    quiet_keras()
    registry = default_registry()
    loaded = registry.load(args.model or registry.default_name())
    recipes = recipes_from_request({**fields, "model": args.model or loaded.name}, units)
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
