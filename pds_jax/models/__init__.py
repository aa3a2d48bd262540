"""Score networks (NCSN++ / DDPM++, DDPM) that load score_sde checkpoints unchanged.

    model = create_model(config)                # flax.linen.Module for config.model.name
    params = init_params(config, rng)           # or checkpoints.load_params(path)
    out = model.apply({'params': params}, x, labels, train=False)
    score_fn = get_score_fn(sde, model, params) # jax.tree_util.Partial: score_fn(x, t)
"""

from .ddpm import DDPM
from .ncsnpp import NCSNpp
from .registry import (create_model, example_inputs, init_params, param_shapes, register_model,
                       registered_models)
from .utils import ScoreFunction, get_model_fn, get_score_fn

__all__ = [
    "DDPM", "NCSNpp", "create_model", "example_inputs", "init_params", "param_shapes",
    "register_model", "registered_models", "ScoreFunction", "get_model_fn", "get_score_fn",
]
