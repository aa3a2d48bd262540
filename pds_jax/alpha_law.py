"""The PDS α and the number of PC steps, from the exact PC recursion on Gaussian data.

Two rules price α exactly on a Gaussian surrogate of the data (`pds_jax.analysis`: the
PC sampler's output law on Gaussian data, no sampling), built from the model's own filter
statistics, for the schedule actually run (its σ or β range and N):

* `stability_floor`: the smallest α at which the surrogate does not blow up, times a
  margin. KL(α) rises steeply just above the stability boundary α_b(N): the
  preconditioner's largest gain D_max² = (α/(r + α − 1))², r = min R / max R, times the
  schedule's step 1 − (σ_{i−1}/σ_i)² becomes too large (docs/alpha_law.md). This is what
  `alpha='auto'` uses as its lower bound (`pds_jax.alpha_rule.auto_alpha`).
* `surrogate_alpha`: the largest α whose surrogate KL is within `tolerance` × the smallest
  over the α grid. On the Gaussian family it is within 1.25× of the best KL; on the
  embedded Fashion-MNIST model it is 4–5× larger than the measured FID optimum (a learned
  score is not the Gaussian's), so it is not the default.

The Gaussian surrogate, and what it can recover from the statistics alone:

* R = log(1 + E|F x|²) (unnormalised FFT) gives E|F x|²_k = HW (λ_k + |μ̂_k|²) per
  frequency; mean and variance cannot be told apart frequency by frequency (and A's
  spatial average is redundant with R by Parseval), so the surrogate assumes a mean
  constant per channel: λ_k = (e^{R_k} − 1) / HW off DC, and at DC λ_0 = the mean λ of the
  four nearest frequencies (a smooth spectrum), the rest |μ̂_0|² = HW μ_c²;
* a space filter s (from A) that is not constant per channel couples frequencies; the
  surrogate uses its largest value per channel — the largest gain — which overestimates
  the step and so errs to the safe (larger α) side;
* VP/sub-VP models see data scaled to [−1, 1] (score_sde's `data.centered`), while the
  statistics describe [0, 1] images: λ → 4 λ, μ → 2 μ − 1 (`centered=None` picks that for
  VP/sub-VP and [0, 1] for VE).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from pds_jax import analysis
from pds_jax.precond import flip_frequencies, frequency_filter, space_filter
from pds_jax.sde import SDE, VESDE

ALPHA_GRID = tuple(float(a) for a in np.geomspace(1.05, 1000.0, 25))
FLOOR_GRID = tuple(float(a) for a in 1.0 + np.geomspace(0.02, 100.0, 19))
VANILLA_ALPHA = 1000.0  # D, s ≤ α/(α−1) ≈ 1.001: the vanilla sampler for every purpose
# α − 1 of the floor, relative to α_b − 1: KL(α) climbs steeply just above α_b (on the 16²
# γ = 2 oracle at N = 10, KL is 0.45 at 1.1 α_b against 0.086 at the optimum 1.5 α_b)
FLOOR_MARGIN = 1.5
TOLERANCE = 1.25
QUANTUM = 0.005  # relative bin width of λ and R in the surrogate (see `_quantise`)


def surrogate(freq, space=None, shape=None):
    """(spectrum λ, mean image μ) of the Gaussian surrogate for statistics R (and A), [0, 1] space."""
    if freq is None:
        if space is None and shape is None:
            raise ValueError("auto_alpha needs freq statistics R, or at least the image shape")
        shape = np.shape(space) if space is not None else tuple(shape)
        A = np.ones(shape) if space is None else np.asarray(space, np.float64)
        lam = np.broadcast_to(A.mean(axis=(0, 1)), shape) * 0.25  # no spectrum: assume white data
        return np.array(lam), np.zeros(shape)
    R = np.asarray(freq, np.float64)
    if R.ndim != 3:
        raise ValueError(f"freq statistics must be (H, W, C), got shape {R.shape}")
    R = 0.5 * (R + flip_frequencies(R))
    H, W, C = R.shape
    power = np.expm1(R) / (H * W)  # λ_k + |μ̂_k|²
    lam = power.copy()
    neighbours = [power[1 % H, 0], power[-1 % H, 0], power[0, 1 % W], power[0, -1 % W]]
    lam[0, 0] = np.minimum(np.mean(neighbours, axis=0), power[0, 0]) if H * W > 1 else power[0, 0]
    mean_c = np.sqrt(np.maximum(power[0, 0] - lam[0, 0], 0.0) / (H * W))
    floor = 1e-12 * lam.max()
    lam = np.maximum(lam, floor)
    return lam, np.broadcast_to(mean_c, (H, W, C)).copy()


def _quantise(x: np.ndarray) -> np.ndarray:
    """x rounded to a log grid of relative spacing QUANTUM (0 stays 0).

    Coefficients with equal (λ, R) are simulated once (`pds_jax.analysis`); real statistics
    have ~HW/2 distinct values, binning them to 0.5 % leaves a few thousand, which makes a
    256² rule take seconds. The surrogate is then this binned Gaussian (its KL is measured
    against its own binned λ), a 0.5 % perturbation of the statistics.
    """
    with np.errstate(divide="ignore"):
        logx = np.log(x)
    return np.where(x > 0, np.exp(np.round(logx / QUANTUM) * QUANTUM), 0.0)


def _gains(freq, space, alphas, mode):
    out = []
    for alpha in alphas:
        gain = 1.0
        if freq is not None:
            D = frequency_filter(freq, alpha, mode)
            gain = (0.5 * (D + flip_frequencies(D))) ** 2
        if space is not None:
            s = space_filter(space, alpha, mode)
            gain = gain * np.max(s, axis=(0, 1), keepdims=True) ** 2  # the largest gain: safe side
        out.append(np.broadcast_to(gain, np.shape(freq if freq is not None else space)))
    return np.stack(out)


def _surrogate_problem(freq, space, sde: SDE, num_steps: int, eps: Optional[float], centered: Optional[bool],
                       quantise: bool):
    """(R symmetrised, λ, μ, the schedule run, eps) of the Gaussian surrogate for N = `num_steps`
    PC steps of `sde`: the data the rules price and `surrogate_variance_ratio` reports on."""
    if freq is None and space is None:
        raise ValueError("the α rules need freq and/or space statistics (R and A of the model's data)")
    num_steps = int(num_steps)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if eps is None:
        eps = sde.default_eps * sde.N / num_steps
    if freq is not None:
        freq = 0.5 * (np.asarray(freq, np.float64) + flip_frequencies(np.asarray(freq, np.float64)))
        freq = _quantise(freq) if quantise else freq
    lam, mu = surrogate(freq, space)
    lam = _quantise(lam) if quantise else lam
    if centered if centered is not None else not isinstance(sde, VESDE):
        lam, mu = 4.0 * lam, 2.0 * mu - 1.0
    return freq, lam, mu, sde.with_steps(num_steps), eps


def _pricer(freq, space, sde: SDE, num_steps: int, snr: float, n_steps: int, eps: Optional[float],
            centered: Optional[bool], mode: str):
    """alphas -> surrogate KL per dimension, for the schedule of `num_steps` steps of `sde`."""
    freq, lam, mu, run_sde, eps = _surrogate_problem(freq, space, sde, num_steps, eps, centered, quantise=True)
    return lambda alphas: analysis.pc_kl_batch(  # noqa: E731
        lam, mu, run_sde, int(num_steps), eps, snr, _gains(freq, space, alphas, mode), n_steps)


def stability_floor(freq, space, sde: SDE, num_steps: int, snr: float = 0.16, n_steps: int = 1,
                    eps: Optional[float] = None, centered: Optional[bool] = None,
                    mode: str = "normalized", margin: float = FLOOR_MARGIN) -> float:
    """1 + `margin` (α_b − 1), α_b the smallest α above which the surrogate never blows up
    (1 if it never does).

    Blow-up: a KL per dimension above max(10 × vanilla's, 1 nat) or not finite (the
    definition of docs/alpha_law.md). The boundary is located on `FLOOR_GRID` and refined by
    bisection in log(α − 1) between the last unstable and the first stable grid point.
    """
    price = _pricer(freq, space, sde, num_steps, snr, n_steps, eps, centered, mode)
    alphas = np.asarray(FLOOR_GRID)
    kl = price(np.append(alphas, VANILLA_ALPHA))
    limit = max(10.0 * float(kl[-1]), 1.0) if np.isfinite(kl[-1]) else np.inf
    bad = ~(np.isfinite(kl[:-1]) & (kl[:-1] <= limit))
    if not bad.any():
        return 1.0
    k = int(np.max(np.nonzero(bad)[0]))
    if k + 1 == len(alphas):
        return float(VANILLA_ALPHA)  # nothing in the grid is stable: as close to vanilla as it gets
    lo, hi = math.log(alphas[k] - 1.0), math.log(alphas[k + 1] - 1.0)
    for _ in range(6):
        mid = 0.5 * (lo + hi)
        value = float(price(np.asarray([1.0 + math.exp(mid)]))[0])
        lo, hi = (mid, hi) if not (math.isfinite(value) and value <= limit) else (lo, mid)
    return float(min(1.0 + margin * math.exp(hi), VANILLA_ALPHA))


def surrogate_alpha(freq, space, sde: SDE, num_steps: int, snr: float = 0.16, n_steps: int = 1,
                    eps: Optional[float] = None, centered: Optional[bool] = None,
                    tolerance: float = TOLERANCE, mode: str = "normalized") -> float:
    """The α for `num_steps` PC steps of `sde` (see the module docstring).

    Args:
      freq, space: raw statistics R and A, (H, W, C) each or None (as `Preconditioner.from_arrays`).
      sde: the model's SDE (its σ or β range); its N is the base schedule of the speed-up.
      num_steps: the PC steps run; the schedule is sde.with_steps(num_steps).
      eps: the final time; default the official `--speed_up k` rule with k = sde.N / num_steps,
        eps = sde.default_eps · k.
      centered: whether the model's data are [0, 1] statistics scaled to [−1, 1]; default
        True for VP/sub-VP, False for VE (score_sde's configs).
      tolerance: the largest α (grid, then refined) whose KL ≤ tolerance × the smallest KL.

    Returns: α > 1 (at most the largest grid α, 1000 ≈ vanilla).
    """
    if not tolerance > 1:
        raise ValueError(f"tolerance must be > 1, got {tolerance}")
    price = _pricer(freq, space, sde, num_steps, snr, n_steps, eps, centered, mode)
    alphas = np.asarray(ALPHA_GRID)
    kl = price(alphas)
    if not np.any(np.isfinite(kl)):
        return float(alphas[-1])
    target = tolerance * np.min(kl)
    j = int(np.max(np.nonzero(kl <= target)[0]))
    if j + 1 == len(alphas):
        return float(alphas[-1])
    fine = 1.0 + np.geomspace(alphas[j] - 1.0, alphas[j + 1] - 1.0, 8)[1:-1]
    kl_fine = price(fine)
    ok = np.nonzero(kl_fine <= target)[0]
    return float(fine[ok[-1]]) if len(ok) else float(alphas[j])


def stability_boundary(freq, sde: SDE, num_steps: int, which: str = "relative") -> float:
    """Analytic α_b(N) for a VE schedule (docs/alpha_law.md): α with D_max² (1 − ρ) = 1
    ('relative') or D_max² (1 − ρ²) = 2 ('absolute'), ρ = (σ_min/σ_max)^(1/(N−1)); 1 if none."""
    if not isinstance(sde, VESDE):
        raise ValueError("the analytic stability boundary is derived for VESDE schedules only")
    R = np.asarray(freq, np.float64)
    r = float(R.min() / R.max())
    rho = (sde.sigma_min / sde.sigma_max) ** (1.0 / max(int(num_steps) - 1, 1))
    p_max = {"relative": 1.0 / (1.0 - rho), "absolute": 2.0 / (1.0 - rho**2)}[which]
    g = math.sqrt(p_max)
    return max(g * (1.0 - r) / (g - 1.0), 1.0)


def surrogate_variance_ratio(freq, space, sde: SDE, num_steps: int, alphas, snr: float = 0.16,
                             n_steps: int = 1, eps: Optional[float] = None, centered: Optional[bool] = None,
                             mode: str = "normalized") -> np.ndarray:
    """(len(alphas), H, W, C): the surrogate's output variance over its data variance, per Fourier
    coefficient, for PC at `num_steps` steps with PDS at each α (`VANILLA_ALPHA` = vanilla).

    The per-frequency view of the KL that the rules above price: a ratio above 1 is excess
    power (residual noise), below 1 missing power (over-smoothing). The radial average of
    10 log10 of it is what `benchmarks/quality_intervals.py` compares with the samples'.
    """
    R, lam, mu, run_sde, eps = _surrogate_problem(freq, space, sde, num_steps, eps, centered, quantise=False)
    moments = analysis.pc_moments_batch(lam, mu, run_sde, int(num_steps), eps, snr, _gains(R, space, alphas, mode),
                                        n_steps)
    return moments.var / lam
