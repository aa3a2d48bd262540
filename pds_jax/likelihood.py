"""Exact likelihoods (bits/dim) through the probability-flow ODE, with score_sde's semantics.

The probability-flow ODE of dx = f dt + g dw (Song et al. 2021, Eq. 13; score_sde
`likelihood.py`) is dx/dt = f̃(x, t) = f(x, t) − ½ g(t)² score(x, t). Along a solution
the log-density obeys the instantaneous change of variables (Chen et al. 2018, FFJORD):

    d log p_t(x(t)) / dt = −∇·f̃(x(t), t),

so integrating (x, δ) with dx/dt = f̃ and dδ/dt = ∇·f̃ from t = eps (x(eps) = data) to
T gives z = x(T) and

    log p_eps(x) = log p_T(z) + δ(T) ≈ sde.prior_logp(z) + δ(T).

Bits per dimension (score_sde): bpd = −log p(x) / (D ln 2) + offset, D = H·W·C, with
offset = log2(inverse_scaler′(0)) + 8. The 8 converts a density on [0, 1] into one on
[0, 256] (log2 256 per dimension, the discrete-data convention for 8-bit images), and
the Jacobian of the inverse data scaler converts the model's data space into [0, 1]:
8 for [0, 1] data (identity), 7 for [−1, 1] data (x ↦ (x + 1)/2). score_sde writes it
as 7 − inverse_scaler(−1), the same number for these two affine scalers.

Divergence ∇·f̃ (one of `HUTCHINSON_TYPES`):
  'rademacher' / 'gaussian': the Skilling–Hutchinson estimator εᵀ (∂f̃/∂x) ε with one
    probe ε per batch element, drawn once and fixed along the ODE (score_sde; FFJORD),
    computed with one forward-mode `jax.jvp`. E[εᵀ J ε] = tr J for both probes; the
    variance is 2(‖J‖_F² − Σ J_ii²) (Rademacher) and 2‖J‖_F² (Gaussian).
  'exact': tr J = Σ_i e_iᵀ J e_i, D jvps per evaluation (vmapped in chunks): for small D.
Both assume f̃ acts on each batch element separately (true for score networks with
per-example normalisation, e.g. NCSN++'s GroupNorm, and for the oracle).

The ODE is solved jointly for the flattened batch and the B log-density increments,
in one state vector, exactly as score_sde hands it to `scipy.integrate.solve_ivp(...,
method='RK45')` (rtol = atol = 1e-5): Dormand–Prince 5(4) with scipy's RK45 step-size
rules (`_solve_rk45`). NFE counts evaluations of the ODE right-hand side (scipy's
`nfev`): 2 + 6 per attempted step; each evaluation is one jvp of the score model
(about the cost of two to three forward passes) for Hutchinson, D jvps for 'exact'.
"""

from __future__ import annotations

import functools
import glob
import math
import os
from typing import Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pds_jax.io_utils import load_npz
from pds_jax.samplers.common import as_partial
from pds_jax.samplers.runge_kutta import DORMAND_PRINCE
from pds_jax.sde import SDE, batch_mul

Array = jax.Array
HUTCHINSON_TYPES = ("rademacher", "gaussian", "exact")

# scipy.integrate.RK45's step-size rules (scipy/integrate/_ivp/rk.py): h ← h · clip(0.9 err^(−1/5)).
_SAFETY, _MIN_FACTOR, _MAX_FACTOR, _ERROR_EXPONENT = 0.9, 0.2, 10.0, -1.0 / 5.0


# --------------------------------------------------------------------------- #
# Dormand–Prince 5(4) on a flat state, scipy's RK45 controller.
# --------------------------------------------------------------------------- #

def _tableau(dtype) -> Tuple[Array, Array, Array, Array]:
    """(c (7,), a (7, 7) lower-triangular, b (7,), e = b − b_low (7,)) of DORMAND_PRINCE, as
    arrays: this solver runs its stages in a `fori_loop` (below), not `runge_kutta.rk_stages`'s
    unrolled loop, because every stage traces the jvp of the score network."""
    a = np.zeros((7, 7))
    for k, row in enumerate(DORMAND_PRINCE.a):
        a[k, : len(row)] = row
    return tuple(jnp.asarray(v, dtype) for v in (DORMAND_PRINCE.c, a, DORMAND_PRINCE.b, DORMAND_PRINCE.b_err))


def _combine(weights: Array, slopes: Array) -> Array:
    """Σ_k w_k slopes_k as an elementwise sum (a dot could run in TF32 on GPUs)."""
    return jnp.sum(weights[:, None] * slopes, axis=0)


def _rms(v: Array) -> Array:
    return jnp.sqrt(jnp.mean(v**2))


def _initial_step(f, y0, f0, t0, direction, span, rtol, atol):
    """scipy's `select_initial_step` (Hairer, Nørsett & Wanner, Sec. II.4); costs one evaluation."""
    scale = atol + rtol * jnp.abs(y0)
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    h0 = jnp.minimum(jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1), span)
    f1 = f(y0 + direction * h0 * f0, t0 + direction * h0)
    d2 = _rms((f1 - f0) / scale) / h0
    d12 = jnp.maximum(d1, d2)
    h1 = jnp.where(d12 <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3), (0.01 / d12) ** (1 / 5))
    return jnp.minimum(jnp.minimum(100 * h0, h1), span)


class SolveStats(NamedTuple):
    """Counters of `_solve_rk45` (int32 scalars) and the time reached."""

    nfe: Array
    accepted: Array
    rejected: Array
    t_final: Array


def _solve_rk45(f: Callable, y0: Array, t0: float, t1: float, rtol: float, atol: float,
                max_steps: int) -> Tuple[Array, SolveStats]:
    """Integrate dy/dt = f(y, t) for a 1-D y from t0 to t1 (either direction), like scipy's RK45.

    Error norm RMS(err / (atol + rtol max(|y|, |y_new|))) over the whole vector; accept
    when ≤ 1; h ← h · min(10, 0.9 err^(−1/5)) after an acceptance (≤ 1 right after a
    rejection), h ← h · max(0.2, 0.9 err^(−1/5)) after a rejection. The six stages run in
    a `fori_loop`, so f is traced three times (start, initial-step probe, stage), not
    eight: compiling a score network's jvp is the slow part. Returns NaN if `max_steps`
    attempts do not reach t1.
    """
    dtype = y0.dtype
    c, a, b, e = _tableau(dtype)
    direction, span = (1.0 if t1 > t0 else -1.0), abs(t1 - t0)
    t0_, t1_ = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    f0 = f(y0, t0_)
    h_init = _initial_step(f, y0, f0, t0_, direction, span, rtol, atol).astype(dtype)

    def attempt(state):
        t, h, y, fy, was_rejected, nfe, accepted, rejected = state
        remaining = direction * (t1_ - t)
        h = jnp.minimum(h, remaining)
        dt = direction * h

        def stage(k, slopes):
            return slopes.at[k].set(f(y + dt * _combine(a[k], slopes), t + c[k] * dt))

        slopes = lax.fori_loop(1, 7, stage, jnp.zeros((7,) + y.shape, dtype).at[0].set(fy))
        y_new = y + dt * _combine(b, slopes)  # = the 7th stage point (FSAL): slopes[6] = f(y_new)
        scale = atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(y_new))
        err = _rms(dt * _combine(e, slopes) / scale)
        ok = err < 1.0
        grow = jnp.where(err == 0.0, _MAX_FACTOR,
                         jnp.minimum(_MAX_FACTOR, _SAFETY * jnp.maximum(err, 1e-30) ** _ERROR_EXPONENT))
        grow = jnp.where(was_rejected, jnp.minimum(grow, 1.0), grow)
        shrink = jnp.maximum(_MIN_FACTOR, _SAFETY * err**_ERROR_EXPONENT)
        t_new = jnp.where(ok, jnp.where(h >= remaining, t1_, t + dt), t)
        return (t_new, (h * jnp.where(ok, grow, shrink)).astype(dtype), jnp.where(ok, y_new, y),
                jnp.where(ok, slopes[6], fy), ~ok, nfe + 6, accepted + ok.astype(jnp.int32),
                rejected + (~ok).astype(jnp.int32))

    def not_done(state):
        t, *_, accepted, rejected = state
        return (direction * (t1_ - t) > 0) & (accepted + rejected < max_steps)

    zero = jnp.zeros((), jnp.int32)
    init = (t0_, h_init, y0, f0, jnp.asarray(False), zero + 2, zero, zero)
    t, _, y, _, _, nfe, accepted, rejected = lax.while_loop(not_done, attempt, init)
    y = jnp.where(direction * (t1_ - t) > 0, jnp.nan, y)
    return y, SolveStats(nfe, accepted, rejected, t)


# --------------------------------------------------------------------------- #
# Drift and divergence.
# --------------------------------------------------------------------------- #

def _pf_drift(sde: SDE, score_fn: Callable, x: Array, t: Array) -> Array:
    """f̃ = f − ½ g² score at a scalar t: score_sde's `sde.reverse(score_fn, True).sde(x, t)[0]`."""
    tb = jnp.full((x.shape[0],), t, x.dtype)
    return sde.reverse(score_fn, probability_flow=True).sde(x, tb)[0]


def _hutchinson_div(fn: Callable, x: Array, probe: Array) -> Tuple[Array, Array]:
    """(fn(x), Σ_{non-batch} probe ⊙ J probe): one jvp gives the drift and its estimate."""
    out, jv = jax.jvp(fn, (x,), (probe,))
    return out, jnp.sum((probe * jv).reshape(x.shape[0], -1), axis=-1)


def _exact_div(fn: Callable, x: Array, chunk: int) -> Tuple[Array, Array]:
    """(fn(x), tr J per batch element) from D jvps along the basis vectors, `chunk` at a time.

    The basis vector e_i is the tangent of every batch element at once, so one jvp gives
    column i of each element's Jacobian (no coupling between batch elements assumed).
    """
    batch, dim = x.shape[0], math.prod(x.shape[1:])
    n_chunks = -(-dim // chunk)
    indices = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)

    def diagonal_entry(i):  # (batch,): J_ii of every element, 0 for the padding i ≥ D
        tangent = jnp.broadcast_to(jax.nn.one_hot(i, dim, dtype=x.dtype).reshape(x.shape[1:]), x.shape)
        jv = jax.jvp(fn, (x,), (tangent,))[1].reshape(batch, dim)
        return jv[:, jnp.minimum(i, dim - 1)] * (i < dim)

    diag = lax.map(jax.vmap(diagonal_entry), indices)  # (n_chunks, chunk, batch)
    return fn(x), jnp.sum(diag, axis=(0, 1))


def draw_probe(rng: Array, shape, hutchinson_type: str, dtype=jnp.float32) -> Optional[Array]:
    """score_sde's Hutchinson probe ε (shape of x): Rademacher ±1 or N(0, I); None for 'exact'."""
    if hutchinson_type == "rademacher":
        return jax.random.rademacher(rng, shape, dtype=dtype)
    if hutchinson_type == "gaussian":
        return jax.random.normal(rng, shape, dtype=dtype)
    return None


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7, 8, 9))
def _solve_logp(sde: SDE, score_fn: Callable, x: Array, probe: Optional[Array], eps: float,
                rtol: float, atol: float, max_steps: int, exact_chunk: int,
                hutchinson_type: str) -> Tuple[Array, Array, SolveStats]:
    """(z = x(T), log p(x) = prior_logp(z) + δ(T), stats) for a batch x (B, H, W, C)."""
    batch, size = x.shape[0], x.size

    def rhs(state, t):
        y = state[:size].reshape(x.shape)
        fn = lambda v: _pf_drift(sde, score_fn, v, t)
        if hutchinson_type == "exact":
            drift, div = _exact_div(fn, y, exact_chunk)
        else:
            drift, div = _hutchinson_div(fn, y, probe)
        return jnp.concatenate([drift.reshape(-1), div])

    state0 = jnp.concatenate([x.reshape(-1), jnp.zeros((batch,), x.dtype)])  # score_sde's layout
    state, stats = _solve_rk45(rhs, state0, eps, float(sde.T), rtol, atol, max_steps)
    z = state[:size].reshape(x.shape)
    return z, sde.prior_logp(z) + state[size:], stats


# --------------------------------------------------------------------------- #
# The public builder.
# --------------------------------------------------------------------------- #

def bpd_offset(inverse_scaler: Optional[Callable] = None) -> float:
    """log2(inverse_scaler′(0)) + 8: 8 for [0, 1] data (identity / None), 7 for [−1, 1] data."""
    if inverse_scaler is None:
        return 8.0
    slope = float(jax.grad(lambda u: jnp.asarray(inverse_scaler(u), jnp.float32))(jnp.float32(0.0)))
    if not (np.isfinite(slope) and slope > 0):
        raise ValueError(f"inverse_scaler must be increasing at 0 (an affine map onto [0, 1]); its "
                         f"derivative there is {slope}")
    return float(np.log2(slope) + 8.0)


def _check_arguments(sde, hutchinson_type, rtol, atol, eps, max_steps, exact_chunk):
    if hutchinson_type not in HUTCHINSON_TYPES:
        raise ValueError(f"hutchinson_type must be one of {HUTCHINSON_TYPES}, got {hutchinson_type!r}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T = {sde.T}), got eps={eps}")
    if int(max_steps) < 1 or int(exact_chunk) < 1:
        raise ValueError(f"max_steps and exact_chunk must be >= 1, got {max_steps} and {exact_chunk}")


def get_likelihood_fn(sde: SDE, inverse_scaler: Optional[Callable] = None,
                      hutchinson_type: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5,
                      eps: float = 1e-5, max_steps: int = 4096,
                      exact_chunk: int = 64) -> Callable[[Array, Callable, Array], Tuple[Array, Array, Array]]:
    """Build `likelihood_fn(rng, score_fn, x) -> (bpd, z, nfe)` (score_sde's `get_likelihood_fn`).

    Args:
      sde: VESDE, VPSDE or subVPSDE (the model's SDE).
      inverse_scaler: the model's data space → [0, 1] (`data.get_data_inverse_scaler`);
        None is the identity. Sets the offset `bpd_offset(inverse_scaler)`.
      hutchinson_type: 'rademacher' | 'gaussian' (one probe per batch element, fixed along
        the ODE) | 'exact' (the full trace: D jvps per evaluation; small images only).
      rtol, atol: RK45 tolerances on the joint state (score_sde: 1e-5 each).
      eps: start time of the ODE, x(eps) = data (score_sde: 1e-5 for every SDE).
      max_steps: attempt budget; bpd is NaN when it is exhausted.
      exact_chunk: basis vectors per vmapped jvp batch for 'exact'.

    `likelihood_fn` takes x (B, H, W, C) in the model's data space (dequantised, scaled)
    and `score_fn(x, t)` (wrapped as a `jax.tree_util.Partial`, so new parameters do not
    recompile). It returns bpd (B,) = −log p_eps(x) / (D ln 2) + offset with the
    prior N(·) of `sde.prior_logp` in place of p_T, z = x(T) (B, H, W, C), and nfe: the
    RHS evaluations of the solve (int32 scalar, for the whole batch). The probe uses
    `rng, step_rng = split(rng)` (score_sde).
    """
    _check_arguments(sde, hutchinson_type, rtol, atol, eps, max_steps, exact_chunk)
    offset = bpd_offset(inverse_scaler)
    statics = (float(eps), float(rtol), float(atol), int(max_steps), int(exact_chunk), hutchinson_type)

    def likelihood_fn(rng: Array, score_fn: Callable, x: Array) -> Tuple[Array, Array, Array]:
        x = jnp.asarray(x)
        if x.ndim != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"x must be a float NHWC batch (B, H, W, C) in the model's data space, got "
                             f"shape {x.shape} and dtype {x.dtype}")
        _, step_rng = jax.random.split(rng)
        probe = draw_probe(step_rng, x.shape, hutchinson_type, x.dtype)
        z, logp, stats = _solve_logp(sde, as_partial(score_fn), x, probe, *statics)
        bpd = -logp / (math.prod(x.shape[1:]) * np.log(2.0)) + offset
        return bpd, z, stats.nfe

    likelihood_fn.offset = offset
    return likelihood_fn


# --------------------------------------------------------------------------- #
# Ground truth on the Gaussian oracle.
# --------------------------------------------------------------------------- #

def gaussian_logp(oracle, x: Array, mean_coeff: float, std: float) -> Array:
    """log N(x; m μ, m² Σ + s² I) per batch element for a `GaussianOracle` (Σ Fourier-diagonal).

    With v = m² λ + s² (the covariance eigenvalues in the unitary DFT basis, all H·W·C of
    them, λ Hermitian-symmetric): log p = −½ [D log 2π + Σ log v + (x − mμ)ᵀ C⁻¹ (x − mμ)],
    and C⁻¹ (x − mμ) = −score (`oracle.score`), so no complex coefficients are counted.
    """
    batch = x.shape[0]
    m = jnp.full((batch,), mean_coeff, x.dtype)
    s = jnp.full((batch,), std, x.dtype)
    centred = x - batch_mul(m, jnp.broadcast_to(oracle.mean, x.shape))
    maha = -jnp.sum((centred * oracle.score(x, m, s)).reshape(batch, -1), axis=-1)
    v = mean_coeff**2 * oracle.spectrum + std**2
    dim = math.prod(x.shape[1:])
    return -0.5 * (dim * np.log(2 * np.pi) + jnp.sum(jnp.log(v)) + maha)


def oracle_bpd(oracle, sde: SDE, x: Array, eps: float, offset: float = 8.0) -> Tuple[Array, Array]:
    """(true bpd of p_eps, bpd the ODE should return with `sde.prior_logp` in place of p_T).

    The second adds the exact prior mismatch prior_logp(z) − log p_T(z) at z = the exact
    ODE image of x at T (`oracle.ode_solution`); for VE with σ_max = 50 and [0, 1]-scale
    data it is ~1e-4 bits/dim, so both agree to that.
    """
    dim = math.prod(x.shape[1:])
    m_eps, s_eps = (float(v) for v in sde.marginal_coefficients(jnp.asarray(eps, jnp.float32)))
    m_T, s_T = (float(v) for v in sde.marginal_coefficients(jnp.asarray(sde.T, jnp.float32)))
    logp = gaussian_logp(oracle, x, m_eps, s_eps)
    z = oracle.ode_solution(x, eps, sde.T, sde)
    mismatch = sde.prior_logp(z) - gaussian_logp(oracle, z, m_T, s_T)
    to_bpd = lambda lp: -lp / (dim * np.log(2.0)) + offset
    return to_bpd(logp), to_bpd(logp + mismatch)


# --------------------------------------------------------------------------- #
# A --mode=likelihood run's batch files (batches/batch_<k>.npz: bpd, nfe, seconds).
# --------------------------------------------------------------------------- #

def load_results(batch_dir: str):
    """(bpd of all images, NFE per batch, seconds per batch) of a run's batch files."""
    bpds, nfes, seconds = [], [], []
    for f in sorted(glob.glob(os.path.join(batch_dir, "batch_*.npz"))):
        data = load_npz(f, "batch file", fix="delete it and start the run again: the batch is recomputed")
        bpds.append(data["bpd"])
        nfes.append(int(data["nfe"]))
        seconds.append(float(data["seconds"]))
    return np.concatenate(bpds), nfes, seconds


def summarize(bpd: np.ndarray, nfes, seconds) -> dict:
    n = int(bpd.size)
    return {
        "num_images": n,
        "bpd_mean": float(bpd.mean()),
        "bpd_standard_error": float(bpd.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
        "bpd_std": float(bpd.std(ddof=1)) if n > 1 else None,
        "nfe_per_batch": nfes,
        "nfe_mean": float(np.mean(nfes)),
        "seconds_per_batch": seconds,
        "wall_time_s": float(np.sum(seconds)),
    }
