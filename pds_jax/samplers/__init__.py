"""Samplers: predictor–corrector (with PDS), probability-flow ODE and DEIS.

Every builder returns `sampler(rng, score_fn) -> (samples, nfe)` with
`score_fn(x, t)`: NHWC x, t of shape (batch,). `get_sampler` picks one from a
config's `sampling` section (`method` = 'pc' | 'ode' | 'deis').
"""

from __future__ import annotations

import dataclasses

from typing import Callable, Optional

from pds_jax import pds
from pds_jax.pds import PDSSetup
from pds_jax.precond import Preconditioner
from pds_jax.samplers.deis import get_deis_sampler
from pds_jax.samplers.ode import get_ode_sampler
from pds_jax.samplers.pc import get_pc_sampler, pc_sampler
from pds_jax.samplers.record import Sampler

METHODS = ("pc", "ode", "deis")


def get_sampler(config, sde, shape, precond=None, inverse_scaler: Optional[Callable] = None,
                batch_sharding=None, *, setup: Optional[PDSSetup] = None,
                check_finite: bool = False) -> Sampler:
    """Build the `Sampler` that `config.sampling` describes.

    pc:   score_sde's predictor/corrector/snr/n_steps_each/noise_removal/probability_flow,
          with the schedule and preconditioner of `setup` (a `pds_jax.pds.PDSSetup`, e.g.
          `pds.from_config(config, sde)`); without `setup`, the schedule of
          `sampling.pds.speed_up` with `precond` (None: vanilla).
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
        if setup is None:
            setup = pds.from_arguments(sde, shape[1:], speed_up=s.pds.speed_up,
                                       precond=precond if precond is not None else Preconditioner.identity(shape[1:]))
        return pc_sampler(setup, shape, predictor=s.predictor.lower(), corrector=s.corrector.lower(), snr=s.snr,
                          n_steps=s.n_steps_each, probability_flow=s.probability_flow, denoise=s.noise_removal,
                          inverse_scaler=inverse_scaler, batch_sharding=batch_sharding, check_finite=check_finite)
    if method == "ode":
        o = s.ode
        solver = {"rk45": "adaptive"}.get(o.solver.lower(), o.solver.lower())
        sampler = get_ode_sampler(sde, shape, method=solver, num_steps=o.num_steps, grid=o.grid,
                                  rho=o.rho, rtol=o.rtol, atol=o.atol, denoise=o.denoise, precond=precond,
                                  check_finite=check_finite)
    elif method == "deis":
        d = s.deis
        sampler = get_deis_sampler(sde, shape, d.num_steps, method=d.method.lower(), order=d.order,
                                   grid=d.grid, rho=d.rho, precond=precond, check_finite=check_finite)
    else:
        raise ValueError(f"config.sampling.method={s.method!r} is not one of {METHODS}")
    # x_T placed over the batch sharding: the deterministic solvers then run data-parallel
    return dataclasses.replace(sampler, inverse_scaler=inverse_scaler, batch_sharding=batch_sharding)


__all__ = ["get_pc_sampler", "get_sampler", "METHODS", "Sampler"]
