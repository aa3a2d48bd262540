"""`main.py --mode=colorize`: colour gray versions of test images (score_sde's decoupled-space
replacement, vanilla or PDS). Needs an RGB model (config.data.num_channels = 3).

    python main.py --config=<an RGB config> --workdir=runs/x --mode=colorize \
        --config.colorize.num_images=16

Inputs as `--mode=inpaint` (config.colorize.split / .images); the gray image is the
channel mean repeated over R, G, B. Outputs and resuming: `pds_jax.modes.conditional`;
rows.png shows gray input | samples | original, and the region MSE is over all pixels.
"""

from __future__ import annotations

import numpy as np

from pds_jax.controllable import get_pc_colorizer
from pds_jax.modes import conditional


def _gray(config, images):
    if images.shape[-1] != 3:
        raise ValueError(f"--mode=colorize needs an RGB model and data (config.data.num_channels = 3); "
                         f"this config has {images.shape[-1]} channel(s)")
    return np.repeat(images.mean(axis=-1, keepdims=True), 3, axis=-1)


TASK = conditional.Task(
    name="colorize",
    builder=get_pc_colorizer,
    condition=_gray,
    call=lambda fn, key, score_fn, data, gray: fn(key, score_fn, gray),
    shown=lambda images01, gray: np.repeat(images01.mean(axis=-1, keepdims=True), 3, axis=-1),
    region=lambda gray: np.ones_like(gray),
    saved=lambda gray: {},
)


def run(config, workdir: str, folder: str = "colorize") -> dict:
    return conditional.run(TASK, config, workdir, folder)
