"""Predictor–corrector (PC) sampling with optional PDS preconditioning.

Faithful to score_sde's JAX `sampling.py` (Song et al., 2021) and to the official
PDS code (Ma et al., ECCV 2022), see docs/design.md §2–§3:

* the loop runs N steps over t = linspace(1, eps, N); each step runs the corrector,
  then the predictor, at t; the random key is split exactly as score_sde does;
* PDS multiplies every score drift by P = M Mᵀ (+ ω S) and every injected noise by M,
  the prior sample included; the Langevin step size uses the norms of the
  preconditioned gradient and noise, averaged over the WHOLE batch;
* with `precond=None` (or M = I) every step is exactly the vanilla sampler.

Predictors and correctors are plain functions with one signature each, kept in
registries so a config string selects them. The official code preconditions only
`reverse_diffusion` and `langevin` (its defaults); here every predictor and corrector
applies P to its drift and M to its noise, which is the same rule.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp

from pds_jax import pds
from pds_jax.pds import PDSSetup
from pds_jax.precond import Preconditioner
from pds_jax.samplers.common import check_shape
from pds_jax.samplers.record import Chunks, Sampler
from pds_jax.sde import SDE, batch_mul

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]

# --------------------------------------------------------------------------- #
# Predictors: (rng, x, t, sde, score_fn, precond, probability_flow) -> (x, x_mean)
# --------------------------------------------------------------------------- #


def reverse_diffusion_predictor(rng, x, t, sde: SDE, score_fn: ScoreFn, precond: Preconditioner,
                                probability_flow: bool = False):
    """x_mean = x − P rev_f, x = x_mean + G M z, with (rev_f, G) the reverse discretisation."""
    rev_f, G = sde.reverse(score_fn, probability_flow).discretize(x, t)
    x_mean = x - precond.precondition_drift(rev_f)
    noise = precond.M(jax.random.normal(rng, x.shape, x.dtype))
    return x_mean + batch_mul(G, noise), x_mean


def euler_maruyama_predictor(rng, x, t, sde: SDE, score_fn: ScoreFn, precond: Preconditioner,
                             probability_flow: bool = False):
    """x_mean = x + P drift · dt, x = x_mean + g √|dt| M z, dt = −1/N."""
    dt = -1.0 / sde.N
    drift, diffusion = sde.reverse(score_fn, probability_flow).sde(x, t)
    x_mean = x + precond.precondition_drift(drift) * dt
    noise = precond.M(jax.random.normal(rng, x.shape, x.dtype))
    return x_mean + batch_mul(diffusion * jnp.sqrt(-dt), noise), x_mean


def ancestral_sampling_predictor(rng, x, t, sde: SDE, score_fn: ScoreFn, precond: Preconditioner,
                                 probability_flow: bool = False):
    """Ancestral sampling (DDPM for VP, the SMLD posterior for VE)."""
    score = precond.precondition_drift(score_fn(x, t))
    noise = precond.M(jax.random.normal(rng, x.shape, x.dtype))
    return sde.ancestral_step(x, t, score, noise)


def none_predictor(rng, x, t, sde, score_fn, precond, probability_flow=False):
    return x, x


PREDICTORS = {
    "reverse_diffusion": reverse_diffusion_predictor,
    "euler_maruyama": euler_maruyama_predictor,
    "ancestral_sampling": ancestral_sampling_predictor,
    "none": none_predictor,
}

# --------------------------------------------------------------------------- #
# Correctors: (rng, x, t, sde, score_fn, precond, snr, n_steps) -> (x, x_mean)
# --------------------------------------------------------------------------- #


def _langevin_alpha(sde: SDE, t: Array) -> Array:
    # score_sde scales VP/sub-VP Langevin steps by the DDPM alpha_i; VE uses 1.
    return sde.langevin_alpha(t)


def _batch_mean_norm(v: Array) -> Array:
    """mean_b ‖v_b‖ over the whole (possibly sharded) batch.

    Under a mesh (a batch-sharded run) the B norms are first gathered onto every device
    (exact) and summed there: the same B numbers in the same order whatever the device or
    process layout, so 1 process × 8 devices and 2 × 4 give the same bits (an all-reduce
    of per-device partial sums would depend on the layout and the collective's order).
    """
    norms = jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1)
    if not jax.sharding.get_abstract_mesh().empty:
        norms = jax.lax.with_sharding_constraint(norms, jax.sharding.PartitionSpec())
    return jnp.mean(norms)


def langevin_corrector(rng, x, t, sde: SDE, score_fn: ScoreFn, precond: Preconditioner,
                       snr: float, n_steps: int):
    """n_steps of (preconditioned) Langevin MCMC with the snr-matched step size

    step = 2 α (snr · mean‖M z‖ / mean‖P ∇log p‖)²,  x ← x + step P ∇log p + √(2 step) M z.
    """
    alpha = _langevin_alpha(sde, t)

    def step(_, val):
        rng, x, _x_mean = val
        grad = precond.precondition_drift(score_fn(x, t))
        rng, step_rng = jax.random.split(rng)
        noise = precond.M(jax.random.normal(step_rng, x.shape, x.dtype))
        step_size = (snr * _batch_mean_norm(noise) / _batch_mean_norm(grad)) ** 2 * 2 * alpha
        x_mean = x + batch_mul(step_size, grad)
        return rng, x_mean + batch_mul(jnp.sqrt(step_size * 2), noise), x_mean

    _, x, x_mean = jax.lax.fori_loop(0, n_steps, step, (rng, x, x))
    return x, x_mean


def annealed_langevin_corrector(rng, x, t, sde: SDE, score_fn: ScoreFn, precond: Preconditioner,
                                snr: float, n_steps: int):
    """NCSN's annealed Langevin dynamics: step = 2 α (snr · s(t))²."""
    alpha = _langevin_alpha(sde, t)
    std = sde.marginal_coefficients(t)[1]
    step_size = (snr * std) ** 2 * 2 * alpha

    def step(_, val):
        rng, x, _x_mean = val
        grad = precond.precondition_drift(score_fn(x, t))
        rng, step_rng = jax.random.split(rng)
        noise = precond.M(jax.random.normal(step_rng, x.shape, x.dtype))
        x_mean = x + batch_mul(step_size, grad)
        return rng, x_mean + batch_mul(jnp.sqrt(step_size * 2), noise), x_mean

    _, x, x_mean = jax.lax.fori_loop(0, n_steps, step, (rng, x, x))
    return x, x_mean


def none_corrector(rng, x, t, sde, score_fn, precond, snr, n_steps):
    return x, x


CORRECTORS = {
    "langevin": langevin_corrector,
    "ald": annealed_langevin_corrector,
    "none": none_corrector,
}


# --------------------------------------------------------------------------- #
# The sampler.
# --------------------------------------------------------------------------- #


SETTINGS = ("sde", "shape", "eps", "predictor", "corrector", "snr", "n_steps", "probability_flow", "denoise",
            "batch_sharding", "check_finite")


def _pc_loop(score_fn: ScoreFn, precond: Preconditioner, *, sde: SDE, shape: Tuple[int, ...], eps: float,
             predictor: str, corrector: str, snr: float, n_steps: int, probability_flow: bool,
             batch_sharding=None, check_finite: bool = False, **_):
    """(start(rng) -> carry, body(i, carry) -> carry, run(f)): the PC loop's pieces, shared by
    the one-program solver and the chunked one (so both trace the same operations)."""
    predictor_fn, corrector_fn = PREDICTORS[predictor], CORRECTORS[corrector]
    timesteps = jnp.linspace(sde.T, eps, sde.N)

    def constrain(x):
        return x if batch_sharding is None else jax.lax.with_sharding_constraint(x, batch_sharding)

    def start(rng):
        rng, step_rng = jax.random.split(rng)
        x = constrain(precond.M(sde.prior_sampling(step_rng, shape)))
        return rng, x, x, jnp.asarray(-1, jnp.int32)

    def body(i, val):
        rng, x, x_mean, first_bad = val
        vec_t = jnp.ones((shape[0],), x.dtype) * timesteps[i]
        rng, step_rng = jax.random.split(rng)
        x, x_mean = corrector_fn(step_rng, x, vec_t, sde, score_fn, precond, snr, n_steps)
        rng, step_rng = jax.random.split(rng)
        x, x_mean = predictor_fn(step_rng, x, vec_t, sde, score_fn, precond, probability_flow)
        x, x_mean = constrain(x), constrain(x_mean)
        if check_finite:
            bad = ~(jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(x_mean)))
            first_bad = jnp.where((first_bad < 0) & bad, i, first_bad)
        return rng, x, x_mean, first_bad

    def run(f):
        if batch_sharding is None:
            return f()
        with jax.sharding.use_abstract_mesh(batch_sharding.mesh.abstract_mesh):  # for `_batch_mean_norm`
            return f()

    return start, body, run


def _pc_result(carry, *, denoise: bool, check_finite: bool = False, **_):
    _, x, x_mean, first_bad = carry
    return (x_mean if denoise else x), ({"first_bad": first_bad} if check_finite else {})


@functools.partial(jax.jit, static_argnames=SETTINGS)
def pc_solve(rng: Array, score_fn: ScoreFn, precond: Preconditioner, **settings):
    """The PC loop (score_sde's Algorithm of PC sampling, with PDS): N = sde.N steps.

    x_T = M · prior sample; for t in linspace(T, eps, N): corrector, then predictor, at t;
    returns (x_mean of the last predictor if `denoise` else x, stats) where stats holds
    'first_bad', the first step whose state is NaN/Inf (−1 if none), when `check_finite`.
    The keys are split exactly as score_sde does; the settings (`SETTINGS`) are static, so
    timesteps and step counts are compile-time constants of one `fori_loop` program.
    """
    start, body, run = _pc_loop(score_fn, precond, **settings)
    init = start(rng)
    return _pc_result(run(lambda: jax.lax.fori_loop(0, settings["sde"].N, body, init)), **settings)


@functools.partial(jax.jit, static_argnames=SETTINGS)
def pc_start(rng: Array, score_fn: ScoreFn, precond: Preconditioner, **settings):
    """The chunked PC loop, part 1: the carry (key, x_T, x_T, first_bad) before step 0."""
    start, _, _ = _pc_loop(score_fn, precond, **settings)
    return start(rng)


@functools.partial(jax.jit, static_argnames=SETTINGS)
def pc_steps(carry, lo: Array, hi: Array, score_fn: ScoreFn, precond: Preconditioner, **settings):
    """The chunked PC loop, part 2: steps lo..hi-1 of `pc_solve`'s loop (one program for every
    chunk: the bounds are traced), so a caller can report progress between chunks."""
    _, body, run = _pc_loop(score_fn, precond, **settings)
    return run(lambda: jax.lax.fori_loop(lo, hi, body, carry))


def check_settings(sde: SDE, predictor: str, corrector: str, n_steps: int, probability_flow: bool,
                   snr: float = 0.16) -> None:
    """Raise ValueError naming the setting and the fix for PC settings that cannot run.

    snr enters the Langevin step as (snr · ‖z‖ / ‖grad‖)² (score_sde): snr <= 0 gives a zero
    or sign-blind step and NaN/Inf makes every sample NaN, so both are refused here.
    """
    try:
        snr_ok = math.isfinite(float(snr)) and float(snr) > 0
    except (TypeError, ValueError):
        snr_ok = False
    if not snr_ok:
        raise ValueError(f"snr (config.sampling.snr) must be a finite number > 0, got {snr!r}; "
                         "score_sde uses 0.16 (VE) / 0.01 (VP)")
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; choose one of {sorted(PREDICTORS)}")
    if corrector not in CORRECTORS:
        raise ValueError(f"unknown corrector {corrector!r}; choose one of {sorted(CORRECTORS)}")
    if int(n_steps) < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if predictor == "ancestral_sampling":
        if probability_flow:
            raise ValueError("ancestral_sampling has no probability-flow variant; use reverse_diffusion")
        if not sde.supports_ancestral_sampling:
            raise ValueError(f"ancestral_sampling supports VESDE and VPSDE only, not {type(sde).__name__}")


def pc_sampler(setup: PDSSetup, shape, predictor: str = "reverse_diffusion", corrector: str = "langevin",
               snr: float = 0.16, n_steps: int = 1, probability_flow: bool = False, denoise: bool = True,
               inverse_scaler: Optional[Callable[[Array], Array]] = None,
               batch_sharding: Optional[jax.sharding.Sharding] = None, check_finite: bool = False) -> Sampler:
    """The PC `Sampler` of a resolved `pds_jax.pds.PDSSetup` (schedule, α, preconditioner)."""
    check_settings(setup.sde, predictor, corrector, n_steps, probability_flow, snr)
    shape = check_shape(shape)
    precond = setup.precond
    if tuple(precond.shape) != shape[1:]:
        raise ValueError(f"preconditioner is for images of shape {precond.shape}, sampler for {shape[1:]}")
    evals_per_step = (predictor != "none") + (corrector != "none") * int(n_steps)
    solve = functools.partial(
        pc_solve, sde=setup.sde, shape=shape, eps=float(setup.eps), predictor=predictor,
        corrector=corrector, snr=snr, n_steps=int(n_steps), probability_flow=bool(probability_flow),
        denoise=bool(denoise), batch_sharding=batch_sharding, check_finite=bool(check_finite))
    options = {"predictor": predictor, "corrector": corrector, "snr": snr, "n_steps_each": int(n_steps),
               "probability_flow": bool(probability_flow), "denoise": bool(denoise)}
    options.update(setup.describe())
    settings = solve.keywords
    chunks = Chunks(functools.partial(pc_start, **settings), functools.partial(pc_steps, **settings),
                    functools.partial(_pc_result, **settings))
    return Sampler("pc", shape, setup.num_steps, setup.num_steps * evals_per_step, float(setup.eps), solve,
                   operands=(precond,), inverse_scaler=inverse_scaler, check_finite=bool(check_finite), options=options,
                   chunks=chunks)


def get_pc_sampler(sde: SDE, shape, predictor: str = "reverse_diffusion", corrector: str = "langevin",
                   snr: float = 0.16, n_steps: int = 1, probability_flow: bool = False,
                   denoise: bool = True, eps: Optional[float] = None,
                   precond: Optional[Preconditioner] = None, speed_up: float = 1.0,
                   inverse_scaler: Optional[Callable[[Array], Array]] = None,
                   batch_sharding: Optional[jax.sharding.Sharding] = None,
                   check_finite: bool = False, num_steps: Optional[int] = None) -> Sampler:
    """Build a jitted PC sampler `sampler(rng, score_fn) -> (samples, nfe)` (a `Sampler`).

    Args:
      sde: the forward SDE (its N is the full-length schedule).
      shape: (batch, H, W, C) of the samples.
      predictor, corrector: names in `PREDICTORS` / `CORRECTORS`.
      snr: target signal-to-noise ratio of the Langevin corrector.
      n_steps: corrector steps per predictor step.
      probability_flow: the predictor follows the probability-flow ODE (no noise).
      denoise: return the noise-free mean of the last predictor step (score_sde's
        `noise_removal`).
      eps: the final time (default `sde.default_eps`); multiplied by `speed_up`.
      precond: the PDS preconditioner; None runs the vanilla sampler.
      speed_up: k of the official PDS CLI: N → int(N / k), eps → eps · k
        (`pds_jax.pds.pc_schedule`); or give `num_steps` = N directly.
      inverse_scaler: applied to the output inside the program (e.g. [-1, 1] → [0, 1]).
      batch_sharding: shard the batch axis (e.g. `pds_jax.sharding.batch_sharding()`);
        the same key gives the same samples on any number of devices.
      check_finite: raise `FloatingPointError` naming the first step that produced
        NaN/Inf (checked after the run; costs one reduction per step).

    Returns:
      a `pds_jax.samplers.record.Sampler`: `sampler(rng, score_fn)` with `score_fn(x, t)`
      mapping NHWC x and t (batch,) to the score returns (samples NHWC, nfe: int);
      `num_steps`, `eps`, `nfe` and `describe()` give the schedule actually run.
    """
    shape = check_shape(shape)
    if precond is None:
        precond = Preconditioner.identity(shape[1:])
    setup = pds.from_arguments(sde, shape[1:], speed_up=None if num_steps is not None else speed_up,
                               eps=eps, num_steps=num_steps, precond=precond)
    return pc_sampler(setup, shape, predictor, corrector, snr, n_steps, probability_flow, denoise,
                      inverse_scaler, batch_sharding, check_finite)
