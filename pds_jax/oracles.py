"""A Gaussian data distribution with an exact score at every noise level.

Data x ~ N(μ, Σ) on (H, W, C) images, with Σ diagonal in the orthonormal 2-D Fourier
basis of each channel: Σ = Uᴴ diag(λ) U, U the unitary DFT over (H, W). λ plays the
role of a power spectrum (e.g. λ ∝ 1/|f|^γ, like natural images), and Σ is a real
circulant covariance when λ is Hermitian-symmetric (λ[k] = λ[−k]).

For any linear SDE with p_t(x | x_0) = N(m(t) x_0, s(t)² I) the marginal is Gaussian,

    p_t = N(m μ, m² Σ + s² I),   ∇log p_t(x) = −Uᴴ diag(1 / (m² λ + s²)) U (x − m μ),

and the probability-flow ODE is solved exactly, mode by mode, by

    x(t₂) − m₂ μ = Uᴴ diag(√(v₂ / v₁)) U (x(t₁) − m₁ μ),   v = m² λ + s².

(y = x̂ − m μ̂ obeys y' = (f + g²/(2v)) y and v' = 2 f v + g², so y ∝ √v.) This makes
the oracle a ground truth for samplers (docs/design.md §5) and a demo "model" whose
frequency statistics PDS can exploit.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from pds_jax.sde import SDE, batch_mul

Array = jax.Array


def _spectral_multiply(x: Array, gain: Array) -> Array:
    """Re F⁻¹[gain ⊙ F x] over axes (1, 2); `gain` is (H, W, C) or (B, H, W, C), symmetric."""
    H, W = x.shape[1], x.shape[2]
    half = gain[..., : W // 2 + 1, :]
    return jnp.fft.irfft2(jnp.fft.rfft2(x, axes=(1, 2)) * half, s=(H, W), axes=(1, 2)).astype(x.dtype)


def _score(oracle: "GaussianOracle", x: Array, mean_coeff: Array, std: Array) -> Array:
    var = (mean_coeff.reshape(-1, 1, 1, 1) ** 2 * oracle.spectrum[None]
           + std.reshape(-1, 1, 1, 1) ** 2)
    return -_spectral_multiply(x - batch_mul(mean_coeff, jnp.broadcast_to(oracle.mean, x.shape)), 1.0 / var)


def _score_at_time(oracle: "GaussianOracle", sde: SDE, x: Array, t: Array) -> Array:
    mean_coeff, std = sde.marginal_coefficients(t)
    return _score(oracle, x, mean_coeff, std)


@dataclasses.dataclass(frozen=True)
class GaussianOracle:
    """N(mean, Uᴴ diag(spectrum) U); mean and spectrum are (H, W, C) float32 arrays."""

    mean: Array
    spectrum: Array

    def __post_init__(self):
        mean, lam = np.asarray(self.mean), np.asarray(self.spectrum)
        if mean.ndim != 3 or mean.shape != lam.shape:
            raise ValueError(f"mean and spectrum must both be (H, W, C); got {mean.shape} and {lam.shape}")
        if not np.all(np.isfinite(lam)) or np.any(lam <= 0):
            raise ValueError("spectrum must be finite and > 0 (it holds the covariance eigenvalues)")
        flipped = np.roll(np.flip(lam, (0, 1)), 1, axis=(0, 1))
        if not np.allclose(lam, flipped, rtol=1e-5):
            raise ValueError("spectrum must be Hermitian-symmetric (λ[k] = λ[-k]) for real data")

    # ------------------------------------------------------------------ builders
    @classmethod
    def isotropic(cls, shape: Sequence[int], std: float = 0.5, mean: float = 0.0) -> "GaussianOracle":
        """N(mean·1, std² I)."""
        shape = tuple(shape)
        return cls(jnp.full(shape, mean, jnp.float32), jnp.full(shape, std**2, jnp.float32))

    @classmethod
    def natural_image(cls, shape: Sequence[int] = (16, 16, 1), gamma: float = 2.0,
                      pixel_std: float = 0.25, mean: float = 0.5, f0: float = 1.0) -> "GaussianOracle":
        """An image-like Gaussian: λ(f) ∝ 1 / (f0 + |f|)^γ with |f| in cycles per image.

        Scaled so the per-pixel standard deviation is `pixel_std` (diag Σ = mean_k λ_k);
        the mean image is constant `mean`, as for [0, 1] data. The spectrum spans orders
        of magnitude, which is what makes plain Langevin steps ill-conditioned.
        """
        H, W, C = tuple(shape)
        fy = np.fft.fftfreq(H) * H
        fx = np.fft.fftfreq(W) * W
        radius = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
        lam = 1.0 / (f0 + radius) ** gamma
        lam = lam / lam.mean() * pixel_std**2
        lam = np.repeat(lam[:, :, None], C, axis=2)
        return cls(jnp.full((H, W, C), mean, jnp.float32), jnp.asarray(lam, jnp.float32))

    # ------------------------------------------------------------------- queries
    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.mean.shape)

    def sample(self, rng: Array, n: int) -> Array:
        """n exact samples, (n, H, W, C)."""
        z = jax.random.normal(rng, (n,) + self.shape)
        return self.mean[None] + _spectral_multiply(z, jnp.sqrt(self.spectrum))

    def score(self, x: Array, mean_coeff: Array, std: Array) -> Array:
        """∇log p(x) of N(m μ, m² Σ + s² I); `mean_coeff`, `std` are (batch,)."""
        return _score(self, x, jnp.asarray(mean_coeff), jnp.asarray(std))

    def score_sigma(self, x: Array, sigma: Array) -> Array:
        """VE convention: the score of data + N(0, σ² I); `sigma` is (batch,)."""
        sigma = jnp.asarray(sigma)
        return _score(self, x, jnp.ones_like(sigma), sigma)

    def score_fn(self, sde: SDE) -> Partial:
        """`score_fn(x, t)` of the marginals of `sde`, a pytree that can enter `jit`."""
        return Partial(_score_at_time, self, sde)

    def ode_solution(self, x: Array, t_from: float, t_to: float, sde: SDE) -> Array:
        """Exact probability-flow ODE map from time `t_from` to `t_to` for `sde`."""
        m1, s1 = sde.marginal_coefficients(jnp.asarray(t_from, jnp.float32))
        m2, s2 = sde.marginal_coefficients(jnp.asarray(t_to, jnp.float32))
        return self.flow_map(x, m1, s1, m2, s2)

    def flow_map(self, x: Array, m1, s1, m2, s2) -> Array:
        """Exact PF-ODE map between marginals with coefficients (m1, s1) → (m2, s2)."""
        v1 = m1**2 * self.spectrum + s1**2
        v2 = m2**2 * self.spectrum + s2**2
        return m2 * self.mean[None] + _spectral_multiply(x - m1 * self.mean[None], jnp.sqrt(v2 / v1))

    def filter_statistics(self) -> Tuple[np.ndarray, np.ndarray]:
        """Expected PDS statistics (R, A) of the data, exactly as docs/design.md §3 defines them.

        R = log(1 + E|F x|²) with the unnormalised FFT: E|F x|²_k = HW λ_k + |F μ|²_k.
        A = E x² = μ² + diag Σ = μ² + mean_k λ_k (per channel).
        """
        mean = np.asarray(self.mean, np.float64)
        lam = np.asarray(self.spectrum, np.float64)
        H, W, _ = self.shape
        power = H * W * lam + np.abs(np.fft.fft2(mean, axes=(0, 1))) ** 2
        second_moment = mean**2 + lam.mean(axis=(0, 1), keepdims=True)
        return np.log1p(power), np.broadcast_to(second_moment, self.shape).copy()

    def frequency_variance(self, x) -> np.ndarray:
        """Per-frequency variance of samples x about the true mean, in the orthonormal basis.

        Its expectation under the oracle is exactly `spectrum`.
        """
        x = np.asarray(x, np.float64) - np.asarray(self.mean, np.float64)[None]
        coeffs = np.fft.fft2(x, axes=(1, 2), norm="ortho")
        return np.mean(np.abs(coeffs) ** 2, axis=0)


def _unflatten(_, children) -> GaussianOracle:
    # Bypass __post_init__: inside transformations the leaves are tracers or placeholders.
    oracle = object.__new__(GaussianOracle)
    object.__setattr__(oracle, "mean", children[0])
    object.__setattr__(oracle, "spectrum", children[1])
    return oracle


jax.tree_util.register_pytree_node(GaussianOracle, lambda o: ((o.mean, o.spectrum), None), _unflatten)
