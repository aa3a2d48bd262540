"""Samplers: predictor–corrector (with PDS), probability-flow ODE and DEIS."""

from pds_jax.samplers.pc import get_pc_sampler

__all__ = ["get_pc_sampler"]
