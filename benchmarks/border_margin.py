"""Content, not frames: how ``--border-margin`` changes what a probe's top artworks are.

A synthetic corpus of framed paintings (structured content inside a gilt frame), unframed ones
and plain colour fields (framed or not) is seen by vgg16-hed once; then, for each border margin,
every unit's top-k artworks are taken over the positions that margin keeps
(:func:`wga.corpus.receptive.border_mask`, what the probe applies). Per layer and margin it
prints:

* **edge** — the share of top-k examples whose maximum is within one grid step of the picture's
  edge (where the zero padding answers: the margin's target);
* **border** — the share of all units' top-k examples whose maximum sits at the picture's
  border: the position's centre on the frame band, or within one step of the layer's grid of
  the image's edge;
* **fields** — the share of top-k examples that are plain colour fields (a unit that ranks them
  high is answering to their edges: they have nothing else);
* **chance** — the share of the kept positions that are at the border: what a unit blind to
  borders would give;
* **dominated** — the share of units with at least half of their top-k at the border, beside
  what chance alone would give (**by chance**, a binomial tail at the chance rate): the units a
  user would find answering to frames;
* **kept** — the share of the valid positions the margin keeps (what it costs).

With ``--figure PATH`` it also draws, for the layer's most border-sensitive unit, its top
artworks at margin 0 and at ``--chosen``, the maximum marked — the README's before/after.

    PYTHONPATH=. python benchmarks/border_margin.py [--images 160] [--top 16]
        [--layers block3_conv3,block4_conv1,block5_conv3] [--figure docs/border-margin.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

MARGINS = (0.0, 0.25, 0.5, 0.75, 1.0)


def make_corpus(root: Path, count: int, seed: int) -> list[dict[str, object]]:
    """Write ``count`` images; per image: framed?, colour field?, frame band in original px."""
    from PIL import Image

    from wga.data.synthetic import COLOUR_FIELD, SYNTHETIC_CLASSES, framed, synthetic_image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    truth = []
    for index in range(count):
        field = index % 5 == 4  # one in five a plain colour field
        kind = COLOUR_FIELD if field else SYNTHETIC_CLASSES[index % len(SYNTHETIC_CLASSES)]
        image = synthetic_image(kind, rng, side=int(rng.integers(160, 320)))
        share = 0.08
        has_frame = index % 3 != 2  # two in three framed
        if has_frame:
            image = framed(image, rng, share)
        band = max(3, round(share * min(image.shape[:2]))) if has_frame else 0
        Image.fromarray(image).save(root / f"{index:04d}.jpg", quality=92)
        truth.append({"framed": has_frame, "field": field, "band": band})
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--top", type=int, default=16)
    parser.add_argument("--layers", default="block3_conv3,block4_conv1,block5_conv3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chosen", type=float, default=0.5, help="margin of the figure's 'after'")
    parser.add_argument("--figure", type=Path, help="write the before/after figure here")
    args = parser.parse_args()

    from wga.quiet import quiet_keras, silence_tensorflow

    silence_tensorflow()
    quiet_keras()
    from wga.corpus.index import original_position
    from wga.corpus.look import picture_from, see
    from wga.corpus.probe import feed_rule
    from wga.corpus.receptive import border_mask, receptive_field
    from wga.models import ModelRegistry

    hed = ModelRegistry(None).load("vgg16-hed")
    layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    rule = feed_rule(hed)
    side = rule.side
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "corpus"
        truth = make_corpus(folder, args.images, args.seed)
        files = sorted(folder.iterdir())
        pictures = [picture_from(path, rule) for path in files]
        seen = [see(hed, layers, picture) for picture in pictures]
        thumbnails = [np.asarray(_thumbnail(path)) for path in files] if args.figure else []
    fields = {layer: receptive_field(hed.model, layer, side) for layer in layers}
    print(
        f"{args.images} synthetic paintings ({sum(t['framed'] for t in truth)} framed, "
        f"{sum(t['field'] for t in truth)} plain colour fields), vgg16-hed at {side} px, "
        f"top {args.top} per unit"
    )
    print(
        f"{'layer':14s} {'field':>9s} {'margin':>6s} {'edge':>6s} {'border':>7s} {'chance':>7s} "
        f"{'dominated':>9s} {'by chance':>9s} {'fields':>7s} {'kept':>6s}"
    )
    sensitive: dict[str, tuple[int, dict[float, list[tuple[int, int, int]]]]] = {}
    for depth, layer in enumerate(layers):
        field = fields[layer]
        values = [s[depth].values for s in seen]
        grid = seen[0][depth].grid
        per_margin: dict[float, np.ndarray] = {}
        where: dict[float, list[np.ndarray]] = {}
        for margin in MARGINS:
            maxima, positions, kept, zone = [], [], 0, 0.0
            for picture, value, known in zip(pictures, values, truth, strict=True):
                mask = border_mask(field, np.asarray([picture.shape]), grid, side, margin)[0]
                mask = mask[: value.shape[0], : value.shape[1]]
                kept += int(mask.sum())
                zone += _in_zone(field, picture, known, mask).mean()
                flat = np.where(mask[..., None], value, -np.inf).reshape(-1, value.shape[-1])
                maxima.append(flat.max(axis=0))
                positions.append(flat.argmax(axis=0))
            per_margin[margin] = np.stack(maxima)  # images × units
            where[margin] = positions
            valid = sum(v.shape[0] * v.shape[1] for v in values)
            border, edge, plain, border_by_unit, edge_by_unit = _border_shares(
                per_margin[margin],
                where[margin],
                pictures,
                values,
                truth,
                field,
                args.top,
            )
            chance = zone / len(pictures)
            dominated = float(np.mean(border_by_unit >= args.top / 2))
            expected = _binomial_tail(args.top, chance, (args.top + 1) // 2)
            print(
                f"{layer:14s} {field.size[0]:6.0f} px {margin:6.2f} {edge:6.1%} {border:7.1%} "
                f"{chance:7.1%} {dominated:9.1%} {expected:9.1%} {plain:7.1%} {kept / valid:6.1%}"
            )
            if margin == 0.0:
                unit = int(np.argmax(edge_by_unit))  # the figure: a unit of the picture's edge
                sensitive[layer] = (unit, {})
        unit = sensitive[layer][0]
        for margin in (0.0, args.chosen):
            order = np.lexsort((np.arange(len(pictures)), -per_margin[margin][:, unit]))[: args.top]
            marks = []
            for image in order:
                cols = values[image].shape[1]
                gy, gx = divmod(int(where[margin][image][unit]), cols)
                y, x, _ = original_position(field, gy, gx, pictures[image].size, side)
                marks.append((int(image), y, x))
            sensitive[layer][1][margin] = marks
    if args.figure:
        layer = layers[1] if len(layers) > 1 else layers[0]
        _figure(args.figure, layer, sensitive[layer], thumbnails, pictures, args.chosen)
        print(f"figure: {args.figure} ({layer} unit {sensitive[layer][0]})")


def _binomial_tail(n: int, p: float, k: int) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p): how many units a border-blind layer would have with
    at least k of n top examples at the border."""
    from math import comb

    return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _at_border(field, picture, known, gy, gx) -> np.ndarray:
    """Whether grid cells ``(gy, gx)`` have their centre on the frame band or within one grid
    step of the picture's edge (resized pixels)."""
    height, width = picture.shape
    band = known["band"] * max(height, width) / max(picture.size)
    cy = field.start[0] + np.asarray(gy) * field.jump[0]
    cx = field.start[1] + np.asarray(gx) * field.jump[1]
    edge = np.minimum(np.minimum(cy, cx), np.minimum(height - 1 - cy, width - 1 - cx))
    return edge < band + field.jump[0]


def _in_zone(field, picture, known, mask) -> np.ndarray:
    """For the kept cells of ``mask``, whether each is at the border (the chance level)."""
    gy, gx = np.nonzero(mask)
    return _at_border(field, picture, known, gy, gx)


def _border_shares(maxima, positions, pictures, values, truth, field, top):
    """(border share, edge share, colour-field share, per-unit border and edge counts) of the
    units' top examples; "edge": the centre within one grid step of the picture's edge, frame
    or not (the zero padding's own answer)."""
    images, units = maxima.shape
    border_by_unit = np.zeros(units)
    edge_by_unit = np.zeros(units)
    plain = 0
    for unit in range(units):
        order = np.lexsort((np.arange(images), -maxima[:, unit]))[:top]
        for image in order:
            cols = values[image].shape[1]
            gy, gx = divmod(int(positions[image][unit]), cols)
            border_by_unit[unit] += bool(_at_border(field, pictures[image], truth[image], gy, gx))
            edge_by_unit[unit] += bool(_at_border(field, pictures[image], {"band": 0}, gy, gx))
            plain += bool(truth[image]["field"])
    total = units * min(top, images)
    return (
        border_by_unit.sum() / total,
        edge_by_unit.sum() / total,
        plain / total,
        border_by_unit,
        edge_by_unit,
    )


def _thumbnail(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((160, 160))
        return image.copy()


def _figure(path, layer, sensitive, thumbnails, pictures, chosen) -> None:
    from PIL import ImageDraw

    from wga.figures import image_grid, save_figure

    unit, marks = sensitive
    images, titles = [], []
    for margin in (0.0, chosen):
        for rank, (image, y, x) in enumerate(marks[margin][:8]):
            tile = _marked(thumbnails[image], pictures[image].size, y, x, ImageDraw)
            images.append(tile)
            titles.append(f"margin {margin:g} · #{rank + 1}")
    figure = image_grid(
        images,
        titles,
        columns=8,
        title=f"vgg16-hed {layer} unit {unit}: top artworks, "
        f"every valid position (top row) and --border-margin {chosen:g} (bottom row)",
        tile_inches=1.6,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path)


def _marked(thumbnail, size, y, x, draw_module):
    from PIL import Image

    image = Image.fromarray(thumbnail).copy()
    scale = image.width / size[1]
    cy, cx = y * scale, x * scale
    draw = draw_module.Draw(image)
    draw.ellipse([cx - 6, cy - 6, cx + 6, cy + 6], outline=(0, 255, 255), width=2)
    return np.asarray(image)


if __name__ == "__main__":
    main()
