"""Probability-flow ODE samplers: fixed-grid Euler / Heun and adaptive Dormand–Prince RK45.

The probability-flow ODE of an SDE dx = f dt + g dw (Song et al. 2021, score_sde,
Eq. 13; docs/design.md §5) is

    dx/dt = f(x, t) − ½ g(t)² score(x, t).

Fixed grids integrate the VE ODE in σ, where it reads dx/dσ = −σ · score(x, t(σ))
(since g² = dσ²/dt), and the VP / sub-VP ODE in t. The grids are those of
`grids.time_grid` ('rho': EDM power grid in σ, resp. in ρ = s/α mapped to t; 't';
'quad'). Heun on the EDM grid is EDM's deterministic sampler (Karras et al. 2022, Alg. 1
without the final σ = 0 step).

The adaptive solver integrates in t for every SDE, like score_sde's
`scipy.integrate.solve_ivp(..., method='RK45')` (default rtol = atol = 1e-5), with the
Dormand–Prince 5(4) pair (Dormand & Prince 1980; Hairer, Nørsett & Wanner, Solving ODEs I,
Sec. II.4–II.5), FSAL, the RMS error norm over the whole batch as scipy computes it on
score_sde's flattened batch, and a PI step-size controller (Hairer's DOPRI5:
h_new = h · 0.9 · err^{−0.17} · err_prev^{0.04}, growth clipped to [0.2, 10], no growth
right after a rejection). It runs inside one `lax.while_loop`; if `max_steps` attempts
do not reach `eps` the samples are NaN (never a silently unfinished result).

`denoise=True` adds one Tweedie step at t = eps, x ← (x + s(eps)² · score(x, eps)) / α(eps),
the posterior mean E[x_0 | x_eps] (for VE: x + σ_min² · score). This is not score_sde's
ODE denoiser (one noise-free reverse-diffusion predictor step); it costs one extra NFE.

PDS preconditioning does not apply to the deterministic ODE (see
`common.check_no_preconditioner`); `precond` must be None or the identity.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pds_jax.samplers.common import as_partial, batch_time, check_no_preconditioner, check_shape, prior_for
from pds_jax.samplers.grids import check_num_steps, resolve_eps, time_grid
from pds_jax.samplers.record import Sampler
from pds_jax.samplers.runge_kutta import DORMAND_PRINCE, RK_TABLEAUS, rk_combine, rk_stages
from pds_jax.sde import SDE, batch_mul

Array = jax.Array
FIXED_GRID_TABLEAUS = {"euler": RK_TABLEAUS[1], "heun": RK_TABLEAUS[2]}
FIXED_GRID_METHODS = tuple(FIXED_GRID_TABLEAUS)
METHODS = FIXED_GRID_METHODS + ("adaptive",)


# --------------------------------------------------------------------------- #
# The vector fields.
# --------------------------------------------------------------------------- #

def pf_ode_drift(sde: SDE, score_fn: Callable, x: Array, t: Array) -> Array:
    """dx/dt = f(x, t) − ½ g(t)² score(x, t) at a scalar time t (`SDE.probability_flow_drift`)."""
    return sde.probability_flow_drift(score_fn, x, batch_time(t, x))


class FixedGridTables(NamedTuple):
    """t: (N + 1,) times; tau: (N + 1,) integration variable `sde.np_ode_tau(t)` (σ for VE, t otherwise)."""

    t: np.ndarray
    tau: np.ndarray


def fixed_grid_tables(sde: SDE, num_steps: int, grid: str = "rho", rho: float = 7.0,
                      eps: Optional[float] = None) -> FixedGridTables:
    ts = time_grid(sde, num_steps, grid, rho, eps)
    return FixedGridTables(ts, sde.np_ode_tau(ts))


@functools.partial(jax.jit, static_argnums=(0, 5))
def fixed_grid_solve(sde: SDE, score_fn: Callable, x: Array, t: Array, tau: Array,
                     method: str = "euler") -> Array:
    """Euler (1 NFE/step) or Heun (2 NFE/step) from t[0] to t[-1] on the grid τ (see `FixedGridTables`).

    Jitted with `sde` and `method` static; `score_fn` must be a `jax.tree_util.Partial`.
    """

    tableau = FIXED_GRID_TABLEAUS[method]

    def step(i, x):
        # Stage nodes c ∈ {0, 1} are grid points i + c: no time between grid points is needed.
        def slope(k, x_k):
            j = i + int(tableau.c[k])
            return sde.pf_ode_tau_derivative(score_fn, x_k, batch_time(t[j], x_k), tau[j])

        h = tau[i + 1] - tau[i]
        _, slopes = rk_stages(tableau, slope, x, h)
        return rk_combine(x, h, tableau.b, slopes)

    return lax.fori_loop(0, t.shape[0] - 1, step, x)


@functools.partial(jax.jit, static_argnums=(0,))
def tweedie_denoise(sde: SDE, score_fn: Callable, x: Array, t: Array) -> Array:
    """E[x_0 | x_t] = (x + s(t)² score(x, t)) / α(t) at a scalar time t."""
    tb = batch_time(t, x)
    mean_coeff, std = sde.marginal_coefficients(tb)
    return batch_mul(1.0 / mean_coeff, x + batch_mul(std**2, score_fn(x, tb)))


# --------------------------------------------------------------------------- #
# Adaptive Dormand–Prince 5(4).
# --------------------------------------------------------------------------- #

_SAFETY, _BETA_I, _BETA_P = 0.9, 0.17, 0.04  # Hairer's DOPRI5: 1/5 − 0.75 β, β = 0.04
_MIN_FACTOR, _MAX_FACTOR = 0.2, 10.0


def _rms_norm(err: Array, x: Array, x_new: Array, rtol: float, atol: float) -> Array:
    scale = atol + rtol * jnp.maximum(jnp.abs(x), jnp.abs(x_new))
    return jnp.sqrt(jnp.mean((err / scale) ** 2))


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 6, 7))
def adaptive_solve(sde: SDE, score_fn: Callable, x: Array, t0: float, t1: float, rtol: float = 1e-5,
                   atol: float = 1e-5, max_steps: int = 4096) -> Tuple[Array, Dict[str, Array]]:
    """Integrate dx/dt = `pf_ode_drift` from t0 down to t1 < t0 with adaptive DOPRI5.

    Jitted; `sde`, t0, t1, rtol, atol and max_steps are static (Python numbers).

    NFE = 2 (f(x_0) and the initial-step probe) + 6 per attempted step (FSAL).
    Returns the state at t1 (NaN if `max_steps` attempts did not get there) and the stats
    {'nfe', 'accepted', 'rejected'} (int32 scalars) and 't_final' (the time reached).
    """
    f = lambda x, t: pf_ode_drift(sde, score_fn, x, t)
    dtype = x.dtype
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    span = t0 - t1
    f0 = f(x, t0)

    # Initial step (Hairer, Nørsett & Wanner, II.4; scipy's select_initial_step).
    scale = atol + rtol * jnp.abs(x)
    d0 = jnp.sqrt(jnp.mean((x / scale) ** 2))
    d1 = jnp.sqrt(jnp.mean((f0 / scale) ** 2))
    h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
    h0 = jnp.minimum(h0, span)
    f1 = f(x - h0 * f0, t0 - h0)
    d2 = jnp.sqrt(jnp.mean(((f1 - f0) / scale) ** 2)) / h0
    h1 = jnp.where(jnp.maximum(d1, d2) <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3),
                   (0.01 / jnp.maximum(d1, d2)) ** (1 / 5))
    h_init = jnp.minimum(jnp.minimum(100 * h0, h1), span).astype(dtype)

    def attempt(state):
        t, h, x, fx, err_prev, was_rejected, nfe, accepted, rejected = state
        h = jnp.minimum(h, t - t1)
        dt = -h  # integrating towards smaller t
        points, slopes = rk_stages(DORMAND_PRINCE, lambda k, x_k: f(x_k, t + DORMAND_PRINCE.c[k] * dt), x, dt,
                                   first_slope=fx)
        x_new, f_new = points[-1], slopes[-1]  # the 7th stage point is the 5th-order solution (FSAL)
        err_vec = rk_combine(0.0, dt, DORMAND_PRINCE.b_err, slopes)
        err = _rms_norm(err_vec, x, x_new, rtol, atol)
        ok = err <= 1.0
        factor = _SAFETY * jnp.maximum(err, 1e-10) ** (-_BETA_I) * err_prev**_BETA_P
        factor = jnp.clip(factor, _MIN_FACTOR, _MAX_FACTOR)
        factor = jnp.where(ok & was_rejected, jnp.minimum(factor, 1.0), factor)
        factor = jnp.where(ok, factor, jnp.clip(_SAFETY * err ** (-1 / 5), _MIN_FACTOR, 1.0))
        finishes = ok & (h >= t - t1)
        t_new = jnp.where(finishes, t1, jnp.where(ok, t - h, t))
        return (t_new, (h * factor).astype(dtype), jnp.where(ok, x_new, x), jnp.where(ok, f_new, fx),
                jnp.where(ok, jnp.maximum(err, 1e-4), err_prev), ~ok, nfe + 6,
                accepted + ok.astype(jnp.int32), rejected + (~ok).astype(jnp.int32))

    def not_done(state):
        t, *_, accepted, rejected = state
        return (t > t1) & (accepted + rejected < max_steps)

    zero = jnp.zeros((), jnp.int32)
    init = (t0, h_init, x, f0, jnp.asarray(1e-4, dtype), jnp.asarray(False), zero + 2, zero, zero)
    t, _, x, _, _, _, nfe, accepted, rejected = lax.while_loop(not_done, attempt, init)
    x = jnp.where(t > t1, jnp.nan, x)
    return x, {"nfe": nfe, "accepted": accepted, "rejected": rejected, "t_final": t}


# --------------------------------------------------------------------------- #
# The programs a `Sampler` runs (module level; the builders bind their tables).
# --------------------------------------------------------------------------- #

def fixed_grid_program(sde: SDE, method: str, denoise: bool, t: Array, tau: Array, x: Array,
                       score_fn: Callable) -> Tuple[Array, Dict[str, Array]]:
    """Euler/Heun from x = x_T on the grid (t, τ), then the optional Tweedie step; no stats."""
    score_fn = as_partial(score_fn)
    x = fixed_grid_solve(sde, score_fn, x, t, tau, method)
    if denoise:
        x = tweedie_denoise(sde, score_fn, x, t[-1])
    return x, {}


def adaptive_program(sde: SDE, t0: float, t1: float, rtol: float, atol: float, max_steps: int,
                     denoise: bool, x: Array, score_fn: Callable) -> Tuple[Array, Dict[str, Array]]:
    """Adaptive DOPRI5 from x = x_T at t0 to t1, then the optional Tweedie step (+1 NFE)."""
    score_fn = as_partial(score_fn)
    x, stats = adaptive_solve(sde, score_fn, x, t0, t1, rtol, atol, max_steps)
    if denoise:
        x = tweedie_denoise(sde, score_fn, x, jnp.float32(t1))
        stats = dict(stats, nfe=stats["nfe"] + 1)
    return x, stats


# --------------------------------------------------------------------------- #
# The builder.
# --------------------------------------------------------------------------- #

def get_ode_sampler(sde: SDE, shape: Sequence[int], method: str = "euler", num_steps: int = 100,
                    grid: str = "rho", rho: float = 7.0, rtol: float = 1e-5, atol: float = 1e-5,
                    eps: Optional[float] = None, denoise: bool = False, precond=None,
                    max_steps: int = 4096, inverse_scaler: Optional[Callable[[Array], Array]] = None,
                    check_finite: bool = False) -> Sampler:
    """Build a probability-flow ODE `Sampler`: `sampler(rng, score_fn) -> (samples, nfe)`.

    Args:
      sde: VESDE, VPSDE or subVPSDE.
      shape: NHWC batch shape (batch, H, W, C).
      method: 'euler' | 'heun' (fixed grid: in σ for VE, in t for VP / sub-VP) | 'adaptive'
        (Dormand–Prince RK45 in t, see the module docstring).
      num_steps: grid intervals N of the fixed-grid methods (NFE = N for Euler, 2N for Heun).
      grid, rho: the fixed grid (`grids.time_grid`): 'rho' (EDM power grid, exponent κ = rho),
        't' (uniform t; uniform log σ for VE) or 'quad'.
      rtol, atol: tolerances of the adaptive solver (score_sde: 1e-5 each).
      eps: final time (default `sde.default_eps`); eps = 0 for VE integrates down to σ_min.
      denoise: add one Tweedie denoising step at eps (+1 NFE).
      precond: None or an identity `Preconditioner`; anything else raises ValueError.
      max_steps: attempt budget of the adaptive solver (samples are NaN when exhausted).
      inverse_scaler: applied to the samples inside the compiled program (None: identity).
      check_finite: raise `FloatingPointError` after a call whose samples are NaN/Inf.

    x_T = `sde.prior_sampling` with `rng, step_rng = split(rng)` (score_sde's convention), drawn
    by `common.prior_sample` before the solver's program (`Sampler.prior`).
    The `Sampler` has method 'ode'; its `num_steps` is N for the fixed grids and
    `max_steps` for 'adaptive', whose `nfe` is the bound 2 + 6 max_steps (+1) while a call
    returns the evaluations actually used (`sampler.solve(rng, score_fn)` returns the
    adaptive stats 'nfe', 'accepted', 'rejected', 't_final' too).
    """
    check_no_preconditioner(precond, "get_ode_sampler")
    shape = check_shape(shape)
    common = dict(method="ode", shape=shape, inverse_scaler=inverse_scaler, check_finite=check_finite,
                  prior=prior_for(sde, shape))
    if method in FIXED_GRID_METHODS:
        tables = fixed_grid_tables(sde, num_steps, grid, rho, eps)
        t, tau = jnp.asarray(tables.t, jnp.float32), jnp.asarray(tables.tau, jnp.float32)
        per_step = 1 if method == "euler" else 2
        return Sampler(
            num_steps=int(num_steps), nfe=per_step * int(num_steps) + int(bool(denoise)),
            eps=float(tables.t[-1]),
            solve=functools.partial(fixed_grid_program, sde, method, bool(denoise), t, tau),
            options={"solver": method, "grid": grid, "rho": float(rho), "denoise": bool(denoise)}, **common)
    if method != "adaptive":
        raise ValueError(f"ODE method must be one of {METHODS}, got {method!r}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    max_steps = check_num_steps(max_steps)
    t0, t1 = float(sde.T), resolve_eps(sde, eps)
    rtol, atol = float(rtol), float(atol)
    return Sampler(
        num_steps=max_steps, nfe=2 + 6 * max_steps + int(bool(denoise)), eps=t1, adaptive=True,
        solve=functools.partial(adaptive_program, sde, t0, t1, rtol, atol, max_steps, bool(denoise)),
        options={"solver": "adaptive", "rtol": rtol, "atol": atol, "denoise": bool(denoise)}, **common)
