"""From a network output to a score: score_sde's label and scaling conventions.

score_sde trains its networks with SDE-specific inputs and outputs (`models/utils.py`,
`get_score_fn`); a checkpoint only gives the right score with the same conventions:

| SDE, training      | network label               | score                                    |
|--------------------|-----------------------------|------------------------------------------|
| VP / sub-VP, cont. | 999 · t                     | −out / std(t)  (std of p_t(x | x_0))      |
| VP, discrete       | t (N − 1)                   | −out / sqrt(1 − ᾱ)[int(t (N − 1))]         |
| VE, continuous     | σ(t)                        | out                                      |
| VE, discrete       | round((T − t)(N − 1))       | out                                      |

(sub-VP always uses the continuous labels, as in score_sde.) The VE networks divide by
σ themselves (`scale_by_sigma`). Each SDE class implements its rows
(`SDE.continuous_label`, `discrete_label`, `score_from_output`).

`get_score_fn` returns a `jax.tree_util.Partial` whose only pytree child is the
parameter tree: it can be passed *as an argument* into a jitted sampler, so the
parameters are traced inputs (not constants baked into the program), and two score
functions built from equal models/SDEs share the compiled sampler.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from pds_jax import sde as sde_lib

Array = jax.Array


def get_model_fn(model: nn.Module, params: Any, train: bool = False) -> Callable[..., Array]:
    """`model_fn(x, labels, rng=None)`: the raw network output for NHWC `x`.

    With `train=True` dropout is active and `rng` (a PRNG key) is required.
    """

    def model_fn(x: Array, labels: Array, rng: Optional[Array] = None) -> Array:
        if not train:
            return model.apply({"params": params}, x, labels, train=False)
        if rng is None:
            raise ValueError("model_fn(train=True) needs a PRNG key for dropout: model_fn(x, labels, rng)")
        return model.apply({"params": params}, x, labels, train=True, rngs={"dropout": rng})

    return model_fn


@dataclasses.dataclass(frozen=True)
class ScoreFunction:
    """score(params, x, t) for a model trained on `sde` (hashable: a static jit argument).

    Wrap it with `Partial(ScoreFunction(...), params)` (what `get_score_fn` does) to get
    the `score_fn(x, t)` the samplers take. x: (batch, H, W, C); t: (batch,) or scalar.
    """

    model: nn.Module
    sde: sde_lib.SDE
    continuous: bool = True

    def labels(self, t: Array) -> Array:
        """The network's noise label at time t (see the module docstring)."""
        return self.sde.continuous_label(t) if self.continuous else self.sde.discrete_label(t)

    def __call__(self, params: Any, x: Array, t: Array, rng: Optional[Array] = None) -> Array:
        """The score; with a PRNG key `rng` the network runs in training mode (dropout)."""
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
        labels = self.labels(t)
        out = get_model_fn(self.model, params, train=rng is not None)(x, labels, rng)
        return self.sde.score_from_output(out, t, labels, self.continuous)


def get_score_fn(sde: sde_lib.SDE, model: nn.Module, params: Any,
                 continuous: bool = True) -> Partial:
    """The score ∇ₓ log p_t(x) of a score_sde model: `score_fn(x, t) -> score`.

    Args:
      sde: the forward SDE the model was trained with (`pds_jax.sde.get_sde(config)`).
        Discrete-time labels depend on its N: when sampling with fewer steps
        (`sde.with_steps(...)`, PDS speed-up), still build the score function from the
        training SDE (N = config.model.num_scales). Continuous-time labels do not.
      model: the network (`pds_jax.models.create_model(config)`).
      params: its parameters (e.g. `checkpoints.load_params(path)`, the EMA weights).
      continuous: `config.training.continuous` (the label convention).
    Returns:
      A `jax.tree_util.Partial` with `params` as its pytree children; x NHWC, t (batch,).
    """
    if not isinstance(sde, sde_lib.SDE):
        raise TypeError(f"sde must be a pds_jax.sde.SDE (VESDE, VPSDE or subVPSDE), got {type(sde).__name__}")
    return Partial(ScoreFunction(model=model, sde=sde, continuous=bool(continuous)), params)
