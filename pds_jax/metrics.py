"""Sample-quality metrics: FID and KID from the features of a fixed network.

* **FID** (Heusel et al. 2017, arXiv 1706.08500): fit a Gaussian to the features of
  each image set and take the squared Fréchet (2-Wasserstein) distance between them
  (Dowson & Landau 1982):

      FD = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁ Σ₂).

  Σ₁Σ₂ is similar to the PSD matrix √Σ₁ Σ₂ √Σ₁, so tr √(Σ₁Σ₂) = Σᵢ √λᵢ(√Σ₁ Σ₂ √Σ₁):
  two symmetric eigendecompositions in float64 on the host, tiny negative eigenvalues
  (round-off) clipped to 0. Unlike `scipy.linalg.sqrtm` of the non-symmetric product,
  this needs no complex arithmetic and stays stable for singular covariances (fewer
  samples than feature dimensions).
* **KID** (Bińkowski et al. 2018, arXiv 1801.01401): unbiased MMD² with the cubic
  polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets. Defaults
  as torch-fidelity / clean-fid / the MMD-GAN reference code: 100 subsets of 1000
  samples (capped by the sample counts), reported as mean and standard deviation.

Feature statistics are accumulated by `compute_statistics`: the feature network runs
jitted, with each batch sharded over all local devices (1-D 'data' mesh of
`pds_jax.sharding`); the last partial batch is zero-padded and the padding dropped;
the per-batch moments are merged on the host in float64 (Chan et al.'s pairwise
update), so the result does not depend on the batch size or the number of devices.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Callable, Iterable, Iterator, Optional, Tuple, Union

import jax
import numpy as np
from tqdm.auto import tqdm

from pds_jax import resources, sharding
# re-exported: the metrics API is one module; the distances live in their own
from pds_jax.distances import (KID, KID_NUM_SUBSETS, KID_SUBSET_SIZE, _symmetric, frechet_distance,  # noqa: F401
                               kid, mmd2_unbiased, polynomial_kernel)
from pds_jax.io_utils import atomic_save_npz, load_npz

STATS_FORMAT = "pds_jax.feature_statistics/1"

Images = Union[np.ndarray, jax.Array, Iterable[np.ndarray]]


# ------------------------------------------------------------- feature statistics


@dataclasses.dataclass(frozen=True)
class FeatureStatistics:
    """Gaussian summary of a set of features, plus where it came from.

    mean (d,) and cov (d, d) in float64 (cov with the 1/(N−1) normalisation, as
    `np.cov`); count = N (0 when unknown, e.g. a pytorch-fid file); feature_net: the
    registry name of the network (`feature_nets.get_feature_fn`); image_size: (H, W, C)
    of the images fed to it; features: the raw (N, d) features when kept (for KID).
    """

    mean: np.ndarray
    cov: np.ndarray
    count: int
    feature_net: str
    dataset: str = ""
    image_size: Tuple[int, ...] = ()
    features: Optional[np.ndarray] = None

    def __post_init__(self):
        d = np.shape(self.mean)[0] if np.ndim(self.mean) == 1 else -1
        if d < 1 or np.shape(self.cov) != (d, d):
            raise ValueError(f"FeatureStatistics: mean {np.shape(self.mean)} and cov "
                             f"{np.shape(self.cov)} are not (d,) and (d, d)")
        if self.features is not None and (np.ndim(self.features) != 2
                                          or np.shape(self.features)[1] != d):
            raise ValueError(f"FeatureStatistics: features {np.shape(self.features)} are not (N, {d})")

    @property
    def dim(self) -> int:
        return int(np.shape(self.mean)[0])


def check_compatible(stats1: FeatureStatistics, stats2: FeatureStatistics) -> None:
    """Raise ValueError unless both statistics come from the same feature network."""
    if stats1.feature_net != stats2.feature_net:
        raise ValueError(
            f"statistics come from different feature networks: {stats1.feature_net!r} "
            f"({stats1.dataset or 'first set'}) vs {stats2.feature_net!r} "
            f"({stats2.dataset or 'second set'}); distances across networks are meaningless. "
            "Recompute one of them with the other's feature network.")
    if stats1.dim != stats2.dim:
        raise ValueError(
            f"statistics of feature network {stats1.feature_net!r} have different dimensions: "
            f"{stats1.dim} vs {stats2.dim}; one of them was computed with a different version "
            "of the network. Recompute it.")


def fid_from_statistics(stats1: FeatureStatistics, stats2: FeatureStatistics) -> float:
    """FID (squared Fréchet distance) between two compatible `FeatureStatistics`."""
    check_compatible(stats1, stats2)
    return frechet_distance(stats1.mean, stats1.cov, stats2.mean, stats2.cov)


def kid_from_statistics(stats1: FeatureStatistics, stats2: FeatureStatistics,
                        **kid_kwargs) -> KID:
    """KID from the raw features stored in two compatible `FeatureStatistics`."""
    check_compatible(stats1, stats2)
    for s in (stats1, stats2):
        if s.features is None:
            raise ValueError(
                f"statistics of {s.dataset or 'a set'} hold no raw features, which KID needs; "
                "recompute them with compute_statistics(..., keep_features=True)")
    return kid(stats1.features, stats2.features, **kid_kwargs)


class _Moments:
    """Running count, mean (d,) and scatter Σ(f − mean)(f − mean)ᵀ (d, d) in float64.

    Batches are merged with the pairwise update of Chan, Golub & LeVeque (1979):
    δ = mean_b − mean_a, M₂ = M₂ᵃ + M₂ᵇ + δδᵀ nₐ n_b / (nₐ + n_b) — no catastrophic
    cancellation from Σffᵀ − N μμᵀ when the mean is large against the spread.
    """

    def __init__(self):
        self.count = 0
        self.mean: Optional[np.ndarray] = None
        self.scatter: Optional[np.ndarray] = None

    def add(self, features: np.ndarray) -> None:
        f = np.asarray(features, np.float64)
        nb = f.shape[0]
        if nb == 0:
            return
        mean_b = f.mean(axis=0)
        centred = f - mean_b
        scatter_b = centred.T @ centred
        if self.count == 0:
            self.count, self.mean, self.scatter = nb, mean_b, scatter_b
            return
        n = self.count + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.scatter = self.scatter + scatter_b + np.outer(delta, delta) * (self.count * nb / n)
        self.count = n

    def covariance(self) -> np.ndarray:
        return _symmetric(self.scatter / (self.count - 1))


def _to_float_images(batch: np.ndarray) -> np.ndarray:
    if batch.dtype == np.uint8:  # raw pixels: 0..255 → [0, 1]
        return batch.astype(np.float32) / 255.0
    return batch.astype(np.float32, copy=False)


def _host_batches(images: Images, batch_size: int) -> Iterator[np.ndarray]:
    """Re-chunk an (N, H, W, C) array or an iterable of NHWC arrays into `batch_size` rows."""
    if hasattr(images, "shape") and hasattr(images, "ndim"):
        array = images
        chunks: Iterable = (array[i:i + batch_size] for i in range(0, array.shape[0], batch_size))
    else:
        chunks = images
    pending, have = [], 0
    for chunk in chunks:
        chunk = np.asarray(chunk)
        if chunk.ndim != 4:
            raise ValueError(f"images must be NHWC batches (B, H, W, C), got shape {chunk.shape}; "
                             "add a channel axis for grayscale (x[..., None])")
        pending.append(chunk)
        have += chunk.shape[0]
        while have >= batch_size:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield joined[:batch_size]
            rest = joined[batch_size:]
            pending, have = ([rest] if len(rest) else []), len(rest)
    if have:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]


def _jitted_feature_fn(feature_fn: Callable, mesh) -> Callable[[jax.Array], jax.Array]:
    """jit the feature net; parameters (if exposed) are replicated arguments, not constants."""
    if hasattr(feature_fn, "apply") and hasattr(feature_fn, "params"):
        apply = jax.jit(feature_fn.apply)
        params = jax.device_put(feature_fn.params, sharding.replicated(mesh))
        return lambda x: apply(params, x)
    return jax.jit(feature_fn)


def iterate_features(images: Images, feature_fn: Callable, batch_size: int = 250, *,
                     mesh=None, num_images: Optional[int] = None, progress: bool = True,
                     desc: str = "features") -> Iterator[np.ndarray]:
    """Yield host feature batches (b, d), float32, in the order of `images`.

    `images`: an (N, H, W, C) array or an iterable of NHWC batches of any sizes, in
    [0, 1] (float) or 0..255 (uint8). `feature_fn`: a jittable images → (B, d)
    function, or a `feature_nets.FeatureExtractor` (its params are passed as jit
    arguments). Each batch is padded to a multiple of the device count, sharded over
    the 'data' mesh, and the padding rows are dropped from the result.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mesh = mesh or sharding.data_mesh()
    n_dev = mesh.devices.size
    padded_size = -(-batch_size // n_dev) * n_dev
    fn = _jitted_feature_fn(feature_fn, mesh)
    total = num_images if num_images is not None else (
        images.shape[0] if hasattr(images, "shape") else None)
    first_shape = None
    done = 0

    def finish(device_out, n):  # pull one batch to the host and check it
        nonlocal done
        out = np.asarray(device_out)
        if out.ndim != 2 or out.shape[0] != padded_size:
            raise ValueError(f"feature_fn must map (B, H, W, C) → (B, d); for B = "
                             f"{padded_size} it returned shape {out.shape}")
        out = out[:n]  # drop the padding rows
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"feature_fn returned NaN/inf for images "
                                     f"{done}..{done + n - 1}; check their range ([0, 1]) "
                                     "and the feature-net weights")
        done += n
        bar.update(n)
        return out

    def checked(batches):
        nonlocal first_shape
        for batch in batches:
            if first_shape is None:
                first_shape = batch.shape[1:]
            elif batch.shape[1:] != first_shape:
                raise ValueError(f"image shape changed from {first_shape} to {batch.shape[1:]} "
                                 f"after {done} images; all images must share one size")
            yield _to_float_images(batch)

    with tqdm(total=total, unit="img", desc=desc, disable=not progress) as bar:
        for out, n in sharding.map_batches(fn, checked(_host_batches(images, batch_size)), mesh,
                                           padded_size=lambda n: padded_size):
            yield finish(out, n)


def compute_features(images: Images, feature_fn: Callable, batch_size: int = 250, *,
                     mesh=None, num_images: Optional[int] = None,
                     progress: bool = True) -> np.ndarray:
    """All features of `images` as one (N, d) float32 array (see `iterate_features`)."""
    batches = list(iterate_features(images, feature_fn, batch_size, mesh=mesh,
                                    num_images=num_images, progress=progress))
    if not batches:
        raise ValueError("no images were given")
    return np.concatenate(batches)


def compute_statistics(images: Images, feature_fn: Callable, batch_size: int = 250, *,
                       feature_net: Optional[str] = None, dataset: str = "",
                       keep_features: bool = False, mesh=None,
                       num_images: Optional[int] = None,
                       progress: bool = True) -> FeatureStatistics:
    """Mean/covariance of the features of `images` (see `iterate_features` for inputs).

    `feature_net` names the network in the statistics (defaults to `feature_fn.name`
    for a `FeatureExtractor`; required otherwise). `keep_features=True` also keeps
    the raw (N, d) features, which KID needs.
    """
    feature_net = feature_net or getattr(feature_fn, "name", None)
    if not feature_net:
        raise ValueError("name the feature network: pass feature_net='...' (or use a "
                         "FeatureExtractor from pds_jax.feature_nets.get_feature_fn)")
    if hasattr(images, "shape"):
        image_size = tuple(int(s) for s in images.shape[1:])
    else:  # peek at the first batch of an iterable for its image size
        iterator = iter(images)
        first = next(iterator, None)
        if first is None:
            raise ValueError("no images were given")
        image_size = tuple(int(s) for s in np.shape(first)[1:])
        images = itertools.chain([first], iterator)
    moments, kept = _Moments(), []
    for feats in iterate_features(images, feature_fn, batch_size, mesh=mesh,
                                  num_images=num_images, progress=progress,
                                  desc=f"{feature_net} statistics"):
        moments.add(feats)
        if keep_features:
            kept.append(feats)
    if moments.count < 2:
        raise ValueError(f"a covariance needs at least 2 images, got {moments.count}")
    return FeatureStatistics(
        mean=moments.mean, cov=moments.covariance(), count=moments.count,
        feature_net=feature_net, dataset=dataset, image_size=image_size,
        features=np.concatenate(kept) if keep_features else None)


# ---------------------------------------------------------------------- files


_REQUIRED_KEYS = ("format", "mean", "cov", "count", "feature_net")


def save_statistics(path: str, stats: FeatureStatistics, overwrite: bool = False) -> str:
    """Write `stats` to a compressed `.npz` (atomically; see `load_statistics`)."""
    arrays = dict(format=np.str_(STATS_FORMAT), mean=stats.mean, cov=stats.cov,
                  count=np.int64(stats.count), feature_net=np.str_(stats.feature_net),
                  dataset=np.str_(stats.dataset),
                  image_size=np.asarray(stats.image_size, np.int64))
    if stats.features is not None:
        arrays["features"] = np.asarray(stats.features, np.float32)
    return atomic_save_npz(path, arrays, overwrite=overwrite)


def _read_npz(path: str) -> dict:
    path = resources.resolve(path, what="statistics file",
                             fix="create it with pds_jax.metrics.compute_statistics(...) and "
                                 "save_statistics(path, stats)")
    return load_npz(path, "statistics file", fix="compute it again with pds_jax.metrics.compute_statistics "
                    "and save_statistics (or restore the file; a shipped one: reinstall pds_jax)")


def load_statistics(path: str, feature_net: Optional[str] = None,
                    dim: Optional[int] = None) -> FeatureStatistics:
    """Read statistics written by `save_statistics` (or pytorch-fid's `mu`/`sigma` files).

    With `feature_net` / `dim` given, raise ValueError when the file was made with a
    different network or has another feature dimension. pytorch-fid `.npz` files hold
    only `mu` and `sigma` of its 2048-d pool3 features; they load as feature_net
    'inception' with count 0 (unknown).
    """
    data = _read_npz(path)
    if "format" not in data and {"mu", "sigma"} <= set(data):
        stats = FeatureStatistics(mean=np.asarray(data["mu"], np.float64),
                                  cov=np.asarray(data["sigma"], np.float64), count=0,
                                  feature_net="inception", dataset=os.path.basename(path))
    else:
        missing = [k for k in _REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"{path} is not a pds_jax statistics file: missing "
                             f"{', '.join(missing)} (found {', '.join(sorted(data)) or 'nothing'})")
        if str(data["format"]) != STATS_FORMAT:
            raise ValueError(f"{path}: unsupported statistics format {str(data['format'])!r}; "
                             f"this version reads {STATS_FORMAT!r}")
        try:
            stats = FeatureStatistics(
                mean=np.asarray(data["mean"], np.float64), cov=np.asarray(data["cov"], np.float64),
                count=int(data["count"]), feature_net=str(data["feature_net"]),
                dataset=str(data.get("dataset", "")),
                image_size=tuple(int(s) for s in data.get("image_size", ())),
                features=data.get("features"))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    if feature_net is not None and stats.feature_net != feature_net:
        raise ValueError(f"{path} holds statistics of feature network {stats.feature_net!r}, "
                         f"but {feature_net!r} is being used; recompute the reference "
                         f"statistics with {feature_net!r} or switch networks")
    if dim is not None and stats.dim != dim:
        raise ValueError(f"{path} holds {stats.dim}-d features of {stats.feature_net!r}, but "
                         f"the network in use gives {dim}-d features; recompute the file")
    return stats
