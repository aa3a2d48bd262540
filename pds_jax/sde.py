"""Forward SDEs of score-based generative models (VE, VP, sub-VP).

The semantics follow score_sde (Song et al., 2021, `sde_lib.py`) exactly, so that
samplers written against them reproduce the original code:

* time runs over t ∈ [0, T] with T = 1;
* `sde(x, t)` returns the drift f(x, t) (shaped like x) and the diffusion g(t)
  (shape (batch,));
* `discretize(x, t)` returns the per-step (f_i, G_i) of the SMLD (VE) or DDPM (VP)
  discretisation with N steps, indexing the discrete grid with
  i = int(t (N − 1) / T) in float32, as the original does;
* `marginal_prob(x, t)` returns the mean and the standard deviation of p_t(x | x_0).

All classes are frozen dataclasses registered as pytrees with no array leaves, so
they are hashable, can be closed over or passed through `jax.jit`, and every method
is a pure function of its arguments. Discrete tables (σ_i, β_i, ᾱ_i) are built with
`jnp` at call time, so inside `jit` they are computed from an iota instead of being
baked into the program as length-N constants: program size does not grow with N.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]


def batch_mul(a: Array, x: Array) -> Array:
    """Multiply a per-example vector `a` (batch,) into `x` (batch, ...)."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) * x


def _static_pytree(cls):
    """Register a frozen dataclass as a pytree whose fields are all static."""
    names = tuple(f.name for f in dataclasses.fields(cls))

    def flatten(obj):
        return (), tuple(getattr(obj, n) for n in names)

    def unflatten(aux, _children):
        return cls(**dict(zip(names, aux)))

    jax.tree_util.register_pytree_node(cls, flatten, unflatten)
    return cls


class SDE(abc.ABC):
    """Interface shared by all forward SDEs (see the module docstring)."""

    N: int

    T: float = 1.0

    @property
    @abc.abstractmethod
    def default_eps(self) -> float:
        """Smallest time the reverse process is integrated to (score_sde's sampling_eps)."""

    @abc.abstractmethod
    def sde(self, x: Array, t: Array) -> Tuple[Array, Array]:
        """Drift f(x, t) (like x) and diffusion g(t) (batch,)."""

    @abc.abstractmethod
    def marginal_coefficients(self, t: Array) -> Tuple[Array, Array]:
        """(m(t), s(t)) with p_t(x | x_0) = N(m(t) x_0, s(t)² I)."""

    @abc.abstractmethod
    def prior_sampling(self, rng: Array, shape) -> Array:
        """A sample of the prior p_T."""

    @abc.abstractmethod
    def prior_logp(self, z: Array) -> Array:
        """Log-density of the prior, per example (batch,)."""

    @abc.abstractmethod
    def continuous_label(self, t: Array) -> Array:
        """The noise label a continuous-time score network receives at time t."""

    def marginal_prob(self, x: Array, t: Array) -> Tuple[Array, Array]:
        """Mean (like x) and std (batch,) of p_t(x | x_0 = x)."""
        mean_coeff, std = self.marginal_coefficients(t)
        return batch_mul(mean_coeff, x), std

    def timestep_index(self, t: Array) -> Array:
        """score_sde's discrete index i = int(t (N − 1) / T), int32."""
        return (t * (self.N - 1) / self.T).astype(jnp.int32)

    def langevin_alpha(self, t: Array) -> Array:
        """score_sde's scale of the Langevin corrector step: 1 (VE); the DDPM α_i for VP/sub-VP."""
        return jnp.ones_like(t)

    def discretize(self, x: Array, t: Array) -> Tuple[Array, Array]:
        """Euler–Maruyama discretisation x_{i+1} = x_i + f_i + G_i z (default)."""
        dt = 1.0 / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * jnp.sqrt(dt)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (or probability-flow ODE) driven by `score_fn`."""
        return ReverseSDE(self, score_fn, probability_flow)

    def with_steps(self, N: int) -> "SDE":
        """The same SDE discretised with `N` steps."""
        if int(N) < 1:
            raise ValueError(f"number of discretisation steps must be >= 1, got N={N}")
        return dataclasses.replace(self, N=int(N))

    def _check_steps(self):
        if not isinstance(self.N, (int, np.integer)) or self.N < 1:
            raise ValueError(f"{type(self).__name__}: N must be a positive integer, got {self.N!r}")


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
    """Reverse-time SDE of `forward` (score_sde's `SDE.reverse`).

    drift = f − g² · score (× ½ and zero diffusion for the probability flow ODE).
    """

    forward: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    @property
    def N(self) -> int:
        return self.forward.N

    @property
    def T(self) -> float:
        return self.forward.T

    def _score_weight(self) -> float:
        return 0.5 if self.probability_flow else 1.0

    def sde(self, x: Array, t: Array) -> Tuple[Array, Array]:
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        drift = drift - batch_mul(diffusion**2, score * self._score_weight())
        if self.probability_flow:
            diffusion = jnp.zeros_like(diffusion)
        return drift, diffusion

    def discretize(self, x: Array, t: Array) -> Tuple[Array, Array]:
        f, G = self.forward.discretize(x, t)
        rev_f = f - batch_mul(G**2, self.score_fn(x, t) * self._score_weight())
        rev_G = jnp.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


def _standard_normal_logp(z: Array, scale: float = 1.0) -> Array:
    dim = np.prod(z.shape[1:])
    sq = jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=-1)
    return -dim / 2.0 * jnp.log(2 * np.pi * scale**2) - sq / (2 * scale**2)


@_static_pytree
@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
    """Variance-exploding SDE: σ(t) = σ_min (σ_max / σ_min)^t, f = 0.

    dx = σ(t) √(2 log(σ_max/σ_min)) dw. Discrete grid (SMLD / NCSN):
    σ_i = exp(linspace(log σ_min, log σ_max, N)).
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000

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
        return _standard_normal_logp(z, self.sigma_max)

    def continuous_label(self, t):
        # score_sde feeds continuous-time VE models the noise level itself.
        return self.sigma(t)

    def discretize(self, x, t):
        """SMLD discretisation: f = 0, G = √(σ_i² − σ_{i−1}²), σ_{−1} = 0."""
        i = self.timestep_index(t)
        sigmas = self.discrete_sigmas
        sigma = sigmas[i]
        adjacent = jnp.where(i == 0, jnp.zeros_like(sigma), sigmas[jnp.maximum(i - 1, 0)])
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - adjacent**2)


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
        """log m(t) = −¼ t² (β_1 − β_0) − ½ t β_0."""
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

    def langevin_alpha(self, t):
        return self.alphas[self.timestep_index(t)]

    def prior_sampling(self, rng, shape):
        return jax.random.normal(rng, shape)

    def prior_logp(self, z):
        return _standard_normal_logp(z)

    def continuous_label(self, t):
        # score_sde's continuous VP/sub-VP models take 999·t (the DDPM index range).
        return t * 999.0


@_static_pytree
@dataclasses.dataclass(frozen=True)
class VPSDE(_BetaScheduleMixin, SDE):
    """Variance-preserving SDE: dx = −½ β(t) x dt + √β(t) dw (DDPM in the limit)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000

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


@_static_pytree
@dataclasses.dataclass(frozen=True)
class subVPSDE(_BetaScheduleMixin, SDE):
    """sub-VP SDE: dx = −½ β x dt + √(β (1 − e^{−2∫β})) dw.

    The discrete tables (`alphas`, used by the Langevin corrector) are the VP ones:
    score_sde's subVPSDE defines none, so its Langevin corrector fails on a sub-VP SDE.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000

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


def get_sde(config) -> SDE:
    """Build the SDE named by `config.training.sde` with score_sde's config fields."""
    name = config.training.sde.lower()
    N = config.model.num_scales
    if name == "vesde":
        return VESDE(sigma_min=config.model.sigma_min, sigma_max=config.model.sigma_max, N=N)
    if name == "vpsde":
        return VPSDE(beta_min=config.model.beta_min, beta_max=config.model.beta_max, N=N)
    if name == "subvpsde":
        return subVPSDE(beta_min=config.model.beta_min, beta_max=config.model.beta_max, N=N)
    raise ValueError(
        f"config.training.sde={config.training.sde!r} is not one of 'vesde', 'vpsde', 'subvpsde'")
