"""Input pipelines: NumPy float32 NHWC batches in the model's data space.

`get_dataset(config, ...)` reads `config.data.dataset`:

| dataset                | images come from                                                        |
|------------------------|-------------------------------------------------------------------------|
| any tfds builder name  | `tfds.builder(name, data_dir=config.data.tfds_data_dir).as_dataset()`  |
|                        | — a copy prepared beforehand; pds_jax never downloads                   |
| `'folder'`             | every PNG/JPEG/... under `config.data.folder` (flat or class subfolders) |
| `'arrays'`             | a `.npy`/`.npz` file `config.data.folder` of uint8 or [0, 1] float      |
|                        | images, (N, H, W) or (N, H, W, C)                                        |
| `'fashion_mnist_local'`| the gzipped IDX files in `config.data.folder` (default: Debian's)       |

Every image is centrally cropped and resized to `config.data.image_size`, converted
to `config.data.num_channels`, scaled to [0, 1] and then, like score_sde's
`get_data_scaler`, to [−1, 1] when `config.data.centered` is True. Random flips and
uniform dequantization are training augmentations, applied only with `train=True`
(score_sde applies them unless `evaluation`); filter statistics never use them.
See `pds_jax.image_sources` for the preprocessing details.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from pds_jax.image_sources import (DatasetError, FolderSource, fashion_mnist_source, open_array_file,
                                   preprocess)

LOCAL_DATASETS = ("folder", "arrays", "fashion_mnist_local")
TFDS_SHUFFLE_BUFFER = 10_000  # score_sde's, for small images


def shuffle_buffer_size(image_size: int, channels: int, budget_bytes: int = 1 << 30) -> int:
    """score_sde's 10 000-image tfds shuffle buffer, cut to ~1 GiB of images at large sizes."""
    return int(np.clip(budget_bytes // (image_size * image_size * channels), 100, TFDS_SHUFFLE_BUFFER))

__all__ = ["DatasetError", "get_dataset", "get_data_scaler", "get_data_inverse_scaler",
           "open_local_source", "preprocess_source", "finish_batch", "tfds_builder", "import_tfds"]


def get_data_scaler(config) -> Callable:
    """[0, 1] → the model's data space: identity, or x ↦ 2x − 1 when config.data.centered."""
    if config.data.centered:
        return lambda x: x * 2.0 - 1.0
    return lambda x: x


def get_data_inverse_scaler(config) -> Callable:
    """The model's data space → [0, 1] (inverse of `get_data_scaler`)."""
    if config.data.centered:
        return lambda x: (x + 1.0) / 2.0
    return lambda x: x


# --------------------------------------------------------------------------- #
# Sources.
# --------------------------------------------------------------------------- #

def open_local_source(config, split: Optional[str] = None):
    """The random-access source of a local dataset ('folder', 'arrays', 'fashion_mnist_local')."""
    data = config.data
    name, path = data.dataset, data.get("folder", "")
    if name == "fashion_mnist_local":
        return fashion_mnist_source(path, split or data.get("split", "train"), data.image_size)
    if not path:
        raise DatasetError(f"config.data.dataset={name!r} needs a path: --config.data.folder=<an image "
                           "folder or a .npy/.npz file of images>")
    if path.endswith((".npy", ".npz")):
        if not os.path.isfile(path):
            raise DatasetError(f"array file {path!r} does not exist (config.data.folder)")
        return open_array_file(path)
    if name == "arrays":
        raise DatasetError(f"config.data.dataset='arrays' needs a .npy or .npz file, got {path!r}; for a "
                           "folder of images use --config.data.dataset=folder")
    return FolderSource(path)


def import_tfds(dataset: str):
    """(tensorflow, tensorflow_datasets), the optional `pds_jax[tfds]` extra, imported on tfds paths only.

    The default install has no TensorFlow (~1.3 GB); local datasets never need it.
    """
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DatasetError(
            f"config.data.dataset={dataset!r} is read with tensorflow-datasets, which is not installed "
            f"({e}); install it with: pip install 'pds_jax[tfds]' (or use a local dataset: "
            f"{', '.join(LOCAL_DATASETS)})") from None
    return tf, tfds


def tfds_builder(name: str, data_dir: str = ""):
    """`tfds.builder(name)` that fails within seconds, never downloads, and says what to do.

    Raises `DatasetError` when tfds knows no such builder, or when the dataset has not
    been prepared in `data_dir` (tfds's default folder when empty).
    """
    _, tfds = import_tfds(name)

    local = ("--config.data.dataset=folder --config.data.folder=<a folder of PNG/JPEG images>, "
             "--config.data.dataset=arrays --config.data.folder=<images.npy>, or "
             "--config.data.dataset=fashion_mnist_local")
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetError(
            f"config.data.dataset={name!r} is neither a tfds dataset nor one of {LOCAL_DATASETS}. Use a "
            f"tfds builder name (e.g. 'cifar10', 'celeb_a', 'lsun/bedroom') or local data: {local}.") from None
    except (ValueError, AssertionError, TypeError) as e:
        raise DatasetError(f"tfds cannot build dataset {name!r}: {str(e).splitlines()[0]}") from e
    if not builder.is_prepared():
        raise DatasetError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir!r}, and pds_jax never downloads "
            f"(this machine may be offline). Prepare it where there is a network (`tfds build {name} "
            f"--data_dir=DIR`), copy DIR here and pass --config.data.tfds_data_dir=DIR; or use {local}.")
    return builder


def _tfds_image_key(builder, split: str) -> str:
    """The image feature of a tfds builder; checks that `split` exists."""
    _, tfds = import_tfds(builder.name)

    features = builder.info.features
    key = "image" if "image" in features else next(
        (k for k, f in features.items() if isinstance(f, tfds.features.Image)), None)
    if key is None:
        raise DatasetError(f"tfds dataset {builder.name!r} has no image feature (features: {list(features)})")
    missing = [part for part in (p.split("[")[0].strip() for p in split.split("+"))
               if part not in builder.info.splits]
    if missing:
        raise DatasetError(f"tfds dataset {builder.name!r} has no split {split!r} (splits: "
                           f"{list(builder.info.splits)}); set --config.data.split")
    return key


def _tfds_raw_batches(builder, key: str, split: str, batch_size: int, shuffle: bool, seed: int,
                      num_images: Optional[int], num_epochs: Optional[int],
                      buffer_size: int, rows: Optional[Tuple[int, int]] = None) -> Iterator[List[np.ndarray]]:
    """Raw uint8 images of a prepared tfds dataset, grouped per epoch in lists of `batch_size`;
    with `rows` = (start, stop), only those positions of the (seeded) subset, decoded alone."""
    tf, tfds = import_tfds(builder.name)

    options = tf.data.Options()
    options.deterministic = True
    read_config = tfds.ReadConfig(shuffle_seed=seed, options=options)
    # Shuffle the encoded images and decode only those taken: a buffer of decoded
    # 1024² images would need tens of GB (score_sde lowers its buffer by hand there).
    ds = builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config,
                            decoders={key: tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: ex[key])
    if shuffle:  # seeded; with num_images the subset (and its order) stays the same each epoch
        ds = ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=num_images is None)
    if num_images is not None:
        ds = ds.take(num_images)
    if rows is not None:
        ds = ds.skip(rows[0]).take(rows[1] - rows[0])
    feature = builder.info.features[key]
    ds = ds.map(feature.decode_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    epoch = 0
    while num_epochs is None or epoch < num_epochs:
        chunk: List[np.ndarray] = []
        for image in ds.as_numpy_iterator():
            chunk.append(image)
            if len(chunk) == batch_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        epoch += 1


def _local_raw_batches(source, batch_size: int, shuffle: bool, seed: int, num_images: Optional[int],
                       num_epochs: Optional[int], part: Optional[Tuple[int, int]] = None):
    """(raw images, names) of a random-access source; a seeded subset, reshuffled each epoch.

    With `part` = (i, P), only the i-th of P contiguous, disjoint pieces of that subset
    ([i·n//P, (i+1)·n//P) of its n images), so P processes together read it exactly once.
    """
    rng = np.random.default_rng(seed)
    n = len(source)
    subset = rng.permutation(n) if shuffle else np.arange(n)
    if num_images is not None:
        subset = subset[:num_images]
    if part is not None:
        i, count = part
        subset = subset[i * len(subset) // count:(i + 1) * len(subset) // count]
    epoch = 0
    while num_epochs is None or epoch < num_epochs:
        order = subset if (epoch == 0 or not shuffle) else rng.permutation(subset)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size].tolist()
            yield source.read(idx), source.names(idx)
        epoch += 1


# --------------------------------------------------------------------------- #
# The pipeline.
# --------------------------------------------------------------------------- #

def get_dataset(config, split: Optional[str] = None, batch_size: int = 50, shuffle: bool = False,
                seed: int = 0, num_images: Optional[int] = None, drop_remainder: bool = False,
                train: bool = False, num_epochs: Optional[int] = 1,
                part: Optional[Tuple[int, int]] = None) -> Iterator[np.ndarray]:
    """Iterate over float32 (B, H, W, C) NumPy batches in the model's data space.

    Args:
      config: reads config.data.{dataset, image_size, num_channels, centered, folder,
        tfds_data_dir, split} and, when `train`, {random_flip, uniform_dequantization}.
      split: dataset split (tfds split strings such as 'train[:10%]' work); default
        config.data.split or 'train'. Ignored by 'folder' and 'arrays'.
      batch_size: images per batch; the last batch of an epoch may be smaller.
      shuffle: visit the images in a seeded random order (and so pick a random subset
        when `num_images` is set); False keeps the file / tfds order.
      seed: seeds the order, the subset, flips and dequantization noise. The same seed
        gives the same batches.
      num_images: use only this many images per epoch (the first ones of the order).
      drop_remainder: drop the last, smaller batch of each epoch.
      train: apply config.data.random_flip and config.data.uniform_dequantization.
      num_epochs: passes over the data; None repeats forever.
      part: (i, P): this process's share of a run over P processes. 'folder'/'arrays': the
        i-th of P contiguous pieces of the (seeded) image subset; tfds: the split of
        `tfds.split_for_jax_process` and the i-th share of `num_images`.

    Raises:
      DatasetError: within seconds when the dataset cannot be found or read (it says
        what to pass instead), or naming the file of an image that cannot be decoded.
    """
    data = config.data
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_images is not None and num_images < 1:
        raise ValueError(f"num_images must be >= 1 or None, got {num_images}")
    size, channels = int(data.image_size), int(data.num_channels)
    if channels not in (1, 3):
        raise DatasetError(f"config.data.num_channels must be 1 or 3, got {channels}")
    split = split or data.get("split", "") or "train"
    if data.dataset in LOCAL_DATASETS:
        source = open_local_source(config, split)  # opened now, so errors surface at the call
        raw = _local_raw_batches(source, batch_size, shuffle, seed, num_images, num_epochs, part)
    else:
        builder = tfds_builder(data.dataset, data.get("tfds_data_dir", ""))  # fails fast, here
        key = _tfds_image_key(builder, split)  # checks the split's name (before it becomes a ReadInstruction)
        rows = None
        if part is not None:
            split, rows = _tfds_part(split, num_images, part)
        raw = ((chunk, ()) for chunk in
               _tfds_raw_batches(builder, key, split, batch_size, shuffle, seed, num_images, num_epochs,
                                 shuffle_buffer_size(size, channels), rows))
    return _batches(raw, config, batch_size, drop_remainder, train, np.random.default_rng([seed, 1]))


def _tfds_part(split: str, num_images: Optional[int], part: Tuple[int, int]):
    """(split, rows) of process i of P in a multi-process tfds pass.

    The whole split: `tfds.split_for_jax_process`, each process reading its own files.
    A subset of num_images: every process reads the same seeded stream (deterministic
    options, the same files) up to num_images encoded records and keeps positions
    [i·n//P, (i+1)·n//P), so the P shares together are exactly the subset one process
    takes; only a process's own share is decoded.
    """
    _, tfds = import_tfds(split)
    i, count = part
    if num_images is None:
        return tfds.split_for_jax_process(split, process_index=i, process_count=count), None
    return split, (i * num_images // count, (i + 1) * num_images // count)


def preprocess_source(source, indices, config) -> np.ndarray:
    """Images `indices` of a local source, preprocessed to [0, 1] float32 NHWC."""
    return preprocess(source.read(indices), int(config.data.image_size), int(config.data.num_channels),
                      source.names(indices))


def finish_batch(x: np.ndarray, config, rng: np.random.Generator, train: bool) -> np.ndarray:
    """Training augmentations (when `train`) and the data scaler, on a [0, 1] batch."""
    data = config.data
    if train and data.get("random_flip", False):  # left-right, as tf.image.random_flip_left_right
        mask = rng.random(x.shape[0]) < 0.5
        x[mask] = x[mask, :, ::-1]
    if train and data.get("uniform_dequantization", False):  # score_sde: (u + 255 x) / 256
        x = (rng.random(x.shape, dtype=np.float32) + x * 255.0) / 256.0
    return np.asarray(get_data_scaler(config)(x), dtype=np.float32)


def _batches(raw, config, batch_size, drop_remainder, train, rng):
    size, channels = int(config.data.image_size), int(config.data.num_channels)
    for images, names in raw:
        x = preprocess(images, size, channels, names)
        if drop_remainder and x.shape[0] < batch_size:
            continue
        yield finish_batch(x, config, rng, train)
