"""Small helpers shared by the deterministic samplers (ODE, DEIS)."""

from __future__ import annotations

import functools
from typing import Callable, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from pds_jax.sde import SDE

Array = jax.Array


def as_partial(score_fn) -> Partial:
    """Wrap `score_fn(x, t)` as a `jax.tree_util.Partial` so it can be a `jit` argument.

    A Partial is a pytree: its function is static (hashed), its bound arguments (e.g.
    model parameters) are traced leaves, so new parameters do not trigger a recompile.
    """
    if isinstance(score_fn, Partial):
        return score_fn
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    return Partial(score_fn)


def check_no_preconditioner(precond, sampler: str) -> None:
    """Refuse a non-identity PDS preconditioner for a deterministic sampler.

    PDS (Ma et al., ECCV 2022) preconditions the *Langevin* dynamics
    dx = (ε²/2) P ∇log p dt + ε M dw, whose stationary law is p for any P = M Mᵀ; the
    drift and the noise change together. The probability-flow ODE has no noise to
    compensate: replacing its score term ½ g² ∇log p_t by ½ g² P ∇log p_t changes the
    marginals p_t it transports, so there is no effect-preserving counterpart.
    """
    if precond is None or getattr(precond, "is_identity", False):
        return
    raise ValueError(
        f"{sampler}: a non-identity PDS preconditioner was given. PDS preconditions the stochastic "
        "Langevin dynamics (drift P∇log p together with noise Mz keeps the target law); the "
        "deterministic probability-flow ODE has no noise term, and multiplying its score by P "
        "changes the distributions it transports. Pass precond=None (or an identity "
        "Preconditioner), or use the PC sampler for PDS.")


def check_shape(shape: Sequence[int]) -> Tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"shape must be the NHWC batch shape (batch, H, W, C), got {shape}")
    return shape


@functools.partial(jax.jit, static_argnums=(0, 2))
def prior_sample(sde: SDE, rng: Array, shape: Tuple[int, ...]) -> Array:
    """x_T from the prior with score_sde's key discipline (`rng, step_rng = split(rng)`).

    Jitted once per (sde, shape) for the whole process and kept out of the samplers'
    programs (`Sampler.prior`): compiling the threefry normal sampler costs 1-2 s on
    CPU, and this way every sampler built for the same SDE and shape shares it.
    """
    _, step_rng = jax.random.split(rng)
    return sde.prior_sampling(step_rng, shape)


def prior_for(sde: SDE, shape: Tuple[int, ...]) -> Callable[[Array], Array]:
    """`rng -> prior_sample(sde, rng, shape)`: the `Sampler.prior` of the deterministic samplers."""
    return functools.partial(prior_sample, sde, shape=tuple(shape))


def batch_time(t: Array, x: Array) -> Array:
    """The scalar time `t` broadcast to shape (batch,) for `score_fn(x, t)`."""
    return jnp.full((x.shape[0],), t, dtype=x.dtype)
