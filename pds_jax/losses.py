"""Denoising score matching for continuous-time SDEs (score_sde's `get_sde_loss_fn`).

For t ~ U(eps, T), z ~ N(0, I) and x_t = m(t) x_0 + s(t) z, the model score s_θ(x_t, t)
is regressed on the conditional score −z / s(t) (Song et al., 2021, Eq. 7):

    λ(t) = s(t)²  (default):        ‖s(t) s_θ + z‖²
    λ(t) = g(t)²  (likelihood weighting, Song et al. 2021b):  g(t)² ‖s_θ + z / s(t)‖²

The per-example squared error is averaged (`reduce_mean`) or half-summed over the
pixels, then averaged over the batch.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from pds_jax.sde import SDE, batch_mul

Array = jax.Array
# score(params, x, t, rng): the model's score in training mode (dropout drawn from rng).
TrainScore = Callable[[Any, Array, Array, Array], Array]


def get_sde_loss_fn(sde: SDE, score: TrainScore, reduce_mean: bool = True,
                    likelihood_weighting: bool = False, eps: float = 1e-5):
    """`loss_fn(rng, params, batch) -> scalar loss` for NHWC `batch` in the data space."""

    def reduce(v: Array) -> Array:
        v = v.reshape(v.shape[0], -1)
        return jnp.mean(v, axis=-1) if reduce_mean else 0.5 * jnp.sum(v, axis=-1)

    def loss_fn(rng: Array, params: Any, batch: Array) -> Array:
        t_rng, z_rng, dropout_rng = jax.random.split(rng, 3)
        t = jax.random.uniform(t_rng, (batch.shape[0],), minval=eps, maxval=sde.T)
        z = jax.random.normal(z_rng, batch.shape, batch.dtype)
        mean, std = sde.marginal_prob(batch, t)
        model_score = score(params, mean + batch_mul(std, z), t, dropout_rng)
        if likelihood_weighting:
            g2 = sde.sde(jnp.zeros_like(batch), t)[1] ** 2
            losses = reduce(jnp.square(model_score + batch_mul(1.0 / std, z))) * g2
        else:
            losses = reduce(jnp.square(batch_mul(std, model_score) + z))
        return jnp.mean(losses)

    return loss_fn
