"""The time grids of the deterministic samplers (probability-flow ODE, DEIS).

Following DEIS (Zhang & Chen, "Fast Sampling of Diffusion Models with Exponential
Integrator", arXiv 2204.13902), every SDE of `pds_jax.sde` has Gaussian transition
kernels p_t(x | x_0) = N(α(t) x_0, s(t)² I), and with

    ρ(t) = s(t) / α(t),        y = x / α(t),

the probability-flow ODE of *any* of them is

    dy/dρ = ε(x, t) = −s(t) · ∇log p_t(x)                                        (★)

(for VE, α ≡ 1 and ρ = σ: dx/dσ = −σ · score, docs/design.md §5). The samplers precompute
everything that depends only on the schedule at build time, in float64 NumPy, with
each SDE's own closed forms (`sde.np_alpha`, `np_std`, `np_rho`, `np_t_of_rho`; no
float32 round trips through `jnp`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from pds_jax.sde import SDE

GRIDS = ("rho", "t", "quad")


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
        rhos = karras_rho_grid(float(sde.np_rho(eps)), float(sde.np_rho(T)), num_steps, rho)
        ts = sde.np_t_of_rho(rhos)
    else:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    ts = np.asarray(ts, np.float64)
    ts[0], ts[-1] = T, eps  # exact end points whatever the round-off of the map back
    if not np.all(np.diff(ts) < 0):
        raise ValueError(
            f"the {grid!r} grid with {num_steps} steps is not strictly decreasing in t "
            f"(eps={eps}); use fewer steps or another grid")
    return ts
