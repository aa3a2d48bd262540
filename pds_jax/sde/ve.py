"""The variance-exploding SDE (SMLD / NCSN; score_sde's `VESDE`)."""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pds_jax.sde.base import SDE, Array, ScoreFn, batch_mul, standard_normal_logp, static_field


@struct.dataclass
class VESDE(SDE):
    """Variance-exploding SDE: σ(t) = σ_min (σ_max / σ_min)^t, f = 0.

    dx = σ(t) √(2 log(σ_max/σ_min)) dw. Discrete grid (SMLD / NCSN):
    σ_i = exp(linspace(log σ_min, log σ_max, N)). In DEIS variables α ≡ 1 and ρ = σ,
    so t(ρ) = log(ρ/σ_min) / log(σ_max/σ_min).
    """

    sigma_min: float = static_field(0.01)
    sigma_max: float = static_field(50.0)
    N: int = static_field(1000)

    def __post_init__(self):
        self._check_steps()
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"VESDE needs 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}")

    @property
    def default_eps(self) -> float:
        return 1e-5

    def sigma(self, t: Array) -> Array:
        """σ(t) = σ_min (σ_max/σ_min)^t."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def t_of_sigma(self, sigma: Array) -> Array:
        """Inverse of `sigma`: t = log(σ/σ_min) / log(σ_max/σ_min)."""
        return jnp.log(sigma / self.sigma_min) / np.log(self.sigma_max / self.sigma_min)

    @property
    def discrete_sigmas(self) -> Array:
        return jnp.exp(jnp.linspace(np.log(self.sigma_min), np.log(self.sigma_max), self.N))

    def sde(self, x, t):
        drift = jnp.zeros_like(x)
        diffusion = self.sigma(t) * np.sqrt(2 * (np.log(self.sigma_max) - np.log(self.sigma_min)))
        return drift, diffusion

    def marginal_coefficients(self, t):
        return jnp.ones_like(t), self.sigma(t)

    def prior_sampling(self, rng, shape):
        return jax.random.normal(rng, shape) * self.sigma_max

    def prior_logp(self, z):
        return standard_normal_logp(z, self.sigma_max)

    def continuous_label(self, t):
        # score_sde feeds continuous-time VE models the noise level itself.
        return self.sigma(t)

    def discrete_label(self, t):
        # NCSN's noise-level index, counted from the largest σ (score_sde's VE label).
        return jnp.round((self.T - t) * (self.N - 1)).astype(jnp.int32)

    def score_from_output(self, out, t, labels, continuous):
        """NCSN / NCSN++ VE networks output the score itself."""
        return out

    def langevin_alpha(self, t):
        return jnp.ones_like(t)

    def _smld_sigmas(self, t: Array) -> Tuple[Array, Array]:
        """(σ_i, σ_{i−1}) of the discrete SMLD grid at t, with σ_{−1} = 0."""
        i = self.timestep_index(t)
        sigmas = self.discrete_sigmas
        sigma = sigmas[i]
        adjacent = jnp.where(i == 0, jnp.zeros_like(sigma), sigmas[jnp.maximum(i - 1, 0)])
        return sigma, adjacent

    def discretize(self, x, t):
        """SMLD discretisation: f = 0, G = √(σ_i² − σ_{i−1}²), σ_{−1} = 0."""
        sigma, adjacent = self._smld_sigmas(t)
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - adjacent**2)

    @property
    def supports_ancestral_sampling(self) -> bool:
        return True

    def ancestral_step(self, x, t, score, noise):
        """SMLD posterior: x_mean = x + (σ_i² − σ_{i−1}²) score, std² = σ_{i−1}² (σ_i² − σ_{i−1}²) / σ_i²."""
        sigma, adjacent = self._smld_sigmas(t)
        x_mean = x + batch_mul(sigma**2 - adjacent**2, score)
        std = jnp.sqrt(adjacent**2 * (sigma**2 - adjacent**2) / sigma**2)
        return x_mean + batch_mul(std, noise), x_mean

    # ------------------------------------------------- float64 schedule (host)
    def np_alpha(self, t):
        return np.ones_like(np.asarray(t, np.float64))

    def np_std(self, t):
        t = np.asarray(t, np.float64)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def np_t_of_rho(self, rho):
        rho = np.asarray(rho, np.float64)
        return np.log(rho / self.sigma_min) / np.log(self.sigma_max / self.sigma_min)

    def np_ode_tau(self, t):
        """σ(t): VE fixed-grid solvers step in σ, where the ODE is dx/dσ = −σ · score (EDM)."""
        return self.np_std(t)

    def pf_ode_tau_derivative(self, score_fn: ScoreFn, x, t, tau):
        """dx/dσ = −σ · score(x, t) (g² = dσ²/dt)."""
        return -tau * score_fn(x, t)
