"""Inpainting masks (H, W, C) float32, 1 = known pixel, 0 = pixel to generate.

  'box'     the centred box of half the height and half the width is missing (1/4 of the pixels)
  'left'    the left half (columns < W/2) is missing
  'random'  each pixel is missing with probability `fraction` (all channels together),
            drawn per image from `seed` and the image's index
  <path>    a PNG/JPEG file: white (≥ 128 on its gray value) = known, black = missing,
            resized to (H, W) by nearest neighbour
"""

from __future__ import annotations

import os
from typing import Sequence, Tuple

import numpy as np
from PIL import Image

KINDS = ("box", "left", "random")


def _check_shape(shape: Sequence[int]) -> Tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"mask shape must be (H, W, C), got {shape}")
    return shape


def box_mask(shape: Sequence[int]) -> np.ndarray:
    H, W, C = _check_shape(shape)
    mask = np.ones((H, W, C), np.float32)
    mask[H // 4: H // 4 + H // 2, W // 4: W // 4 + W // 2] = 0.0
    return mask


def left_mask(shape: Sequence[int]) -> np.ndarray:
    H, W, C = _check_shape(shape)
    mask = np.ones((H, W, C), np.float32)
    mask[:, : W // 2] = 0.0
    return mask


def random_mask(shape: Sequence[int], fraction: float, seed: int, index: int = 0) -> np.ndarray:
    H, W, C = _check_shape(shape)
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"config.inpaint.mask_fraction must be in [0, 1] (the missing fraction), got {fraction}")
    missing = np.random.default_rng([int(seed), int(index)]).random((H, W, 1)) < float(fraction)
    return np.repeat((~missing).astype(np.float32), C, axis=2)


def file_mask(path: str, shape: Sequence[int]) -> np.ndarray:
    H, W, C = _check_shape(shape)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config.inpaint.mask={path!r} is neither one of {KINDS} nor an image file")
    with Image.open(path) as image:
        gray = np.asarray(image.convert("L").resize((W, H), Image.NEAREST))
    return np.repeat((gray >= 128).astype(np.float32)[:, :, None], C, axis=2)


def make_mask(kind: str, shape: Sequence[int], fraction: float = 0.5, seed: int = 0,
              index: int = 0) -> np.ndarray:
    """The mask `kind` ('box' | 'left' | 'random' | an image path) for image `index`."""
    if kind == "box":
        return box_mask(shape)
    if kind == "left":
        return left_mask(shape)
    if kind == "random":
        return random_mask(shape, fraction, seed, index)
    return file_mask(kind, shape)


def is_per_image(kind: str) -> bool:
    """Whether the mask differs between images (only 'random')."""
    return kind == "random"
