"""Local image sources (image folders, array files, offline Fashion-MNIST) and the
per-image preprocessing every pds_jax input pipeline shares.

A *source* is random access: `len(source)` images, and `source.read(indices)` returns
the raw images at those indices (uint8 / uint16 / float arrays, HW or HWC, possibly of
different sizes). `preprocess` turns raw images into float32 (N, size, size, C) in
[0, 1]. The pipeline in `pds_jax.data` chooses, shuffles, batches and scales.

Preprocessing follows score_sde's `datasets.py` (Song et al., 2021): a central square
crop, then a bicubic, antialiased resize to the model's resolution. Unlike its LSUN
path the resize runs in float32 and is not re-quantised to uint8 (as in its CIFAR-10
and CelebA paths), and it uses PIL's bicubic filter (Keys kernel, a = −0.5, widened
when shrinking) instead of `tf.image.resize`, so that local data never needs
TensorFlow. An image already at the model's resolution is passed through untouched.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, Sequence, Union

import numpy as np
from PIL import Image

from pds_jax import fashion_mnist

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
ARRAY_KEYS = ("images", "image", "x", "data", "arr_0")
# ITU-R BT.601 luma, the weights PIL uses for RGB → L.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class DatasetError(ValueError):
    """A dataset that cannot be found, opened or decoded; the message says what to pass instead."""


RawImages = Union[np.ndarray, List[np.ndarray]]


# --------------------------------------------------------------------------- #
# Preprocessing.
# --------------------------------------------------------------------------- #

def to_unit_float(image: np.ndarray, name: str = "image") -> np.ndarray:
    """uint8 → /255, uint16 → /65535, bool → {0, 1}; floats must already lie in [0, 1]."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
        lo, hi = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-6 or hi > 1.0 + 1e-6:
            raise DatasetError(
                f"{name}: float images must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}]. "
                "Store uint8 images (0..255) or rescale the floats to [0, 1].")
        return np.clip(image, 0.0, 1.0)
    raise DatasetError(f"{name}: unsupported image dtype {image.dtype}; use uint8, uint16 or float in [0, 1]")


def to_channels(images: np.ndarray, num_channels: int, name: str = "image") -> np.ndarray:
    """(N, H, W[, C]) → (N, H, W, num_channels): grey is repeated, RGB → grey is BT.601 luma,
    an alpha channel (C = 2 or 4) is dropped."""
    if images.ndim == 3:
        images = images[..., None]
    c = images.shape[-1]
    if c in (2, 4):
        images, c = images[..., : c - 1], c - 1
    if c == num_channels:
        return images
    if c == 1 and num_channels == 3:
        return np.repeat(images, 3, axis=-1)
    if c == 3 and num_channels == 1:
        return np.tensordot(images, LUMA, axes=([-1], [0]))[..., None].astype(np.float32)
    raise DatasetError(f"{name}: cannot turn {c}-channel images into {num_channels} channels "
                       "(config.data.num_channels must be 1 or 3)")


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Central square crop, then bicubic antialiased resize to (size, size); HWC float32."""
    h, w, c = image.shape
    crop = min(h, w)
    top, left = (h - crop) // 2, (w - crop) // 2
    image = image[top:top + crop, left:left + crop]
    if crop == size:
        return image
    out = np.empty((size, size, c), np.float32)
    for k in range(c):  # PIL's float mode 'F' is single-channel
        plane = Image.fromarray(np.ascontiguousarray(image[..., k], dtype=np.float32), mode="F")
        out[..., k] = np.asarray(plane.resize((size, size), Image.BICUBIC))
    return np.clip(out, 0.0, 1.0)


def preprocess(raw: RawImages, image_size: int, num_channels: int, names: Sequence[str] = ()) -> np.ndarray:
    """Raw images (an (N, H, W[, C]) array or a list of HW/HWC arrays) → float32
    (N, image_size, image_size, num_channels) in [0, 1]."""
    if isinstance(raw, np.ndarray) and raw.ndim in (3, 4):
        batch = to_channels(to_unit_float(raw, names[0] if names else "images"), num_channels)
        if batch.shape[1:3] == (image_size, image_size):
            return np.ascontiguousarray(batch, dtype=np.float32)
        raw = list(batch)
    out = np.empty((len(raw), image_size, image_size, num_channels), np.float32)
    for k, image in enumerate(raw):
        name = names[k] if k < len(names) else f"image {k}"
        image = to_channels(to_unit_float(image, name)[None], num_channels, name)[0]
        out[k] = center_crop_resize(image, image_size)
    return out


# --------------------------------------------------------------------------- #
# Sources.
# --------------------------------------------------------------------------- #

class ArraySource:
    """Images held in one array: (N, H, W) grey or (N, H, W, C) with C in 1, 2, 3, 4."""

    def __init__(self, images: np.ndarray, name: str = "arrays"):
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 2, 3, 4)):
            hint = (" It looks like NCHW: transpose it to NHWC." if images.ndim == 4 and images.shape[1] in (1, 3)
                    else "")
            raise DatasetError(f"{name}: expected images of shape (N, H, W) or (N, H, W, C) with C in "
                               f"1..4, got {images.shape}.{hint}")
        if images.shape[0] == 0:
            raise DatasetError(f"{name}: the array holds no images")
        self.images, self.name = images, name

    def __len__(self) -> int:
        return self.images.shape[0]

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return np.asarray(self.images[np.asarray(indices, dtype=np.int64)])

    def names(self, indices: Sequence[int]) -> List[str]:
        return [f"{self.name}[{i}]" for i in indices]


def open_array_file(path: str) -> ArraySource:
    """A `.npy` (memory-mapped) or `.npz` file of images; an .npz needs one array or a key
    among `ARRAY_KEYS`."""
    try:
        if path.endswith(".npy"):
            return ArraySource(np.load(path, mmap_mode="r", allow_pickle=False), path)
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            key = keys[0] if len(keys) == 1 else next((k for k in ARRAY_KEYS if k in keys), None)
            if key is None:
                raise DatasetError(f"{path}: cannot tell which array holds the images (keys {keys}); "
                                   f"save a single array or name it one of {ARRAY_KEYS}")
            return ArraySource(z[key], f"{path}:{key}")
    except DatasetError:
        raise
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the array file ({e})") from e


def list_images(folder: str) -> List[str]:
    """Image files under `folder`, recursively (class subfolders or flat), sorted; hidden
    files and folders are skipped."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in files
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def decode_image(path: str) -> np.ndarray:
    """Decode one image file to HW (grey) or HWC (RGB) uint8/uint16; errors name the file."""
    try:
        with Image.open(path) as im:
            if im.mode in ("1", "L"):
                return np.asarray(im.convert("L"))
            if im.mode.startswith("I;16"):
                return np.asarray(im).astype(np.uint16)
            if im.mode == "LA":
                return np.asarray(im.convert("L"))
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: cannot decode this image ({type(e).__name__}: {e}); "
                           "remove or replace the file") from e


class FolderSource:
    """Every image file under a folder (PNG, JPEG, ...), decoded with PIL on a thread pool."""

    def __init__(self, folder: str, workers: int = 0):
        if not os.path.isdir(folder):
            raise DatasetError(f"image folder {folder!r} does not exist; set --config.data.folder to a "
                               "folder of PNG/JPEG files (flat or with class subfolders)")
        self.paths = list_images(folder)
        if not self.paths:
            raise DatasetError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found in this "
                               "folder or its subfolders")
        self.workers = workers or min(8, os.cpu_count() or 1)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, indices: Sequence[int]) -> List[np.ndarray]:
        paths = [self.paths[i] for i in indices]
        if len(paths) == 1 or self.workers == 1:
            return [decode_image(p) for p in paths]
        with ThreadPoolExecutor(self.workers) as pool:  # PIL decodes with the GIL released
            return list(pool.map(decode_image, paths))

    def names(self, indices: Sequence[int]) -> List[str]:
        return [self.paths[i] for i in indices]


def fashion_mnist_source(folder: str, split: str, image_size: int) -> ArraySource:
    """Offline Fashion-MNIST (28×28 grey): zero-padded to 32×32 when image_size is 32
    (the layout the default model expects), otherwise resized by `preprocess`."""
    try:
        # fashion_mnist.find_data_dir falls back to other folders; a folder named in the
        # config must hold the files itself.
        if folder and os.path.abspath(fashion_mnist.find_data_dir(folder)) != os.path.abspath(folder):
            missing = [f for f in fashion_mnist.FILES["train"] + fashion_mnist.FILES["test"]
                       if not os.path.exists(os.path.join(folder, f))]
            raise DatasetError(f"config.data.folder={folder!r} lacks the Fashion-MNIST IDX files "
                               f"{missing}; point it at the folder holding all four, or set it to '' "
                               f"to use {fashion_mnist.ENV_VAR} / {fashion_mnist.DEBIAN_DIR}")
        images, _ = fashion_mnist.load(split, data_dir=folder or None)
    except FileNotFoundError as e:
        raise DatasetError(f"{e} Or use --config.data.dataset=folder --config.data.folder=<images>.") from e
    except ValueError as e:
        raise DatasetError(str(e)) from e
    if image_size == 32:
        images = fashion_mnist.pad_to_32(images)
    return ArraySource(images, f"fashion_mnist:{split}")
