"""DEIS: exponential-integrator samplers of the probability-flow ODE (VE, VP, sub-VP).

Zhang & Chen, "Fast Sampling of Diffusion Models with Exponential Integrator"
(DEIS, arXiv 2204.13902); docs/design.md §5. In DEIS variables (see `grids`)

    y = x / α(t),   ρ = s(t) / α(t),   dy/dρ = ε(x, t) = −s(t) · score(x, t),

which for the VE SDE is dx/dσ = −σ · score (α ≡ 1, ρ = σ) and for VP the paper's
ᾱ-formulation (ᾱ = α², ρ = √((1 − ᾱ)/ᾱ)). Methods:

  tab    tAB-DEIS: Adams–Bashforth with the Lagrange basis in the SDE time t (≡ log σ
         for VE) integrated exactly against dρ: x_{i+1} = (α_{i+1}/α_i) x_i + Σ_j C_ij ε_{i−j}.
  rhoab  ρAB-DEIS: the same with the Lagrange basis in ρ (a classical AB method in ρ).
  ipndm  iPNDM: fixed AB weights 1, (3, −1)/2, (23, −16, 5)/12, (55, −59, 37, −9)/24
         times α_{i+1}(ρ_{i+1} − ρ_i).
  rhork  ρRK-DEIS: explicit Runge–Kutta on dy/dρ = ε; order 1 Euler (= DDIM), 2 Heun
         (= EDM's deterministic sampler), 3 Kutta (DEIS's default), 4 classic RK4.

Multistep methods warm-start with r = min(i, order) and cost one score evaluation per
step; ρRK costs `order` evaluations per step. Order 0 tAB/ρAB/iPNDM is Euler in ρ
(for VE: Euler in σ).

All coefficients are float64 NumPy tables built once (`deis_coefficients`) and passed
as arrays to one module-level jitted `lax.fori_loop` (`multistep_solve`,
`runge_kutta_solve`) whose program does not depend on the number of steps; samplers
with the same table shapes share its compilation.

PDS preconditioning does not apply: the ODE is deterministic, and multiplying its score
term by P changes the marginals it transports (see `common.check_no_preconditioner`);
`precond` must be None or the identity.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from jax import lax

from pds_jax.samplers import ei_tables
from pds_jax.samplers.common import as_partial, batch_time, check_no_preconditioner, check_shape, prior_for
from pds_jax.samplers.ei_tables import (  # re-exported: the tables are part of the API
    IPNDM_WEIGHTS, MultistepTables, RungeKuttaTables, ipndm_coefficients, rhoab_coefficients, tab_coefficients,
    tab_coefficients_quadrature, tab_coefficients_ve)
from pds_jax.samplers.grids import time_grid
from pds_jax.samplers.record import Sampler
from pds_jax.samplers.runge_kutta import RK_TABLEAUS, ButcherTableau, rk_combine, rk_stages
from pds_jax.sde import SDE

Array = jax.Array
METHODS = ("tab", "rhoab", "rhork", "ipndm")
Tables = Union[MultistepTables, RungeKuttaTables]

__all__ = [
    "METHODS", "get_deis_sampler", "deis_coefficients", "multistep_solve", "runge_kutta_solve",
    "tab_coefficients", "tab_coefficients_ve", "tab_coefficients_quadrature", "rhoab_coefficients",
    "ipndm_coefficients", "IPNDM_WEIGHTS", "RK_TABLEAUS", "MultistepTables", "RungeKuttaTables",
]


def deis_coefficients(sde: SDE, num_steps: int, method: str = "tab", order: int = 3, grid: str = "rho",
                      rho: float = 7.0, eps: Optional[float] = None) -> Tables:
    """The float64 tables of a DEIS sampler (see `ei_tables` for the formulas).

    Returns `MultistepTables` (t, std, x_coef, eps_coef) for tab / rhoab / ipndm and
    `RungeKuttaTables` for rhork. `num_steps` is the number of grid intervals N; the grid
    is `grids.time_grid(sde, N, grid, rho, eps)`.
    """
    ts = time_grid(sde, num_steps, grid, rho, eps)
    if method == "tab":
        return tab_coefficients(sde, ts, order)
    if method == "rhoab":
        return rhoab_coefficients(sde, ts, order)
    if method == "ipndm":
        return ipndm_coefficients(sde, ts, order)
    if method == "rhork":
        return ei_tables.rk_coefficients(sde, ts, _tableau(order))
    raise ValueError(f"DEIS method must be one of {METHODS}, got {method!r}")


def _tableau(order) -> ButcherTableau:
    return RK_TABLEAUS[ei_tables.check_order(order, 1, 4, "rhork")]


@jax.jit
def multistep_solve(score_fn: Callable, x: Array, t: Array, std: Array, x_coef: Array,
                    eps_coef: Array) -> Array:
    """Run x_{i+1} = x_coef[i] x_i + Σ_j eps_coef[i, j] ε_{i−j} for i = 0..N−1 (jitted).

    x: (batch, H, W, C) at t[0]; tables as in `MultistepTables` (t may have N or N + 1
    entries; t[i] is where ε_i = −std[i] · score(x_i, t[i]) is evaluated); `score_fn` a
    `jax.tree_util.Partial`. The history of ε is a fixed (order + 1, batch, H, W, C)
    buffer, newest first; its zero-initialised entries meet zero coefficients during
    the warm start.
    """
    history = jnp.zeros((eps_coef.shape[1],) + x.shape, x.dtype)

    def step(i, carry):
        x, history = carry
        eps = -std[i] * score_fn(x, batch_time(t[i], x))
        history = jnp.concatenate([eps[None], history[:-1]], axis=0)
        x = x_coef[i] * x + jnp.tensordot(eps_coef[i], history, axes=1)
        return x, history

    x, _ = lax.fori_loop(0, std.shape[0], step, (x, history))
    return x


@functools.partial(jax.jit, static_argnums=(2,))
def runge_kutta_solve(score_fn: Callable, x: Array, tableau: ButcherTableau, rho: Array, alpha: Array,
                      stage_t: Array, stage_alpha: Array, stage_std: Array) -> Array:
    """Explicit Runge–Kutta in ρ on y = x / α: y_{i+1} = y_i + h_i Σ_k b_k ε_k, h_i = ρ_{i+1} − ρ_i.

    Stage k: y_k = y_i + h_i Σ_l a_kl ε_l, ε_k = −stage_std · score(stage_alpha · y_k, stage_t).
    The stages are `runge_kutta.rk_stages` (unrolled, at most 4); the steps are a
    `lax.fori_loop` (jitted, the tableau static).
    """

    def step(i, x):
        def slope(k, y_k):
            return -stage_std[i, k] * score_fn(stage_alpha[i, k] * y_k, batch_time(stage_t[i, k], x))

        h = rho[i + 1] - rho[i]
        y = x / alpha[i]
        _, slopes = rk_stages(tableau, slope, y, h)
        return alpha[i + 1] * rk_combine(y, h, tableau.b, slopes)

    return lax.fori_loop(0, stage_t.shape[0], step, x)


def multistep_program(t: Array, std: Array, x_coef: Array, eps_coef: Array, x: Array,
                      score_fn: Callable) -> Tuple[Array, Dict[str, Array]]:
    """`multistep_solve` (tAB / ρAB / iPNDM) from x = x_T; no stats (the `Sampler.solve` of DEIS)."""
    return multistep_solve(as_partial(score_fn), x, t, std, x_coef, eps_coef), {}


def runge_kutta_program(tableau: ButcherTableau, rho: Array, alpha: Array, stage_t: Array, stage_alpha: Array,
                        stage_std: Array, x: Array, score_fn: Callable) -> Tuple[Array, Dict[str, Array]]:
    """`runge_kutta_solve` (ρRK) from x = x_T; no stats."""
    return runge_kutta_solve(as_partial(score_fn), x, tableau, rho, alpha, stage_t, stage_alpha, stage_std), {}


def get_deis_sampler(sde: SDE, shape: Sequence[int], num_steps: int, method: str = "tab", order: int = 3,
                     grid: str = "rho", rho: float = 7.0, eps: Optional[float] = None, precond=None,
                     inverse_scaler: Optional[Callable[[Array], Array]] = None,
                     check_finite: bool = False) -> Sampler:
    """Build a DEIS `Sampler`: `sampler(rng, score_fn) -> (samples, nfe)`.

    Args:
      sde: VESDE, VPSDE or subVPSDE.
      shape: NHWC batch shape (batch, H, W, C) of the samples.
      num_steps: number of grid intervals N (NFE = N for tab / rhoab / ipndm, N · order for rhork).
      method: 'tab' | 'rhoab' | 'rhork' | 'ipndm' (see the module docstring).
      order: multistep history r ∈ {0, 1, 2, 3} (tab, rhoab, ipndm); RK order ∈ {1, 2, 3, 4} (rhork).
      grid: 'rho' (EDM power grid in ρ = σ for VE, exponent `rho`), 't' (uniform t = uniform
        log σ for VE) or 'quad' (quadratic t); see `grids.time_grid`.
      rho: exponent κ of the 'rho' grid (EDM: 7).
      eps: final time (default `sde.default_eps`); for VE, eps = 0 integrates down to σ_min.
      precond: None or an identity `Preconditioner`; anything else raises ValueError (PDS
        preconditioning has no marginal-preserving counterpart for the deterministic ODE).
      inverse_scaler: applied to the samples inside the compiled program (None: identity).
      check_finite: raise `FloatingPointError` after a call whose samples are NaN/Inf.

    The sampler draws x_T = `sde.prior_sampling` with `rng, step_rng = split(rng)` (score_sde's
    convention; `common.prior_sample`, before the solver's program) and calls `score_fn(x, t)` with x NHWC and t (batch,) in the SDE's time.
    The `Sampler` has method 'deis', `num_steps` = N and `nfe` the exact number of score
    evaluations; the float64 tables are `deis_coefficients(sde, N, method, order, grid, rho, eps)`.
    """
    check_no_preconditioner(precond, "get_deis_sampler")
    shape = check_shape(shape)
    tables = deis_coefficients(sde, num_steps, method, order, grid, rho, eps)
    as_f32 = lambda a: jnp.asarray(a, jnp.float32)
    if method == "rhork":
        tableau = _tableau(order)
        args = tuple(as_f32(a) for a in (tables.rho, tables.alpha, tables.stage_t, tables.stage_alpha,
                                          tables.stage_std))
        solve = functools.partial(runge_kutta_program, tableau, *args)
        nfe = len(tableau.b) * (len(tables.t) - 1)
    else:
        args = tuple(as_f32(a) for a in (tables.t, tables.std, tables.x_coef, tables.eps_coef))
        solve = functools.partial(multistep_program, *args)
        nfe = len(tables.t) - 1
    return Sampler(method="deis", shape=shape, num_steps=len(tables.t) - 1, nfe=nfe, eps=float(tables.t[-1]),
                   solve=solve, prior=prior_for(sde, shape), inverse_scaler=inverse_scaler,
                   check_finite=check_finite,
                   options={"solver": method, "order": int(order), "grid": grid, "rho": float(rho)})
