"""Offline Fashion-MNIST from its gzipped IDX files (Debian `dataset-fashion-mnist`).

tfds's `fashion_mnist` builder insists on downloading, so pds_jax reads the four
IDX files itself. Debian's package (MIT-licensed data by Zalando Research) installs
them under /usr/share/datasets/fashion-mnist; any folder holding the same four
files works (set `PDS_JAX_FASHION_MNIST_DIR` or pass `data_dir`).

IDX format (LeCun et al.): a big-endian header `0x00 0x00 <dtype> <ndim>`, then
`ndim` big-endian uint32 sizes, then the raw values.
"""

from __future__ import annotations

import gzip
import os
import struct
from typing import Optional, Tuple

import numpy as np

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "PDS_JAX_FASHION_MNIST_DIR"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str) -> np.ndarray:
    """Read one (optionally gzipped) IDX file into a NumPy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read IDX file ({e})") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4]!r})")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: IDX payload has {len(data) - header} bytes, header promises {expected} "
            f"for shape {shape}; the file is truncated or corrupt")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_data_dir(data_dir: Optional[str] = None) -> str:
    """The folder holding the IDX files: `data_dir` (strict), else $PDS_JAX_FASHION_MNIST_DIR or Debian's."""
    names = FILES["train"] + FILES["test"]
    has_all = lambda d: all(os.path.exists(os.path.join(d, f)) for f in names)
    if data_dir:  # an explicit folder must hold the files: never fall back silently
        if has_all(data_dir):
            return data_dir
        raise FileNotFoundError(
            f"{data_dir} does not hold the Fashion-MNIST IDX files ({', '.join(names)}); point the "
            f"folder at them, or leave it empty to use {ENV_VAR} or {DEBIAN_DIR}")
    candidates = [d for d in (os.environ.get(ENV_VAR), DEBIAN_DIR) if d]
    for d in candidates:
        if has_all(d):
            return d
    raise FileNotFoundError(
        "Fashion-MNIST IDX files not found (looked in: " + ", ".join(candidates) + "). "
        "Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put "
        f"{', '.join(names)} in a folder and set {ENV_VAR} (or config.data.folder) to it.")


def load(split: str = "train", data_dir: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of `split` ('train' or 'test')."""
    if split not in FILES:
        raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    folder = find_data_dir(data_dir)
    img_name, lbl_name = FILES[split]
    images = read_idx(os.path.join(folder, img_name))
    labels = read_idx(os.path.join(folder, lbl_name))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{folder}: inconsistent Fashion-MNIST files: images {images.shape}, labels {labels.shape}")
    return images, labels


def pad_to_32(images: np.ndarray) -> np.ndarray:
    """Zero-pad (N, 28, 28[, C]) images to 32×32 (2 pixels each side), as for the default model."""
    pad = [(0, 0), (2, 2), (2, 2)] + [(0, 0)] * (images.ndim - 3)
    return np.pad(images, pad)
