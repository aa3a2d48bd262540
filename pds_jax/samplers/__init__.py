"""Samplers: predictor–corrector (with PDS), probability-flow ODE and DEIS.

Every builder returns `sampler(rng, score_fn) -> (samples, nfe)` with
`score_fn(x, t)`: NHWC x, t of shape (batch,). `get_sampler` picks one from a
config's `sampling` section (`method` = 'pc' | 'ode' | 'deis').
"""

from __future__ import annotations

from typing import Callable, Optional

from pds_jax.samplers.pc import get_pc_sampler

METHODS = ("pc", "ode", "deis")


def get_sampler(config, sde, shape, precond=None, inverse_scaler: Optional[Callable] = None,
                batch_sharding=None):
    """Build the sampler that `config.sampling` describes.

    pc:   score_sde's predictor/corrector/snr/n_steps_each/noise_removal/probability_flow,
          with PDS (`precond`) and `sampling.pds.speed_up`.
    ode:  `sampling.ode` (solver, num_steps, grid, rho, rtol, atol, denoise).
    deis: `sampling.deis` (method, order, num_steps, grid, rho).

    The preconditioner only applies to the stochastic PC sampler: the deterministic
    samplers integrate the probability-flow ODE, which has no noise to balance a
    preconditioned drift, so they refuse a non-identity `precond`
    (`pds_jax.samplers.common.check_no_preconditioner`).
    """
    s = config.sampling
    method = s.method.lower()
    if method == "pc":
        sampler = get_pc_sampler(
            sde, shape, predictor=s.predictor.lower(), corrector=s.corrector.lower(), snr=s.snr,
            n_steps=s.n_steps_each, probability_flow=s.probability_flow, denoise=s.noise_removal,
            precond=precond, speed_up=s.pds.speed_up, batch_sharding=batch_sharding)
    elif method == "ode":
        from pds_jax.samplers.ode import get_ode_sampler

        o = s.ode
        solver = {"rk45": "adaptive"}.get(o.solver.lower(), o.solver.lower())
        sampler = get_ode_sampler(sde, shape, method=solver, num_steps=o.num_steps, grid=o.grid,
                                  rho=o.rho, rtol=o.rtol, atol=o.atol, denoise=o.denoise, precond=precond)
    elif method == "deis":
        from pds_jax.samplers.deis import get_deis_sampler

        d = s.deis
        sampler = get_deis_sampler(sde, shape, d.num_steps, method=d.method.lower(), order=d.order,
                                   grid=d.grid, rho=d.rho, precond=precond)
    else:
        raise ValueError(f"config.sampling.method={s.method!r} is not one of {METHODS}")
    if inverse_scaler is None:
        return sampler
    return _with_output_map(sampler, inverse_scaler)


def _with_output_map(sampler, fn):
    def wrapped(rng, score_fn):
        x, nfe = sampler(rng, score_fn)
        return fn(x), nfe

    wrapped.__dict__.update(sampler.__dict__)
    return wrapped


__all__ = ["get_pc_sampler", "get_sampler", "METHODS"]
