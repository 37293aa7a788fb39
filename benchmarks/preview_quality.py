"""Previews against full renders: activation, contrast and cost, and a before/after contact sheet.

The explorer's grid shows one ``preview`` thumbnail per unit. A thumbnail must be readable at a
glance and say what the unit likes, at a fraction of a full render's cost. For live units of
vgg16-hed at the page's default preview size (128 px) this renders each unit with

* ``full``: ``lucid``, 512 steps (the yardstick);
* ``before``: the preview preset as it was (48 steps at full size, Adam 0.08, no stretch);
* ``preview``: the preview preset as it is now;
* any ``--variants`` (for tuning; see VARIANTS below);

and prints, per variant, the own-unit activation of the thumbnail (the PNG as shown, no
transforms) as a fraction of the full render's, the pixel standard deviation as a fraction of the
full render's, and the cost in full-size step equivalents and CPU seconds. ``--sheet PATH``
writes a contact sheet: one row per unit, columns before / preview / full.

    PYTHONPATH=. python benchmarks/preview_quality.py --sheet docs/preview-before-after.png
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

from wga.vis.hooks import DisplayStretch
from wga.vis.presets import DoublingOctaves

STRETCH_PERCENTILE = 1.0

UNITS = {"block3_conv3": [2, 3, 5, 11], "block4_conv2": [0, 4, 7, 11]}
BEFORE = {  # the preview preset before issue 12 item 6
    "learning_rate": 0.08,
    "default_steps": 48,
    "warmup_steps": 8,
    "octaves": DoublingOctaves(256),
    "hooks": (),
    "decay": 1.0,
}
VARIANTS = {
    "lr0.2": {**BEFORE, "learning_rate": 0.2},
    "oct-lr0.1": {
        **BEFORE,
        "learning_rate": 0.1,
        "default_steps": 96,
        "octaves": DoublingOctaves(64),
    },
    "oct-lr0.2": {
        **BEFORE,
        "learning_rate": 0.2,
        "default_steps": 96,
        "octaves": DoublingOctaves(64),
    },
    "oct-lr0.2-d1.5": {
        **BEFORE,
        "learning_rate": 0.2,
        "default_steps": 96,
        "octaves": DoublingOctaves(64),
        "decay": 1.5,
    },
}


def cost(preset, size: int) -> float:
    """Steps weighted by pixels: full-size step equivalents."""
    return sum(steps * (side / size) ** 2 for side, steps in preset.schedule(size, None))


def render_timed(loaded, layer, units, size, preset):
    from wga.vis.presets import PRESETS
    from wga.vis.render import BatchRender, Recipe

    PRESETS[preset.name] = preset
    recipes = [
        Recipe(loaded.name, layer, unit, size=size, preset=preset.name, seed=unit) for unit in units
    ]
    batch = BatchRender(loaded, recipes)
    cpu = time.process_time()
    batch.run(batch.total_steps)
    return batch.images(), time.process_time() - cpu


def own_activation(loaded, layer, images, units) -> np.ndarray:
    import tensorflow as tf

    from wga.models import preprocess
    from wga.vis.features import feature_graph

    x = preprocess(tf.constant(images, tf.float32) / 255.0, loaded.spec.preprocessing)
    means = tf.reduce_mean(feature_graph(loaded, layer).model(x), axis=[1, 2]).numpy()
    return means[np.arange(len(units)), units]


def contact_sheet(path: str, columns: dict[str, np.ndarray], units: list[int], layer: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wga.atomic import atomic_path

    names = list(columns)
    fig, axes = plt.subplots(
        len(units), len(names), figsize=(2.2 * len(names), 2.2 * len(units)), squeeze=False
    )
    for row, unit in enumerate(units):
        for col, name in enumerate(names):
            ax = axes[row][col]
            ax.imshow(columns[name][row])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{layer} {unit}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=80, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", default="block3_conv3", choices=list(UNITS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--full-steps", type=int, default=512)
    parser.add_argument("--variants", default="", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--sheet", help="write a before / preview / full contact sheet here")
    args = parser.parse_args()

    from wga.quiet import quiet_keras, silence_tensorflow

    silence_tensorflow()
    quiet_keras()
    from wga.models import ModelRegistry
    from wga.vis.presets import PRESETS

    loaded = ModelRegistry(None).load("vgg16-hed")
    units, size = UNITS[args.layer], args.size
    preview = PRESETS["preview"]
    presets = {"before": replace(preview, name="pq-before", **BEFORE), "preview": preview}
    for name in filter(None, args.variants.split(",")):
        presets[name] = replace(preview, name=f"pq-{name}", **VARIANTS[name])
    full = replace(PRESETS["lucid"], name="pq-full", default_steps=args.full_steps)

    full_images, full_cpu = render_timed(loaded, args.layer, units, size, full)
    full_act = own_activation(loaded, args.layer, full_images, units)
    full_sd = full_images.reshape(len(units), -1).std(axis=1)
    print(f"preview quality — vgg16-hed {args.layer}, units {units}, {size} px")
    print(f"full: lucid {args.full_steps} steps, {full_cpu / len(units):.1f} CPU s/unit")
    header = (
        f"{'variant':<22} {'steps':>5} {'cost':>6} {'cpu s/unit':>10} "
        f"{'act ÷ full':>10} {'worst':>6} {'sd ÷ full':>9} {'worst':>6}"
    )
    print(header)
    print("-" * len(header))
    columns = {}
    for name, preset in presets.items():
        images, cpu = render_timed(loaded, args.layer, units, size, preset)
        columns[name] = images
        versions = [(name, images)]
        if not preset.hooks:  # what the display stretch would make of the same render
            stretched = DisplayStretch(STRETCH_PERCENTILE).images(images / 255.0)
            versions.append((f"{name}+stretch", np.round(np.clip(stretched, 0, 1) * 255)))
        for label, shown in versions:
            act = own_activation(loaded, args.layer, shown, units) / np.maximum(full_act, 1e-6)
            sd = shown.reshape(len(units), -1).std(axis=1) / full_sd
            print(
                f"{label:<22} {preset.resolve_steps(size, None):>5} {cost(preset, size):6.1f} "
                f"{cpu / len(units):10.1f} {act.mean():10.2f} {act.min():6.2f} "
                f"{sd.mean():9.2f} {sd.min():6.2f}",
                flush=True,
            )
    if args.sheet:
        columns = {
            "preview before": columns["before"],
            "preview now": columns["preview"],
            f"lucid {args.full_steps}": full_images,
        }
        contact_sheet(args.sheet, columns, units, args.layer)
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
