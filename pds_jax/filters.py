"""PDS filter statistics: a sharded estimation pass, the `.npz` file format and the official
`.npy` files (docs/design.md §3–§4). `pds_jax.pds` builds the preconditioner a config asks for.

Over images x_i (H, W, C) in the model's data space, per frequency/pixel and channel:

    R = log(1 + mean_i |F x_i|²)    F: full, unshifted, unnormalised 2-D DFT over H, W
    A = mean_i x_i²                 the per-pixel second moment

These are the raw statistics of the official PDS code (`mask_gen_demo.py` of
fudan-zvg/PDS: `log(1 + mean |fft2(x)|²)` and `mean x²`, which it saves as (C, H, W)
`.npy` arrays). The α normaliser turns them into filters at load time
(`pds_jax.precond.frequency_filter` / `space_filter`); it is never baked into a file.

Precision: |F x|² of a 1024² image reaches ~(H W)² ≈ 10¹², so each device sums its
share of a batch in float32 (one batch is a short sum), and the per-device partial
sums are added on the host in float64, batch after batch; the count is an integer.
Sums over a batch are order-dependent only at float32 rounding, so 1 and 8 devices
agree to ~1e-7 relative.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import warnings
from typing import Iterable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec
from tqdm.auto import tqdm

from pds_jax import resources, sharding
from pds_jax.io_utils import atomic_save_npz, load_npz

REMAKE_FIX = ("make it again with --mode=estimate (or restore the file; a shipped filter: reinstall "
              "pds_jax)")

FORMAT = "pds_jax.filters/1"


class FilterMismatchError(ValueError):
    """A filter file that does not fit the model config (resolution, channels, centering)."""


# --------------------------------------------------------------------------- #
# Statistics.
# --------------------------------------------------------------------------- #

@dataclasses.dataclass
class FilterStats:
    """Running sums of PDS statistics (host, float64) and where they came from.

    Attributes:
      sum_power: Σ_i |F x_i|², (H, W, C) float64, unshifted FFT layout.
      sum_sq: Σ_i x_i², (H, W, C) float64.
      count: number of images summed.
      centered: whether x was in [−1, 1] (config.data.centered) rather than [0, 1].
      dataset, seed, date: provenance (seed of the image subset, ISO-8601 UTC date).
      extra: any other JSON-able metadata (split, devices, ...).
    """

    sum_power: np.ndarray
    sum_sq: np.ndarray
    count: int = 0
    centered: bool = False
    dataset: str = ""
    seed: Optional[int] = None
    date: str = ""
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def zeros(cls, image_size: int, channels: int, **metadata) -> "FilterStats":
        shape = (int(image_size), int(image_size), int(channels))
        return cls(np.zeros(shape), np.zeros(shape), **metadata)

    # ---------------------------------------------------------------- derived
    @property
    def shape(self):
        return tuple(self.sum_power.shape)

    @property
    def image_size(self) -> int:
        return self.shape[0]

    @property
    def channels(self) -> int:
        return self.shape[2]

    @property
    def num_images(self) -> int:
        return self.count

    def _require_images(self):
        if self.count < 1:
            raise ValueError("no images have been accumulated; the statistics are undefined")

    @property
    def freq(self) -> np.ndarray:
        """R = log(1 + mean |F x|²), (H, W, C) float64 (natural log, unshifted)."""
        self._require_images()
        return np.log1p(self.sum_power / self.count)

    @property
    def space(self) -> np.ndarray:
        """A = mean x², (H, W, C) float64."""
        self._require_images()
        return self.sum_sq / self.count

    def add(self, sum_power, sum_sq, count: int) -> None:
        """Add the sums of `count` more images (arrays of shape (H, W, C))."""
        self.sum_power = self.sum_power + np.asarray(sum_power, np.float64)
        self.sum_sq = self.sum_sq + np.asarray(sum_sq, np.float64)
        self.count += int(count)

    def metadata(self) -> dict:
        return {"format": FORMAT, "image_size": self.image_size, "channels": self.channels,
                "centered": bool(self.centered), "dataset": self.dataset, "date": self.date,
                "num_images": self.count, "seed": self.seed, "extra": self.extra}

    # -------------------------------------------------------------------- I/O
    def save(self, path: str, overwrite: bool = False) -> str:
        """Write raw sums, R, A and JSON metadata to `path` (.npz, atomic; refuses to
        overwrite unless `overwrite`)."""
        self._require_images()
        return atomic_save_npz(path, {
            "sum_power": self.sum_power, "sum_sq": self.sum_sq, "count": np.int64(self.count),
            "freq": self.freq, "space": self.space,
            "metadata": np.array(json.dumps(self.metadata(), sort_keys=True)),
        }, overwrite=overwrite)

    @classmethod
    def load(cls, path: str) -> "FilterStats":
        """Read a file written by `save`."""
        arrays = load_npz(path, "filter file", fix=REMAKE_FIX)
        if "metadata" not in arrays or "sum_power" not in arrays:
            raise ValueError(f"{path}: not a pds_jax filter file (keys {sorted(arrays)}); official PDS "
                             ".npy files are read with load_official_npy")
        try:
            meta = json.loads(str(arrays["metadata"]))
        except json.JSONDecodeError as e:
            raise ValueError(f"filter file {path}: its metadata is not JSON ({e}); {REMAKE_FIX}") from e
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown filter file format {meta.get('format')!r} (expected {FORMAT})")
        return cls(arrays["sum_power"].astype(np.float64), arrays["sum_sq"].astype(np.float64),
                   int(arrays["count"]), bool(meta["centered"]), meta.get("dataset", ""),
                   meta.get("seed"), meta.get("date", ""), meta.get("extra", {}))


# --------------------------------------------------------------------------- #
# The sharded pass.
# --------------------------------------------------------------------------- #

@functools.lru_cache(maxsize=None)
def _partial_sums_fn(mesh):
    """jit(shard_map): each device sums |rfft2 x|² and x² over its rows of the batch.

    Returns (n_dev, C, H, W//2+1) and (n_dev, H, W, C) float32, still sharded; the host
    adds the device rows in float64. The half spectrum suffices: x is real, so
    |F x|²[k] = |F x|²[−k] (`_full_spectrum`). A `lax.scan` over the device's images,
    each FFT'd channel-first, beats one batched FFT over NHWC by 4–8x on CPU (cache
    locality) and never holds a batch-sized complex array (1024² images).
    """
    def per_device(x, mask):
        _, H, W, C = x.shape

        def add_image(sums, image_and_weight):
            image, weight = image_and_weight  # weight 0 for padded rows: not counted
            spectrum = jnp.fft.rfft2(jnp.transpose(image, (2, 0, 1)))
            power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
            return (sums[0] + weight * power, sums[1] + weight * image * image), None

        zeros = (jnp.zeros((C, H, W // 2 + 1), jnp.float32), jnp.zeros((H, W, C), jnp.float32))
        zeros = jax.lax.pcast(zeros, sharding.DATA_AXIS, to="varying")  # per-device sums
        (power, sq), _ = jax.lax.scan(add_image, zeros, (x, mask))
        return power[None], sq[None]

    spec = PartitionSpec(sharding.DATA_AXIS)
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(spec, spec), out_specs=(spec, spec)))


def _full_spectrum(half: np.ndarray, width: int) -> np.ndarray:
    """(H, W//2+1, C) half spectrum of a real signal's power → (H, W, C): P[h, w] = P[−h, −w]."""
    H = half.shape[0]
    full = np.empty((H, width) + half.shape[2:], half.dtype)
    full[:, : half.shape[1]] = half
    cols = np.arange(half.shape[1], width)
    full[:, cols] = half[(-np.arange(H)) % H][:, width - cols]
    return full


def estimate(batches: Iterable[np.ndarray], image_size: int, channels: int,
             num_images: Optional[int] = 200, *, dataset: str = "", centered: bool = False,
             seed: Optional[int] = None, mesh=None, progress: bool = True,
             extra: Optional[dict] = None) -> FilterStats:
    """Accumulate R and A over the first `num_images` images of `batches`, sharded.

    Args:
      batches: float (B, H, W, C) arrays in the model's data space (any B; B may vary).
      image_size, channels: the expected H = W and C.
      num_images: stop after exactly this many images (a batch is cut); None: all.
      dataset, centered, seed, extra: metadata stored with the statistics.
      mesh: a 1-D ('data',) mesh; default all local devices (`pds_jax.sharding.data_mesh`).
      progress: show a tqdm bar.

    Each batch is zero-padded to a multiple of the device count (and to the first
    batch's padded size, so a short last batch does not recompile), split over the
    mesh, summed per device in float32 and added on the host in float64; padded rows
    are masked out and not counted.
    """
    mesh = mesh or sharding.data_mesh()
    n_dev = mesh.devices.size
    fn = _partial_sums_fn(mesh)
    shape = (int(image_size), int(image_size), int(channels))
    sum_half = np.zeros((shape[2], shape[0], shape[1] // 2 + 1))  # channel-first, as computed
    sum_sq = np.zeros(shape)
    count, padded = 0, [0]

    def wanted():  # the first num_images images, checked; a batch is cut at the limit
        nonlocal count
        for batch in batches:
            if num_images is not None and count >= num_images:
                break
            batch = _check_batch(batch, shape)
            if num_images is not None:
                batch = batch[: num_images - count]
            if batch.shape[0]:
                count += batch.shape[0]
                yield batch

    def padded_size(n):  # never shrinks, so a short last batch does not recompile
        padded[0] = max(padded[0], -(-n // n_dev) * n_dev)
        return padded[0]

    with tqdm(total=num_images, unit="img", desc="filter statistics", disable=not progress) as bar:
        for result, n in sharding.map_batches(fn, wanted(), mesh, padded_size=padded_size, with_mask=True):
            power, sq = jax.device_get(result)
            sum_half += np.sum(power, axis=0, dtype=np.float64)
            sum_sq += np.sum(sq, axis=0, dtype=np.float64)
            bar.update(n)
    if count == 0:
        raise ValueError("the input pipeline produced no images; check the dataset and num_images")
    if num_images is not None and count < num_images:
        warnings.warn(f"asked for {num_images} images but the data ran out after {count}; the "
                      f"statistics use {count}", RuntimeWarning, stacklevel=2)
    sum_power = _full_spectrum(np.moveaxis(sum_half, 0, -1), shape[1])
    if not (np.all(np.isfinite(sum_power)) and np.all(np.isfinite(sum_sq))):
        raise ValueError("non-finite filter statistics: the images contain NaN or Inf")
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info = {"devices": int(n_dev)}
    info.update(extra or {})
    return FilterStats(sum_power, sum_sq, count, bool(centered), dataset, seed, date, info)


def _check_batch(batch, shape) -> np.ndarray:
    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.shape[1:] != shape:
        raise ValueError(f"filter estimation expects (B, {shape[0]}, {shape[1]}, {shape[2]}) batches "
                         f"(config.data.image_size / num_channels), got {batch.shape}")
    if not np.issubdtype(batch.dtype, np.floating):
        raise TypeError(f"batches must be float images in the model's data space, got {batch.dtype} "
                        "(pds_jax.data.get_dataset produces them)")
    return batch.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- #
# Official files, compatibility with a config.
# --------------------------------------------------------------------------- #

def load_official_npy(path: str) -> np.ndarray:
    """An official PDS filter file (raw R or A, (C, H, W) or (1, C, H, W)) → (H, W, C) float64.

    The official sampler reshapes the file to (1, C, H, W) and normalises it at load
    time; these files have no metadata (the official script uses [0, 1] images).
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the .npy filter file ({e})") from e
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{path}: official PDS filters are (C, H, W) or (1, C, H, W), got {arr.shape}")
    if arr.shape[0] not in (1, 3) and arr.shape[-1] in (1, 3):
        raise ValueError(f"{path}: shape {arr.shape} looks like (H, W, C), but official PDS .npy files "
                         "are channel-first (C, H, W); transpose it with np.moveaxis(a, -1, 0)")
    arr = np.moveaxis(np.asarray(arr, np.float64), 0, -1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: the filter contains NaN or Inf")
    return arr


def check_compatible(stats_or_array: Union[FilterStats, np.ndarray], config, source: str = "filter") -> None:
    """Raise `FilterMismatchError` unless the statistics fit config.data (image_size,
    num_channels, and for `FilterStats` also `centered`)."""
    data = config.data
    want = (int(data.image_size), int(data.image_size), int(data.num_channels))
    got = tuple(stats_or_array.shape)
    fix = ("estimate a matching file with `python main.py --mode=estimate` and this config, or pick "
           "the file made for this model")
    if got != want:
        raise FilterMismatchError(
            f"{source}: statistics of shape {_fmt(got)} (H×W×C) do not fit the model, which expects "
            f"{_fmt(want)} (config.data.image_size={want[0]}, config.data.num_channels={want[2]}); {fix}")
    if isinstance(stats_or_array, FilterStats) and bool(stats_or_array.centered) != bool(data.centered):
        space = lambda c: "[-1, 1]" if c else "[0, 1]"
        raise FilterMismatchError(
            f"{source}: statistics were estimated on data in {space(stats_or_array.centered)} "
            f"(centered={stats_or_array.centered}) but config.data.centered={bool(data.centered)} "
            f"puts the model's data in {space(data.centered)}; R and A depend on the range: {fix}")


def _fmt(shape) -> str:
    return "×".join(str(s) for s in shape)


def load_statistic(path: str, kind: str, config, source: str = "", return_path: bool = False):
    """R (kind='freq') or A (kind='space') from an official `.npy` or our `.npz`, checked
    against `config`; (H, W, C) float64. The path is found with `pds_jax.resources.resolve`;
    with `return_path`, returns (array, the file read)."""
    if kind not in ("freq", "space"):
        raise ValueError(f"kind must be 'freq' or 'space', got {kind!r}")
    path = resources.resolve(path, what=source or "filter file",
                             fix="point it at an official PDS .npy or a pds_jax .npz (made by --mode=estimate)")
    source = source or path
    if path.endswith(".npy"):
        arr = load_official_npy(path)
        check_compatible(arr, config, source)
    elif path.endswith(".npz"):
        stats = FilterStats.load(path)
        check_compatible(stats, config, source)
        arr = stats.freq if kind == "freq" else stats.space
    else:
        raise ValueError(f"{source}: filter files are official PDS .npy or pds_jax .npz files")
    return (arr, path) if return_path else arr
