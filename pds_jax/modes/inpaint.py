"""`main.py --mode=inpaint`: fill masked pixels of test images (score_sde's replacement, vanilla or PDS).

    python main.py --config=configs/fashion_mnist_pds.py --workdir=runs/fm --mode=inpaint \
        --config.inpaint.mask=box --config.inpaint.num_images=16

Inputs: the first config.inpaint.num_images images of the dataset's config.inpaint.split
(config.data.*), or of config.inpaint.images (a .npy/.npz file or an image folder).
Masks (config.inpaint.mask, 1 = known): 'box' (the centred half-size box is missing),
'left' (the left half), 'random' (each pixel missing with probability
config.inpaint.mask_fraction, per image from config.inpaint.seed) or a PNG mask file
(white = known). Sampling follows config.sampling (PC predictor/corrector, snr,
sampling.pds.speed_up and the PDS filters). Outputs and resuming: `pds_jax.modes.conditional`;
rows.png shows masked input (missing pixels mid-gray) | samples | original.
"""

from __future__ import annotations

import numpy as np

from pds_jax import masks
from pds_jax.controllable import get_pc_inpainter
from pds_jax.modes import conditional

MISSING_GRAY = 0.5  # how missing pixels are drawn in the input column


def _masks(config, images):
    s = config.inpaint
    shape = images.shape[1:]
    kind = str(s.mask)
    if not masks.is_per_image(kind):
        return np.broadcast_to(masks.make_mask(kind, shape), images.shape).copy()
    return np.stack([masks.make_mask(kind, shape, float(s.mask_fraction), int(s.seed), i)
                     for i in range(len(images))])


TASK = conditional.Task(
    name="inpaint",
    builder=get_pc_inpainter,
    condition=_masks,
    call=lambda fn, key, score_fn, data, mask: fn(key, score_fn, data, mask),
    shown=lambda images01, mask: images01 * mask + MISSING_GRAY * (1.0 - mask),
    region=lambda mask: 1.0 - mask,
    saved=lambda mask: {"masks": (mask * 255).astype(np.uint8)},
)


def run(config, workdir: str, folder: str = "inpaint") -> dict:
    return conditional.run(TASK, config, workdir, folder)
