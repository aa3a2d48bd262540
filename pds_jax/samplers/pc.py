"""Predictor–corrector (PC) sampling with optional PDS preconditioning.

Faithful to score_sde's JAX `sampling.py` (Song et al., 2021) and to the official
PDS code (Ma et al., ECCV 2022), see DESIGN.md §2–§3:

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

from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp

from pds_jax.precond import Preconditioner
from pds_jax.samplers.common import as_partial, check_shape
from pds_jax.sde import SDE, VESDE, VPSDE, subVPSDE, batch_mul

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
    """mean_b ‖v_b‖ over the whole (possibly sharded) batch."""
    return jnp.mean(jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1))


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


def speed_up_schedule(sde: SDE, speed_up: float, eps: Optional[float] = None) -> Tuple[SDE, float]:
    """The official PDS `--speed_up k`: N → int(N / k) steps and eps → eps · k."""
    speed_up = float(speed_up)
    if not speed_up > 0:
        raise ValueError(f"speed_up must be > 0, got {speed_up}")
    n = int(sde.N / speed_up)
    if n < 1:
        raise ValueError(f"speed_up={speed_up} leaves no steps of the N={sde.N} schedule")
    base_eps = sde.default_eps if eps is None else float(eps)
    return sde.with_steps(n), base_eps * speed_up


def get_pc_sampler(sde: SDE, shape, predictor: str = "reverse_diffusion", corrector: str = "langevin",
                   snr: float = 0.16, n_steps: int = 1, probability_flow: bool = False,
                   denoise: bool = True, eps: Optional[float] = None,
                   precond: Optional[Preconditioner] = None, speed_up: float = 1.0,
                   inverse_scaler: Optional[Callable[[Array], Array]] = None,
                   batch_sharding: Optional[jax.sharding.Sharding] = None,
                   check_finite: bool = False):
    """Build a jitted PC sampler `sampler(rng, score_fn) -> (samples, nfe)`.

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
      speed_up: k of the official PDS CLI: N → int(N / k), eps → eps · k.
      inverse_scaler: applied to the output (e.g. [-1, 1] → [0, 1]).
      batch_sharding: shard the batch axis (e.g. `pds_jax.sharding.batch_sharding()`);
        the same key gives the same samples on any number of devices.
      check_finite: raise `FloatingPointError` naming the first step that produced
        NaN/Inf (checked after the run; costs one reduction per step).

    Returns:
      `sampler(rng, score_fn)`: `score_fn(x, t)` maps NHWC x and t (batch,) to the
      score; it returns (samples NHWC, nfe: int). `sampler.num_steps`, `.eps`, `.nfe`
      and `.sde` describe the schedule actually run.
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; choose one of {sorted(PREDICTORS)}")
    if corrector not in CORRECTORS:
        raise ValueError(f"unknown corrector {corrector!r}; choose one of {sorted(CORRECTORS)}")
    shape = check_shape(shape)
    if int(n_steps) < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if predictor == "ancestral_sampling":
        if probability_flow:
            raise ValueError("ancestral_sampling has no probability-flow variant; use reverse_diffusion")
        if not isinstance(sde, (VESDE, VPSDE)):
            raise ValueError(f"ancestral_sampling supports VESDE and VPSDE only, not {type(sde).__name__}")
    if precond is None:
        precond = Preconditioner.identity(shape[1:])
    if tuple(precond.shape) != shape[1:]:
        raise ValueError(f"preconditioner is for images of shape {precond.shape}, sampler for {shape[1:]}")

    run_sde, final_eps = speed_up_schedule(sde, speed_up, eps)
    num_steps = run_sde.N
    predictor_fn, corrector_fn = PREDICTORS[predictor], CORRECTORS[corrector]
    evals_per_step = (predictor != "none") + (corrector != "none") * int(n_steps)
    nfe = num_steps * evals_per_step

    def constrain(x):
        return x if batch_sharding is None else jax.lax.with_sharding_constraint(x, batch_sharding)

    def sample(rng, score_fn, precond):
        rng, step_rng = jax.random.split(rng)
        x = constrain(precond.M(run_sde.prior_sampling(step_rng, shape)))
        timesteps = jnp.linspace(run_sde.T, final_eps, num_steps)

        def body(i, val):
            rng, x, x_mean, first_bad = val
            vec_t = jnp.ones((shape[0],), x.dtype) * timesteps[i]
            rng, step_rng = jax.random.split(rng)
            x, x_mean = corrector_fn(step_rng, x, vec_t, run_sde, score_fn, precond, snr, n_steps)
            rng, step_rng = jax.random.split(rng)
            x, x_mean = predictor_fn(step_rng, x, vec_t, run_sde, score_fn, precond, probability_flow)
            x, x_mean = constrain(x), constrain(x_mean)
            if check_finite:
                bad = ~(jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(x_mean)))
                first_bad = jnp.where((first_bad < 0) & bad, i, first_bad)
            return rng, x, x_mean, first_bad

        init = (rng, x, x, jnp.asarray(-1, jnp.int32))
        _, x, x_mean, first_bad = jax.lax.fori_loop(0, num_steps, body, init)
        out = x_mean if denoise else x
        if inverse_scaler is not None:
            out = inverse_scaler(out)
        return out, first_bad

    jitted = jax.jit(sample)

    def sampler(rng, score_fn: ScoreFn):
        samples, first_bad = jitted(rng, as_partial(score_fn), precond)
        if check_finite:
            bad = int(first_bad)
            if bad >= 0:
                t_bad = run_sde.T + bad * (final_eps - run_sde.T) / max(num_steps - 1, 1)
                raise FloatingPointError(
                    f"PC sampler produced NaN/Inf first at step {bad} of {num_steps} (t = {t_bad:.4g}); "
                    "check the score function, the snr, and the preconditioner filters")
        return samples, nfe

    sampler.num_steps = num_steps
    sampler.eps = final_eps
    sampler.nfe = nfe
    sampler.sde = run_sde
    sampler.lower = lambda rng, score_fn: jitted.lower(rng, as_partial(score_fn), precond)
    return sampler
