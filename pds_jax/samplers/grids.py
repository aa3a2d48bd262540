"""Noise schedules in float64 NumPy and the time grids of the deterministic samplers.

Every SDE in `pds_jax.sde` has Gaussian transition kernels
p_t(x | x_0) = N(α(t) x_0, s(t)² I). Following DEIS (Zhang & Chen, "Fast Sampling of
Diffusion Models with Exponential Integrator", arXiv 2204.13902) we write

    ρ(t) = s(t) / α(t),        y = x / α(t),

so that the probability-flow ODE of *any* of these SDEs becomes

    dy/dρ = ε(x, t) = −s(t) · ∇log p_t(x)                                        (★)

(for VE, α ≡ 1 and ρ = σ: dx/dσ = −σ · score, DESIGN §5). The samplers precompute
everything that depends only on the schedule at build time, in float64 NumPy, with
the closed forms below (no float32 round trips through `jnp`):

    VE      α = 1,            s = σ_min (σ_max/σ_min)^t,      t(ρ) = log(ρ/σ_min) / log(σ_max/σ_min)
    VP      α = e^{c(t)},     s = √(1 − e^{2c}),              ρ² = e^{−2c} − 1
    sub-VP  α = e^{c(t)},     s = 1 − e^{2c},                 ρ = s / α
    with c(t) = −¼ t² (β_1 − β_0) − ½ t β_0 (score_sde's log-mean coefficient).

For VP and sub-VP, B = −2c = ½ (β_1 − β_0) t² + β_0 t is inverted with the stable root
t = 2B / (β_0 + √(β_0² + 2 (β_1 − β_0) B)).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from pds_jax.sde import SDE, VESDE, VPSDE, subVPSDE

GRIDS = ("rho", "t", "quad")


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """α(t), s(t), ρ(t) = s/α and t(ρ) of an SDE, vectorised float64 NumPy functions.

    Times t are the SDE's own time (t ∈ [0, T], T = 1); ρ is the DEIS noise-to-signal
    ratio, equal to σ for the VE SDE.
    """

    sde: SDE

    def __post_init__(self):
        if not isinstance(self.sde, (VESDE, VPSDE, subVPSDE)):
            raise TypeError(
                f"no float64 noise schedule for {type(self.sde).__name__}; the deterministic samplers "
                "support VESDE, VPSDE and subVPSDE")

    def _log_mean(self, t):
        sde = self.sde
        return -0.25 * t**2 * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min

    def alpha(self, t) -> np.ndarray:
        """Mean coefficient α(t) (= m(t) of `SDE.marginal_coefficients`)."""
        t = np.asarray(t, np.float64)
        if isinstance(self.sde, VESDE):
            return np.ones_like(t)
        return np.exp(self._log_mean(t))

    def std(self, t) -> np.ndarray:
        """Standard deviation s(t) of the transition kernel."""
        t = np.asarray(t, np.float64)
        sde = self.sde
        if isinstance(sde, VESDE):
            return sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
        if isinstance(sde, VPSDE):
            return np.sqrt(-np.expm1(2.0 * self._log_mean(t)))
        return -np.expm1(2.0 * self._log_mean(t))

    def rho(self, t) -> np.ndarray:
        """ρ(t) = s(t) / α(t); for VE this is σ(t)."""
        t = np.asarray(t, np.float64)
        if isinstance(self.sde, VPSDE):
            return np.sqrt(np.expm1(-2.0 * self._log_mean(t)))
        return self.std(t) / self.alpha(t)

    def t_of_rho(self, rho) -> np.ndarray:
        """Inverse of `rho` (exact closed forms, see the module docstring)."""
        rho = np.asarray(rho, np.float64)
        sde = self.sde
        if isinstance(sde, VESDE):
            return np.log(rho / sde.sigma_min) / np.log(sde.sigma_max / sde.sigma_min)
        if isinstance(sde, VPSDE):
            B = np.log1p(rho**2)
        else:  # sub-VP: α² + ρ α − 1 = 0  ⇒  α = 2 / (ρ + √(ρ² + 4))
            B = -2.0 * np.log(2.0 / (rho + np.sqrt(rho**2 + 4.0)))
        b0, db = sde.beta_min, sde.beta_max - sde.beta_min
        return 2.0 * B / (b0 + np.sqrt(b0**2 + 2.0 * db * B))


def karras_rho_grid(rho_min: float, rho_max: float, num_steps: int, kappa: float = 7.0) -> np.ndarray:
    """EDM's power grid ρ_i = (ρ_max^{1/κ} + i/N (ρ_min^{1/κ} − ρ_max^{1/κ}))^κ, i = 0..N.

    Karras et al. 2022 (EDM, arXiv 2206.00364, Eq. 5), with κ (their ρ) = 7 by default.
    Returns N + 1 decreasing values from ρ_max to ρ_min, float64.
    """
    if not 0 <= rho_min < rho_max:
        raise ValueError(f"need 0 <= rho_min < rho_max, got rho_min={rho_min}, rho_max={rho_max}")
    if not kappa > 0:
        raise ValueError(f"the grid exponent kappa must be > 0, got {kappa}")
    w = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    lo, hi = rho_min ** (1.0 / kappa), rho_max ** (1.0 / kappa)
    grid = (hi + w * (lo - hi)) ** kappa
    grid[0], grid[-1] = rho_max, rho_min
    return grid


def resolve_eps(sde: SDE, eps: Optional[float]) -> float:
    """`eps` or the SDE's default end time, checked to lie in [0, T)."""
    eps = sde.default_eps if eps is None else float(eps)
    if not 0.0 <= eps < sde.T:
        raise ValueError(f"eps (the time the ODE is integrated down to) must be in [0, {sde.T}), got {eps}")
    return eps


def check_num_steps(num_steps) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    return int(num_steps)


def time_grid(sde: SDE, num_steps: int, grid: str = "rho", rho: float = 7.0,
              eps: Optional[float] = None) -> np.ndarray:
    """The N + 1 decreasing times t_0 = T > t_1 > ... > t_N = eps of a fixed-grid sampler.

    grid:
      'rho'  EDM power grid in ρ = s/α with exponent `rho` (κ), mapped back to t; for VE
             it is the EDM σ grid (DEIS's recommended "ρ" time discretisation).
      't'    uniform in t; for VE this is uniform in log σ.
      'quad' quadratic in t: t_i = (√T + i/N (√eps − √T))² (DEIS's "quad", DDIM's quadratic).
    Returns float64 NumPy, the SDE's own time.
    """
    num_steps = check_num_steps(num_steps)
    eps = resolve_eps(sde, eps)
    T = float(sde.T)
    if grid == "t":
        ts = np.linspace(T, eps, num_steps + 1)
    elif grid == "quad":
        ts = np.linspace(np.sqrt(T), np.sqrt(eps), num_steps + 1) ** 2
    elif grid == "rho":
        schedule = NoiseSchedule(sde)
        rhos = karras_rho_grid(float(schedule.rho(eps)), float(schedule.rho(T)), num_steps, rho)
        ts = schedule.t_of_rho(rhos)
    else:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    ts = np.asarray(ts, np.float64)
    ts[0], ts[-1] = T, eps  # exact end points whatever the round-off of the map back
    if not np.all(np.diff(ts) < 0):
        raise ValueError(
            f"the {grid!r} grid with {num_steps} steps is not strictly decreasing in t "
            f"(eps={eps}); use fewer steps or another grid")
    return ts
