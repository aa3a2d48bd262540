"""Model registry: `config.model.name` → Flax module (score_sde's `register_model` idea).

A model is registered with a builder `config -> flax.linen.Module`. Every registered
network is called as `module.apply({'params': p}, x, labels, train=False)` with NHWC
float32 `x` and per-example noise `labels` (batch,).
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from .ddpm import DDPM
from .ncsnpp import NCSNpp

_BUILDERS: Dict[str, Callable[[Any], nn.Module]] = {}


def register_model(name: str, builder: Callable[[Any], nn.Module]) -> None:
    """Register `builder(config) -> nn.Module` under `name` (as used in `config.model.name`)."""
    if name in _BUILDERS:
        raise ValueError(f"a model named {name!r} is already registered")
    _BUILDERS[name] = builder


def registered_models() -> tuple:
    return tuple(sorted(_BUILDERS))


def create_model(config) -> nn.Module:
    """The Flax module for `config.model.name` built from the score_sde-style `config`."""
    name = config.model.name
    if name not in _BUILDERS:
        raise ValueError(f"config.model.name={name!r} is not a registered model; "
                         f"available: {', '.join(registered_models())}")
    return _BUILDERS[name](config)


def example_inputs(config, batch_size: int = 1):
    """Zero images (batch, H, W, C) and unit labels (batch,) of the config's data shape."""
    size, channels = config.data.image_size, config.data.num_channels
    return (jnp.zeros((batch_size, size, size, channels), jnp.float32),
            jnp.ones((batch_size,), jnp.float32))


def init_params(config, rng: jax.Array) -> dict:
    """Freshly initialised parameters (a plain nested dict, score_sde's tree layout)."""
    model = create_model(config)
    x, labels = example_inputs(config)
    params_rng, dropout_rng = jax.random.split(rng)
    variables = model.init({"params": params_rng, "dropout": dropout_rng}, x, labels, train=False)
    return dict(variables["params"])


def param_shapes(config) -> dict:
    """`jax.ShapeDtypeStruct` tree of the parameters, computed without allocating them."""
    return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))


register_model("ncsnpp", NCSNpp.from_config)
register_model("ddpm", DDPM.from_config)
