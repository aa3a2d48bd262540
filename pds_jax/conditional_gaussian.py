"""The exact conditional of a Gaussian oracle given known pixels, and Gaussian KL divergences.

The truth against which `pds_jax.controllable` is measured. A `GaussianOracle` is
x ~ N(μ, Σ) with Σ = Uᴴ diag(λ) U per channel (U the unitary 2-D DFT), i.e. a real
circulant covariance: with NumPy's `ifft2` (its 1/(HW) included)

    Σ[(p, c), (q, c')] = δ_cc' · r_c((p − q) mod (H, W)),   r_c = Re ifft2(λ_c).

Splitting x = (x_u, x_k) into unknown and known coordinates, the conditional is the
Schur complement (e.g. Rasmussen & Williams 2006, eq. A.6):

    x_u | x_k = d  ~  N(μ_u + Σ_uk Σ_kk⁻¹ (d − μ_k),  Σ_uu − Σ_uk Σ_kk⁻¹ Σ_ku).

All of it is dense float64 NumPy: meant for small images (D = H W C up to a few
thousand coordinates).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def covariance_matrix(oracle) -> np.ndarray:
    """The dense (D, D) float64 covariance of `oracle`, D = H·W·C in NHWC (row-major) order."""
    lam = np.asarray(oracle.spectrum, np.float64)
    H, W, C = lam.shape
    r = np.real(np.fft.ifft2(lam, axes=(0, 1)))  # (H, W, C) autocovariance per channel
    h, w, c = np.meshgrid(np.arange(H), np.arange(W), np.arange(C), indexing="ij")
    h, w, c = h.ravel(), w.ravel(), c.ravel()
    cov = r[(h[:, None] - h[None]) % H, (w[:, None] - w[None]) % W, c[:, None]]
    return np.where(c[:, None] == c[None], cov, 0.0)


def conditional_gaussian(oracle, data, mask) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (d,), covariance (d, d), unknown flat indices (d,)) of x_u | x_k = data_k.

    Args:
      oracle: a `GaussianOracle` (H, W, C).
      data: (H, W, C) image whose known coordinates condition the law.
      mask: (H, W, C) or broadcastable, 1 = known, 0 = unknown (the inpainting mask).
    """
    shape = tuple(oracle.shape)
    data = np.asarray(data, np.float64)
    if data.shape != shape:
        raise ValueError(f"data must be one image of the oracle's shape {shape}, got {data.shape}")
    known = np.broadcast_to(np.asarray(mask) > 0.5, shape).ravel()
    unknown = np.flatnonzero(~known)
    if unknown.size == 0:
        raise ValueError("the mask marks every coordinate as known; nothing to condition")
    cov = covariance_matrix(oracle)
    mu = np.broadcast_to(np.asarray(oracle.mean, np.float64), shape).ravel()
    k = np.flatnonzero(known)
    if k.size == 0:
        return mu[unknown], cov[np.ix_(unknown, unknown)], unknown
    s_uk, s_kk = cov[np.ix_(unknown, k)], cov[np.ix_(k, k)]
    gain = np.linalg.solve(s_kk, s_uk.T).T  # Σ_uk Σ_kk⁻¹ (Σ_kk is SPD)
    mean = mu[unknown] + gain @ (data.ravel()[k] - mu[k])
    cond = cov[np.ix_(unknown, unknown)] - gain @ s_uk.T
    return mean, 0.5 * (cond + cond.T), unknown


def fit_gaussian(samples, indices) -> Tuple[np.ndarray, np.ndarray]:
    """Sample mean (d,) and unbiased covariance (d, d) of the flat coordinates `indices`.

    samples: (n, H, W, C); n must exceed d for a non-singular covariance.
    """
    x = np.asarray(samples, np.float64).reshape(len(samples), -1)[:, indices]
    if x.shape[0] <= x.shape[1]:
        raise ValueError(f"a full covariance of {x.shape[1]} coordinates needs more than {x.shape[1]} "
                         f"samples, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def gaussian_kl(mean0, cov0, mean1, cov1) -> float:
    """KL(N(mean0, cov0) ‖ N(mean1, cov1)) in nats, float64:

    ½ [tr(Σ₁⁻¹ Σ₀) + (μ₁ − μ₀)ᵀ Σ₁⁻¹ (μ₁ − μ₀) − d + log det Σ₁ − log det Σ₀].
    """
    mean0, mean1 = np.atleast_1d(np.asarray(mean0, np.float64)), np.atleast_1d(np.asarray(mean1, np.float64))
    cov0, cov1 = np.atleast_2d(np.asarray(cov0, np.float64)), np.atleast_2d(np.asarray(cov1, np.float64))
    d = mean0.size
    chol1 = np.linalg.cholesky(cov1)
    a = np.linalg.solve(chol1, cov0)
    trace = np.trace(np.linalg.solve(chol1.T, a))
    diff = np.linalg.solve(chol1, mean1 - mean0)
    _, logdet0 = np.linalg.slogdet(cov0)
    logdet1 = 2.0 * np.sum(np.log(np.diag(chol1)))
    return float(0.5 * (trace + diff @ diff - d + logdet1 - logdet0))


def kl_per_dimension(samples, oracle, data, mask) -> float:
    """KL(full-covariance Gaussian fit of the samples' unknown coordinates ‖ exact conditional) / d."""
    mean, cov, unknown = conditional_gaussian(oracle, data, mask)
    fit_mean, fit_cov = fit_gaussian(samples, unknown)
    return gaussian_kl(fit_mean, fit_cov, mean, cov) / unknown.size
