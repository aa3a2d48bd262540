"""The variance-preserving SDE (DDPM) and the sub-VP SDE (score_sde's `VPSDE`, `subVPSDE`).

Both have the linear β(t) = β_0 + t (β_1 − β_0) and the mean coefficient α(t) = e^{c(t)},
c(t) = −¼ t² (β_1 − β_0) − ½ t β_0. Their float64 DEIS schedules (ρ = s / α):

    VP      s = √(1 − e^{2c}),   ρ² = e^{−2c} − 1
    sub-VP  s = 1 − e^{2c},      ρ = s / α,   so α² + ρ α − 1 = 0, α = 2 / (ρ + √(ρ² + 4))

and B = −2c = ½ (β_1 − β_0) t² + β_0 t is inverted with the stable root
t = 2B / (β_0 + √(β_0² + 2 (β_1 − β_0) B)).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pds_jax.sde.base import SDE, Array, batch_mul, per_example, standard_normal_logp, static_field


class _BetaScheduleMixin:
    """Linear β(t) = β_0 + t (β_1 − β_0) and its DDPM discretisation."""

    beta_min: float
    beta_max: float
    N: int

    def _check_betas(self):
        self._check_steps()
        if not 0 < self.beta_min <= self.beta_max:
            raise ValueError(
                f"{type(self).__name__} needs 0 < beta_min <= beta_max, got "
                f"beta_min={self.beta_min}, beta_max={self.beta_max}")

    @property
    def default_eps(self) -> float:
        return 1e-3

    def beta(self, t: Array) -> Array:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: Array) -> Array:
        """log m(t) = −¼ t² (β_1 − β_0) − ½ t β_0 (jnp or float64 NumPy, like `t`)."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    @property
    def discrete_betas(self) -> Array:
        return jnp.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)

    @property
    def alphas(self) -> Array:
        return 1.0 - self.discrete_betas

    @property
    def alphas_cumprod(self) -> Array:
        return jnp.cumprod(self.alphas, axis=0)

    @property
    def sqrt_alphas_cumprod(self) -> Array:
        return jnp.sqrt(self.alphas_cumprod)

    @property
    def sqrt_1m_alphas_cumprod(self) -> Array:
        return jnp.sqrt(1.0 - self.alphas_cumprod)

    def prior_sampling(self, rng, shape):
        return jax.random.normal(rng, shape)

    def prior_logp(self, z):
        return standard_normal_logp(z)

    def continuous_label(self, t):
        # score_sde's continuous VP/sub-VP models take 999·t (the DDPM index range).
        return t * 999.0

    def langevin_alpha(self, t):
        # score_sde scales VP/sub-VP Langevin steps by the DDPM alpha_i.
        return self.alphas[self.timestep_index(t)]

    def np_alpha(self, t):
        return np.exp(self.log_mean_coeff(np.asarray(t, np.float64)))

    def _np_t_of_B(self, B):
        """t with −2 c(t) = B (the stable root of the quadratic)."""
        b0, db = self.beta_min, self.beta_max - self.beta_min
        return 2.0 * B / (b0 + np.sqrt(b0**2 + 2.0 * db * B))


@struct.dataclass
class VPSDE(_BetaScheduleMixin, SDE):
    """Variance-preserving SDE: dx = −½ β(t) x dt + √β(t) dw (DDPM in the limit)."""

    beta_min: float = static_field(0.1)
    beta_max: float = static_field(20.0)
    N: int = static_field(1000)

    def __post_init__(self):
        self._check_betas()

    def sde(self, x, t):
        beta_t = self.beta(t)
        return -0.5 * batch_mul(beta_t, x), jnp.sqrt(beta_t)

    def marginal_coefficients(self, t):
        lmc = self.log_mean_coeff(t)
        return jnp.exp(lmc), jnp.sqrt(1.0 - jnp.exp(2.0 * lmc))

    def discretize(self, x, t):
        """DDPM discretisation: f = (√α_i − 1) x, G = √β_i."""
        i = self.timestep_index(t)
        beta = self.discrete_betas[i]
        alpha = self.alphas[i]
        return batch_mul(jnp.sqrt(alpha), x) - x, jnp.sqrt(beta)

    def discrete_label(self, t):
        # The DDPM step index as a float (score_sde's discrete VP label).
        return t * (self.N - 1)

    def score_from_output(self, out, t, labels, continuous):
        """DDPM networks predict the noise ε = −s · score: score = −out / s."""
        if continuous:
            std = self.marginal_coefficients(t)[1]
        else:
            std = self.sqrt_1m_alphas_cumprod[labels.astype(jnp.int32)]
        return -out / per_example(std, out)

    @property
    def supports_ancestral_sampling(self) -> bool:
        return True

    def ancestral_step(self, x, t, score, noise):
        """DDPM: x_mean = (x + β_i score) / √(1 − β_i), x = x_mean + √β_i z."""
        beta = self.discrete_betas[self.timestep_index(t)]
        x_mean = batch_mul(1.0 / jnp.sqrt(1.0 - beta), x + batch_mul(beta, score))
        return x_mean + batch_mul(jnp.sqrt(beta), noise), x_mean

    def np_std(self, t):
        return np.sqrt(-np.expm1(2.0 * self.log_mean_coeff(np.asarray(t, np.float64))))

    def np_rho(self, t):
        # √(e^{−2c} − 1) directly: no cancellation of s / α at small t.
        return np.sqrt(np.expm1(-2.0 * self.log_mean_coeff(np.asarray(t, np.float64))))

    def np_t_of_rho(self, rho):
        return self._np_t_of_B(np.log1p(np.asarray(rho, np.float64) ** 2))


@struct.dataclass
class subVPSDE(_BetaScheduleMixin, SDE):
    """sub-VP SDE: dx = −½ β x dt + √(β (1 − e^{−2∫β})) dw.

    The discrete tables (`alphas`, used by the Langevin corrector) are the VP ones:
    score_sde's subVPSDE defines none, so its Langevin corrector fails on a sub-VP SDE.
    """

    beta_min: float = static_field(0.1)
    beta_max: float = static_field(20.0)
    N: int = static_field(1000)

    def __post_init__(self):
        self._check_betas()

    def sde(self, x, t):
        beta_t = self.beta(t)
        discount = 1.0 - jnp.exp(-2 * self.beta_min * t - (self.beta_max - self.beta_min) * t**2)
        return -0.5 * batch_mul(beta_t, x), jnp.sqrt(beta_t * discount)

    def marginal_coefficients(self, t):
        lmc = self.log_mean_coeff(t)
        # The sub-VP std is 1 − e^{2 log m}, not its square root (score_sde).
        return jnp.exp(lmc), 1.0 - jnp.exp(2.0 * lmc)

    def discrete_label(self, t):
        # score_sde has no discrete sub-VP models: the label is always the continuous one.
        return self.continuous_label(t)

    def score_from_output(self, out, t, labels, continuous):
        """score = −out / s(t) with the continuous s(t) (no discrete sub-VP tables exist)."""
        return -out / per_example(self.marginal_coefficients(t)[1], out)

    def np_std(self, t):
        return -np.expm1(2.0 * self.log_mean_coeff(np.asarray(t, np.float64)))

    def np_t_of_rho(self, rho):
        rho = np.asarray(rho, np.float64)
        return self._np_t_of_B(-2.0 * np.log(2.0 / (rho + np.sqrt(rho**2 + 4.0))))
