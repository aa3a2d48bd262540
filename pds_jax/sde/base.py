"""The SDE interface (score_sde semantics, see the package docstring) and the reverse SDE."""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]


def batch_mul(a: Array, x: Array) -> Array:
    """Multiply a per-example vector `a` (batch,) into `x` (batch, ...)."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) * x


def per_example(a: Array, x: Array) -> Array:
    """`a` (batch,) reshaped to broadcast against `x` (batch, ...)."""
    return a.reshape(a.shape[:1] + (1,) * (x.ndim - 1))


def static_field(default):
    """A dataclass field that is pytree metadata (static under `jit`), not a leaf.

    One idiom for dataclass pytrees across pds_jax: `flax.struct.dataclass`, which is
    `jax.tree_util.register_dataclass` with the leaf-or-static choice written next to each
    field (`pytree_node=False` = static) instead of in a hand-written flatten/unflatten.
    `train.TrainState` already uses it; it keeps frozen-dataclass semantics (hash, eq,
    `dataclasses.replace`) and unflattens through `__init__` (so `__post_init__` checks
    run on every rebuilt SDE; SDE parameters are never tracers, all fields are static).
    """
    return struct.field(pytree_node=False, default=default)


class SDE(abc.ABC):
    """Interface shared by all forward SDEs (see the package docstring).

    The float64 schedule (`np_*`, vectorised NumPy, for tables built once on the host)
    uses the DEIS variables (Zhang & Chen 2022, arXiv 2204.13902): with
    p_t(x | x_0) = N(α(t) x_0, s(t)² I), ρ(t) = s(t) / α(t) and y = x / α(t), the
    probability-flow ODE of any of these SDEs is dy/dρ = −s(t) · score(x, t).
    """

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

    @abc.abstractmethod
    def discrete_label(self, t: Array) -> Array:
        """The noise label a discrete-time (SMLD / DDPM) score network receives at time t."""

    @abc.abstractmethod
    def score_from_output(self, out: Array, t: Array, labels: Array, continuous: bool) -> Array:
        """The score from a score_sde network's output `out` at time t (batch,) and its labels."""

    @abc.abstractmethod
    def langevin_alpha(self, t: Array) -> Array:
        """score_sde's scale of the Langevin corrector step at time t (batch,)."""

    # ------------------------------------------------- float64 schedule (host)
    @abc.abstractmethod
    def np_alpha(self, t) -> np.ndarray:
        """Mean coefficient α(t) (= m(t) of `marginal_coefficients`), float64."""

    @abc.abstractmethod
    def np_std(self, t) -> np.ndarray:
        """Standard deviation s(t) of the transition kernel, float64."""

    def np_rho(self, t) -> np.ndarray:
        """ρ(t) = s(t) / α(t), float64."""
        t = np.asarray(t, np.float64)
        return self.np_std(t) / self.np_alpha(t)

    @abc.abstractmethod
    def np_t_of_rho(self, rho) -> np.ndarray:
        """The inverse of `np_rho` (closed form), float64."""

    def np_ode_tau(self, t) -> np.ndarray:
        """The variable τ(t) fixed-grid ODE solvers step in: t itself (VE overrides: σ)."""
        return np.asarray(t, np.float64)

    # ------------------------------------------------------- derived methods
    def marginal_prob(self, x: Array, t: Array) -> Tuple[Array, Array]:
        """Mean (like x) and std (batch,) of p_t(x | x_0 = x)."""
        mean_coeff, std = self.marginal_coefficients(t)
        return batch_mul(mean_coeff, x), std

    def probability_flow_drift(self, score_fn: ScoreFn, x: Array, t: Array) -> Array:
        """dx/dt = f(x, t) − ½ g(t)² score(x, t), t (batch,) (score_sde's probability flow)."""
        drift, diffusion = self.sde(x, t)
        return drift - batch_mul(0.5 * diffusion**2, score_fn(x, t))

    def pf_ode_tau_derivative(self, score_fn: ScoreFn, x: Array, t: Array, tau: Array) -> Array:
        """dx/dτ of the probability-flow ODE at t (batch,), τ = `np_ode_tau(t)` (scalar): dx/dt here."""
        return self.probability_flow_drift(score_fn, x, t)

    @property
    def supports_ancestral_sampling(self) -> bool:
        """Whether `ancestral_step` is defined (score_sde: VE and VP only)."""
        return False

    def ancestral_step(self, x: Array, t: Array, score: Array, noise: Array) -> Tuple[Array, Array]:
        """One ancestral sampling step (x, x_mean) from the score and the noise at t (batch,)."""
        raise ValueError(f"ancestral_sampling supports VESDE and VPSDE only, not {type(self).__name__}; "
                         "use the reverse_diffusion predictor")

    def timestep_index(self, t: Array) -> Array:
        """score_sde's discrete index i = int(t (N − 1) / T), int32."""
        return (t * (self.N - 1) / self.T).astype(jnp.int32)

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


def standard_normal_logp(z: Array, scale: float = 1.0) -> Array:
    dim = np.prod(z.shape[1:])
    sq = jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=-1)
    return -dim / 2.0 * jnp.log(2 * np.pi * scale**2) - sq / (2 * scale**2)
