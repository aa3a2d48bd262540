"""Turning NHWC batches into PNG files and grids (written atomically)."""

from __future__ import annotations

import io
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

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


def upscaled(images: np.ndarray, min_size: int) -> np.ndarray:
    """HWC image (or NHWC batch) enlarged by the smallest integer factor (nearest neighbour,
    so pixels stay sharp) that makes each image's smaller side >= `min_size`."""
    h_axis = np.ndim(images) - 3
    zoom = max(1, -(-min_size // min(images.shape[h_axis:h_axis + 2])))
    return np.repeat(np.repeat(images, zoom, axis=h_axis), zoom, axis=h_axis + 1) if zoom > 1 else images


def captioned(image: np.ndarray, text: str, pad_value: int = 255) -> np.ndarray:
    """The HWC uint8 image under a white caption strip (PIL's built-in font, 12 px a line);
    the image is padded on the right when the caption is wider, so no text is cut off."""
    lines = text.splitlines() or [""]
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    text_width = max(int(probe.textlength(line)) for line in lines) + 4
    if text_width > image.shape[1]:
        pad = np.full((image.shape[0], text_width - image.shape[1], image.shape[2]), pad_value, image.dtype)
        image = np.concatenate([image, pad], axis=1)
    height = 2 + 12 * len(lines)
    strip = Image.new("L" if image.shape[2] == 1 else "RGB", (image.shape[1], height), pad_value)
    ImageDraw.Draw(strip).multiline_text((2, 1), "\n".join(lines), fill=0, spacing=1)
    return np.concatenate([np.asarray(strip).reshape(height, image.shape[1], -1), image], axis=0)
