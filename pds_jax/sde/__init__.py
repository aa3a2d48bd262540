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

Each SDE also owns everything else that depends on which SDE it is, so that no
sampler, model wrapper or table builder asks for its type:

* the float64 NumPy schedule of the deterministic samplers' tables, `np_alpha`,
  `np_std`, `np_rho` = s/α and `np_t_of_rho` (DEIS variables, see `base.SDE`);
* the variable fixed-grid ODE solvers step in (`np_ode_tau`: σ for VE, t otherwise)
  and dx/dτ there (`pf_ode_tau_derivative`);
* the PC pieces that differ per SDE: `langevin_alpha` (score_sde's corrector step
  scale) and `ancestral_step` (the SMLD / DDPM ancestral sampler);
* score_sde's network conventions: `continuous_label` / `discrete_label` (the noise
  label the network receives) and `score_from_output` (VE networks output the score,
  VP / sub-VP networks −s(t) · score).

All classes are frozen `flax.struct` dataclasses whose fields are all static pytree
metadata (no array leaves; see `base.static_field`), so they are hashable, can be closed over or passed through `jax.jit`, and every method
is a pure function of its arguments. Discrete tables (σ_i, β_i, ᾱ_i) are built with
`jnp` at call time, so inside `jit` they are computed from an iota instead of being
baked into the program as length-N constants: program size does not grow with N.

Modules: `base` (the interface, `ReverseSDE`, `batch_mul`), `ve` (VESDE), `vp`
(VPSDE, subVPSDE).
"""

from pds_jax.sde.base import SDE, Array, ReverseSDE, ScoreFn, batch_mul
from pds_jax.sde.ve import VESDE
from pds_jax.sde.vp import VPSDE, subVPSDE


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


__all__ = ["SDE", "ReverseSDE", "VESDE", "VPSDE", "subVPSDE", "batch_mul", "get_sde", "Array", "ScoreFn"]
