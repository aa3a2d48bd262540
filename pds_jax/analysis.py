"""The PC sampler on Gaussian data, computed exactly (no sampling).

Setting. Data x ~ N(μ, Σ) on (H, W, C) images with Σ diagonal in the unitary 2-D DFT U of
each channel, eigenvalues λ_k (`GaussianOracle`'s `spectrum`), so the unitary coefficient
x̂_k = (U x)_k has mean μ̂_k = F(μ)_k / √(HW) and E|x̂_k − μ̂_k|² = λ_k. The PDS
preconditioner M = F⁻¹ D F · s with a frequency filter D and a space filter s that is
constant (per channel) or absent is diagonal in the same basis: M_k = D_k s, P_k = M_k².
(`Preconditioner` applies Re F⁻¹ D F = F⁻¹ D_sym F, D_sym[k] = (D[k] + D[−k]) / 2, so D_sym
is used.) The exact score of the marginal N(m_t μ, m_t² Σ + s_t² I) (score_sde's
p_t(x | x_0) = N(m_t x_0, s_t² I)) is ∇_k = −(x̂_k − m_t μ̂_k) / V_k, V_k = m_t² λ_k + s_t².

Then every map of the PC sampler (`pds_jax.samplers.pc`: reverse-diffusion predictor,
Langevin corrector, official PDS semantics) multiplies coefficient k by a real scalar and
adds independent circular noise, so the per-coefficient mean m_k and variance
v_k = E|x̂_k − m_k|² obey an exact deterministic recursion:

* prior:      m = 0, v = P c², c = σ_max (VE) or 1 (VP, sub-VP): x_T = M · prior sample;
* corrector:  x ← x + ε P ∇ + √(2ε) M z, so with a = 1 − ε P / V:
              m − m_t μ̂ ← a (m − m_t μ̂),  v ← a² v + 2 ε P;
* predictor:  x_mean = x − P rev_f, rev_f = f_i x − G_i² ∇, x = x_mean + G_i M z, with
              (f_i x, G_i) = `sde.discretize` (VE: f = 0, G² = σ_i² − σ_{i−1}²; VP: DDPM,
              f_i = √α_i − 1, G² = β_i); the official code multiplies the WHOLE reverse
              drift, f included, by P (`precondition='drift'`); `precondition='score'`
              multiplies only the G² ∇ term (a variant, not the official semantics).
              a = 1 − P f_i − P G_i² / V (drift) or 1 − f_i − P G_i² / V (score);
              m_mean = a m + (P G_i² / V) m_t μ̂, v_mean = a² v, v ← v_mean + G_i² P.
* output:     the x_mean of the last predictor (score_sde's noise removal).

Only the Langevin step couples the coefficients: ε = 2 α_t (snr · mean_b‖M z_b‖ /
mean_b‖P ∇_b‖)² (α_t = 1 for VE, the DDPM α_i for VP) with norms averaged over the batch.
For a large batch the means are expectations, and E‖X‖ = √(E‖X‖²) (1 + O(1/D_eff)) for a
Gaussian vector X with D_eff effectively independent components, so here

    ε = 2 α_t snr² Σ_k P_k / Σ_k P_k² E|∇_k|²,   E|∇_k|² = (|m_k − m_t μ̂_k|² + v_k) / V_k²,

with the sums over all H·W·C coefficients: exact up to the O(1/D_eff) mean-of-norms
correction (≈ 1/D for white-ish vectors; D = 256 already at 16×16×1) and the O(1/√B)
batch fluctuation. Times t_j = linspace(T, eps, N), the discrete index i(t) and all
schedule scalars are computed by the SDE's own float32 methods, exactly as the sampler
does; the recursion itself runs in float64 NumPy, vectorised over coefficients (and over a
stack of preconditioners: one run prices a whole α grid). Coefficients with identical
(λ_k, μ̂_k, P_k) behave identically and are simulated once with their multiplicity.

KL to the data per real dimension (`pc_kl`): the output law is a product over coefficients
of circular complex Gaussians (real ones at self-conjugate k), and for both kinds the exact
KL(N(m, v) ‖ N(μ̂, λ)) summed over the H·W·C coefficients is Σ_k ½(r_k − 1 − log r_k) +
|m_k − μ̂_k|² / (2 λ_k), r_k = v_k / λ_k; dividing by H·W·C gives the KL per dimension.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from pds_jax.precond import Preconditioner, flip_frequencies, frequency_filter, space_filter
from pds_jax.sde import SDE, VESDE

PRECONDITION = ("drift", "score")
_MEAN_ZERO_RTOL = 1e-12  # FFT round-off of a constant image is not exactly zero off DC


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Per-step scalars of one PC run, float64 arrays of shape (N,) (step j runs at t_j).

    mean_coeff, std: m(t_j), s(t_j) of the marginal (the oracle score's coefficients);
    drift: f_i with f_i x = `sde.discretize`'s drift; G2: G_i²; langevin_alpha: α_t of the
    corrector; prior_std: c of the prior N(0, c² I).
    """

    mean_coeff: np.ndarray
    std: np.ndarray
    drift: np.ndarray
    G2: np.ndarray
    langevin_alpha: np.ndarray
    prior_std: float


class Moments(NamedTuple):
    """Output law per unitary Fourier coefficient, (H, W, C) unshifted FFT layout.

    mean: complex mean m_k of x̂_k; var: E|x̂_k − m_k|² (the oracle's λ convention).
    """

    mean: np.ndarray
    var: np.ndarray


def schedule(sde: SDE, num_steps: int, eps: float) -> Schedule:
    """The scalars the PC sampler uses with `sde` (whose N must be `num_steps`) down to `eps`."""
    if int(num_steps) != sde.N:
        raise ValueError(
            f"num_steps={num_steps} but sde.N={sde.N}: pass the schedule actually run, e.g. "
            "pds_jax.pds.pc_schedule(base_sde, k) gives (sde, eps) for speed_up=k")
    if not 0 <= float(eps) < sde.T:
        raise ValueError(f"eps must lie in [0, T={sde.T}), got {eps}")
    # float32, elementwise: bit-for-bit the values the sampler computes per step.
    t = jnp.linspace(sde.T, float(eps), int(num_steps))
    m, s = sde.marginal_coefficients(t)
    f, G = sde.discretize(jnp.ones_like(t), t)  # f_i(x) is linear: f_i(1) is its coefficient
    alpha = sde.langevin_alpha(t)
    prior_std = float(sde.sigma_max) if isinstance(sde, VESDE) else 1.0
    as64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    return Schedule(as64(m), as64(s), as64(f), as64(G) ** 2, as64(alpha), prior_std)


def precond_gain(precond: Optional[Preconditioner], shape: Sequence[int]) -> np.ndarray:
    """P_k = (D_sym,k s)² of a preconditioner, (H, W, C) float64; ones for None / identity.

    Refuses a space filter that is not constant per channel (it would couple frequencies)
    and the solenoidal term (not diagonal in the Fourier basis).
    """
    shape = tuple(int(n) for n in shape)
    if precond is None:
        return np.ones(shape)
    if tuple(precond.shape) != shape:
        raise ValueError(f"precond is for images of shape {precond.shape}, the spectrum is {shape}")
    if precond.solenoidal:
        raise ValueError("precond has a solenoidal term ω S, which is not diagonal in the Fourier basis; "
                         "build it with solenoidal_omega=0 for the exact analysis")
    gain = np.ones(shape)
    if precond.freq is not None:
        D = np.asarray(precond.freq, np.float64)
        gain = (0.5 * (D + flip_frequencies(D))) ** 2
    if precond.space is not None:
        s = np.asarray(precond.space, np.float64)
        per_channel = s.reshape(-1, shape[2])
        if np.any(np.ptp(per_channel, axis=0) > 1e-6 * np.max(per_channel)):
            raise ValueError(
                "precond's space filter is not constant per channel, so M is not diagonal in the Fourier "
                "basis and the exact analysis does not apply; use space=None or a constant space filter")
        gain = gain * per_channel[0] ** 2
    return gain


def alpha_gains(freq, space, alphas: Sequence[float], mode: str = "normalized") -> np.ndarray:
    """P for every α from raw statistics R (freq) and A (space), (len(alphas), H, W, C).

    The filters are those of `Preconditioner.from_arrays(freq, space, alpha, mode)` (float64,
    D symmetrised); α = inf gives the vanilla sampler (P = 1). The space filter must be
    constant per channel (see `precond_gain`); A of a single-channel `GaussianOracle` is.
    """
    if freq is None and space is None:
        raise ValueError("alpha_gains needs freq and/or space statistics")
    shape = np.shape(freq if freq is not None else space)
    out = []
    for alpha in alphas:
        gain = np.ones(shape)
        if not np.isfinite(alpha):
            out.append(gain)
            continue
        if freq is not None:
            D = frequency_filter(freq, alpha, mode)
            gain = (0.5 * (D + flip_frequencies(D))) ** 2
        if space is not None:
            s = space_filter(space, alpha, mode).reshape(-1, shape[2])
            if np.any(np.ptp(s, axis=0) > 1e-6 * np.max(s)):
                raise ValueError("space statistics A are not constant per channel, so the space filter "
                                 "is not diagonal in the Fourier basis; pass space=None")
            gain = gain * s[0] ** 2
        out.append(gain)
    return np.stack(out)


def _unitary_mean(mean: np.ndarray) -> np.ndarray:
    mu = np.fft.fft2(np.asarray(mean, np.float64), axes=(0, 1), norm="ortho")
    return np.where(np.abs(mu) <= _MEAN_ZERO_RTOL * max(np.abs(mu).max(), 1e-300), 0.0, mu)


def _modes(lam: np.ndarray, mu: np.ndarray, gains: np.ndarray):
    """Distinct coefficients: (lam, mu, gains (A, K), weights, inverse) with lam[inverse] = λ."""
    feats = np.concatenate([lam.reshape(1, -1), mu.real.reshape(1, -1), mu.imag.reshape(1, -1),
                            gains.reshape(gains.shape[0], -1)]).T
    uniq, inverse, counts = np.unique(feats, axis=0, return_inverse=True, return_counts=True)
    return uniq[:, 0], uniq[:, 1] + 1j * uniq[:, 2], uniq[:, 3:].T, counts.astype(np.float64), inverse.ravel()


def _langevin(m, v, mu, P, w, mt, V, idx, step_scale):
    """One corrector step on (m, v); m (A, len(idx)) is the mean on the coefficients `idx`
    with μ̂ ≠ 0 (elsewhere it stays exactly 0); `step_scale` = 2 α_t snr²."""
    e = m - mt * mu[idx]
    grad2 = v / V**2
    grad2[:, idx] += np.abs(e) ** 2 / V[idx] ** 2
    eps = step_scale * (P @ w) / ((P**2 * grad2) @ w)  # (A,): the batch-mean-norm step size
    a = 1.0 - eps[:, None] * P / V
    return mt * mu[idx] + a[:, idx] * e, a**2 * v + 2.0 * eps[:, None] * P


def _predictor(m, v, mu, P, mt, V, idx, f, G2, precondition):
    """One reverse-diffusion predictor step: (x_mean's m and v, x's v)."""
    gain = P * G2 / V
    a = 1.0 - (P * f if precondition == "drift" else f) - gain
    v_mean = a**2 * v
    return a[:, idx] * m + gain[:, idx] * mt * mu[idx], v_mean, v_mean + G2 * P


def _recursion(lam, mu, P, w, sched: Schedule, snr: float, n_steps: int, precondition: str):
    """Mean and variance (A, K) of the output for each row of P (A, K)."""
    idx = np.nonzero(mu != 0)[0]
    m = np.zeros((P.shape[0], len(idx)), np.complex128)
    v = P * sched.prior_std**2
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for j in range(len(sched.mean_coeff)):
            mt = sched.mean_coeff[j]
            V = mt**2 * lam + sched.std[j] ** 2
            for _ in range(n_steps):
                m, v = _langevin(m, v, mu, P, w, mt, V, idx, 2.0 * sched.langevin_alpha[j] * snr**2)
            m, v_mean, v = _predictor(m, v, mu, P, mt, V, idx, sched.drift[j], sched.G2[j], precondition)
    mean = np.zeros(P.shape, np.complex128)
    mean[:, idx] = m
    return mean, v_mean


def _check_inputs(spectrum, mean, n_steps, precondition):
    lam = np.asarray(spectrum, np.float64)
    if lam.ndim != 3 or np.shape(mean) != lam.shape:
        raise ValueError(f"spectrum and mean must both be (H, W, C); got {lam.shape} and {np.shape(mean)}")
    if not np.all(np.isfinite(lam)) or np.any(lam <= 0):
        raise ValueError("spectrum must be finite and > 0 (the data covariance eigenvalues λ_k)")
    if int(n_steps) < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if precondition not in PRECONDITION:
        raise ValueError(f"precondition must be one of {PRECONDITION}, got {precondition!r}")
    return lam, _unitary_mean(mean)


def pc_moments_batch(spectrum, mean, sde: SDE, num_steps: int, eps: float, snr: float, gains,
                     n_steps: int = 1, precondition: str = "drift") -> Moments:
    """`pc_output_moments` for a stack of gains P (A, H, W, C): Moments of shape (A, H, W, C)."""
    lam, mu = _check_inputs(spectrum, mean, n_steps, precondition)
    gains = np.asarray(gains, np.float64)
    if gains.ndim != 4 or gains.shape[1:] != lam.shape or not np.all(gains > 0):
        raise ValueError(f"gains must be positive, of shape (A,) + {lam.shape}; got {gains.shape}")
    sched = schedule(sde, num_steps, eps)
    lam_u, mu_u, P_u, w, inverse = _modes(lam, mu, gains)
    m, v = _recursion(lam_u, mu_u, P_u, w, sched, float(snr), int(n_steps), precondition)
    shape = gains.shape
    return Moments(m[:, inverse].reshape(shape), v[:, inverse].reshape(shape))


def pc_output_moments(spectrum, mean, sde: SDE, num_steps: int, eps: float, snr: float,
                      precond: Optional[Preconditioner] = None, n_steps: int = 1,
                      precondition: str = "drift") -> Moments:
    """Exact per-frequency mean and variance of the PC sampler's output on N(mean, U^H λ U).

    Args:
      spectrum: λ_k, (H, W, C) unshifted FFT layout, Hermitian-symmetric, > 0.
      mean: the data mean image μ, (H, W, C).
      sde: the schedule actually run (sde.N == num_steps), e.g. from `pds_jax.pds.pc_schedule`.
      num_steps, eps: N PC steps over t = linspace(T, eps, N).
      snr, n_steps: the Langevin corrector's snr and steps per predictor step (0: none).
      precond: a `Preconditioner` with a constant (or no) space filter; None = vanilla.
      precondition: 'drift' (official PDS: P times the whole reverse drift) or 'score'.

    Returns:
      Moments(mean (H, W, C) complex, var (H, W, C)) of the unitary coefficients of x_mean of
      the last predictor step (NaN/Inf where the recursion overflowed).
    """
    gain = precond_gain(precond, np.shape(spectrum))[None]
    out = pc_moments_batch(spectrum, mean, sde, num_steps, eps, snr, gain, n_steps, precondition)
    return Moments(out.mean[0], out.var[0])


def kl_per_dim(moments: Moments, spectrum, mean) -> np.ndarray:
    """KL(output ‖ data) per real dimension: mean over the last three axes of
    ½(r − 1 − log r) + |m − μ̂|² / (2λ), r = v / λ; inf where the moments are not finite."""
    lam = np.asarray(spectrum, np.float64)
    mu = _unitary_mean(mean)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        r = moments.var / lam
        terms = 0.5 * (r - 1.0 - np.log(r)) + np.abs(moments.mean - mu) ** 2 / (2.0 * lam)
        kl = np.mean(terms, axis=(-3, -2, -1))
    return np.where(np.isfinite(kl), kl, np.inf)


def pc_kl(spectrum, mean, sde: SDE, num_steps: int, eps: float, snr: float,
          precond: Optional[Preconditioner] = None, n_steps: int = 1, precondition: str = "drift") -> float:
    """KL per dimension from the PC sampler's output law to the data (same arguments as
    `pc_output_moments`); inf when the recursion overflows (the sampler diverges)."""
    moments = pc_output_moments(spectrum, mean, sde, num_steps, eps, snr, precond, n_steps, precondition)
    return float(kl_per_dim(moments, spectrum, mean))


def pc_kl_batch(spectrum, mean, sde: SDE, num_steps: int, eps: float, snr: float, gains,
                n_steps: int = 1, precondition: str = "drift") -> np.ndarray:
    """KL per dimension for each gain P in a stack (A, H, W, C) (e.g. `alpha_gains`), (A,)."""
    moments = pc_moments_batch(spectrum, mean, sde, num_steps, eps, snr, gains, n_steps, precondition)
    return kl_per_dim(moments, spectrum, mean)


def sample_moments(samples) -> Moments:
    """Empirical Moments of samples (B, H, W, C): unitary-FFT mean and unbiased variance."""
    coeffs = np.fft.fft2(np.asarray(samples, np.float64), axes=(1, 2), norm="ortho")
    m = coeffs.mean(axis=0)
    v = np.sum(np.abs(coeffs - m) ** 2, axis=0) / (coeffs.shape[0] - 1)
    return Moments(m, v)
