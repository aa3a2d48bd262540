"""Distances between feature distributions: the Fréchet distance (FID) and the kernel
inception distance (KID, unbiased polynomial-kernel MMD²), in float64 NumPy.

`pds_jax.metrics` re-exports everything here next to the feature statistics.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Tuple

import numpy as np

KID_NUM_SUBSETS = 100
KID_SUBSET_SIZE = 1000


# ------------------------------------------------------------------ Fréchet distance


def _symmetric(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (numerically) PSD matrix, negative eigenvalues → 0."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _check_gaussian(mean: Any, cov: Any, name: str) -> Tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mean.ndim != 1 or cov.shape != (mean.size, mean.size):
        raise ValueError(f"{name}: need mean (d,) and covariance (d, d), got {mean.shape} "
                         f"and {cov.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise ValueError(f"{name}: mean/covariance contain NaN or inf; the features they "
                         "were computed from are not finite")
    return mean, _symmetric(cov)


def frechet_distance(mean1: Any, cov1: Any, mean2: Any, cov2: Any) -> float:
    """Squared Fréchet distance between N(mean1, cov1) and N(mean2, cov2), in float64.

    ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 Σᵢ √λᵢ(√Σ₁ Σ₂ √Σ₁)  (see the module docstring).
    Shapes: means (d,), covariances (d, d).
    """
    mu1, s1 = _check_gaussian(mean1, cov1, "first Gaussian")
    mu2, s2 = _check_gaussian(mean2, cov2, "second Gaussian")
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.size} vs {mu2.size}; both sets of "
                         "statistics must come from the same feature network")
    root1 = _psd_sqrt(s1)
    eig = np.linalg.eigvalsh(_symmetric(root1 @ s2 @ root1))
    trace_sqrt = np.sum(np.sqrt(np.clip(eig, 0.0, None)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)


# ----------------------------------------------------------------------------- KID


class KID(NamedTuple):
    """KID over random subsets: mean and standard deviation of the subset MMD² values."""

    mean: float
    std: float


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (xᵀy / d + 1)³ for rows of x (m, d) and y (n, d) → (m, n), float64."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² estimate with `polynomial_kernel` (Gretton et al. 2012, eq. 3).

    (Σ_{i≠j} k(xᵢ,xⱼ)) / (m(m−1)) + (Σ_{i≠j} k(yᵢ,yⱼ)) / (n(n−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ) / (mn).
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD² needs at least 2 samples per set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid(features1: Any, features2: Any, num_subsets: int = KID_NUM_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> KID:
    """Kernel Inception Distance between feature sets (N₁, d) and (N₂, d).

    Each of `num_subsets` rounds draws min(subset_size, N₁, N₂) rows of each set
    without replacement (NumPy generator seeded by `seed`) and evaluates
    `mmd2_unbiased`. Values are often quoted ×10³.
    """
    f1 = np.asarray(features1)
    f2 = np.asarray(features2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"KID needs feature matrices (N1, d) and (N2, d), got {f1.shape} and "
                         f"{f2.shape}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    m = min(subset_size, len(f1), len(f2))
    rng = np.random.default_rng(seed)
    values = np.array([
        mmd2_unbiased(f1[rng.choice(len(f1), m, replace=False)],
                      f2[rng.choice(len(f2), m, replace=False)])
        for _ in range(num_subsets)])
    return KID(float(values.mean()), float(values.std()))
