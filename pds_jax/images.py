"""Turning NHWC batches into PNG files and grids (written atomically)."""

from __future__ import annotations

import io
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from pds_jax.io_utils import atomic_write_bytes


def to_uint8(images, value_range=(0.0, 1.0)) -> np.ndarray:
    """Clip NHWC (or HWC) floats in `value_range` to uint8 [0, 255]."""
    lo, hi = value_range
    x = (np.asarray(images, dtype=np.float32) - lo) / (hi - lo)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def make_grid(images, nrow: Optional[int] = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile a uint8 NHWC batch into one HWC image with `nrow` images per row."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"make_grid expects an NHWC batch, got shape {images.shape}")
    n, h, w, c = images.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol_rows = int(math.ceil(n / nrow))
    grid = np.full((ncol_rows * (h + padding) + padding, nrow * (w + padding) + padding, c),
                   pad_value, dtype=images.dtype)
    for k in range(n):
        r, col = divmod(k, nrow)
        y = padding + r * (h + padding)
        x = padding + col * (w + padding)
        grid[y:y + h, x:x + w] = images[k]
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """Encode one HWC uint8 image (C = 1 or 3) as PNG."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"png_bytes expects uint8, got {image.dtype}; use to_uint8 first")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str, image: np.ndarray, overwrite: bool = False) -> str:
    return atomic_write_bytes(path, png_bytes(image), overwrite)


def save_grid(path: str, images, nrow: Optional[int] = None, value_range=(0.0, 1.0),
              overwrite: bool = False) -> str:
    """Save a float NHWC batch in `value_range` as a PNG grid."""
    return save_png(path, make_grid(to_uint8(images, value_range), nrow=nrow), overwrite)


def side_by_side(panels: Sequence[np.ndarray], gap: int = 8, pad_value: int = 255) -> np.ndarray:
    """Concatenate HWC uint8 images horizontally (heights are padded to match)."""
    h = max(p.shape[0] for p in panels)
    c = max(p.shape[2] for p in panels)
    padded = []
    for k, p in enumerate(panels):
        if p.shape[2] != c:
            p = np.repeat(p, c, axis=2)
        canvas = np.full((h, p.shape[1], c), pad_value, dtype=np.uint8)
        canvas[:p.shape[0]] = p
        padded.append(canvas)
        if k + 1 < len(panels):
            padded.append(np.full((h, gap, c), pad_value, dtype=np.uint8))
    return np.concatenate(padded, axis=1)
