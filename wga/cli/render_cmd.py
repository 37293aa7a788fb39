"""``python -m wga render``: feature visualisations of units of one layer, as PNG files.

    python -m wga render --model vgg16-hed --layer block4_conv3 --units 0-7 --size 224 --out out/

writes ``out/block4_conv3-0.png`` … ``-7.png``, each carrying its recipe in PNG text metadata.
All units render in one batch (one forward/backward pass per step).

    python -m wga render --model vgg16-hed --layer block4_conv3 --direction v.npy --out out/

renders a direction in the layer's channel space (one value per channel, ``dot × cos²`` at the
centre; ``--objective direction_map`` for the whole map) to ``out/block4_conv3-direction-<hash>.png``;
the vector is kept in the vector store (``$WGA_VECTORS_DIR``) under its sha256.
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
from wga.vis.recipe import check_recipes, recipes_from_request

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


def output_name(layer: str, unit: int) -> str:
    """``<layer>-<unit>.png``, with path separators in a layer name made harmless."""
    return f"{re.sub(r'[^A-Za-z0-9_.+=-]', '_', layer)}-{unit}.png"


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
    parser.add_argument("--units", help="units: 0-7, 3,5,9 or 0-3,8 (not with --direction)")
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


def _position(text: str | None) -> list[int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", text)
    if not match:
        raise InvalidInput(f"--position must be Y,X (two whole numbers), not {text!r}")
    return [int(match.group(1)), int(match.group(2))]


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
    return ([0] if args.direction is not None else parse_units(args.units)), {
        "objective": objective,
        **extra,
    }


def file_name(recipe) -> str:
    """``<layer>-<unit>.png``, or ``<layer>-direction-<hash>.png`` for a direction."""
    if recipe.vector is not None:
        return output_name(recipe.layer, 0).replace(
            "-0.png", f"-direction-{recipe.vector[:12]}.png"
        )
    return output_name(recipe.layer, recipe.unit)


def run(args: argparse.Namespace) -> int:
    units, target = _target_fields(args)
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
        file_name=file_name,
        progress=not args.no_progress,
    )
    for recipe in recipes:
        print(args.out / file_name(recipe))
    return 0
