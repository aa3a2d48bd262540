"""Basic building blocks shared by the score networks.

The initialisers, layer shapes and parameter names follow score_sde
(Song et al., 2021, `models/layers.py`), which in turn follows DDPM (Ho et al.,
2020). Parameter names matter: a score_sde checkpoint stores its tensors under
the auto-generated Flax names of the modules that created them, so the helpers
below create exactly the same Flax modules (`nn.Conv`, `nn.Dense`, `NIN`, ...)
in the same order.

`conv1x1` / `conv3x3` are *functions*, not modules: the `nn.Conv` they build is
named `Conv_<k>` in the scope of the module that calls them, as in score_sde.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "elu": nn.elu,
    "relu": nn.relu,
    "lrelu": lambda x: nn.leaky_relu(x, negative_slope=0.2),
    "swish": nn.swish,
}


def get_act(name: str) -> Callable[[Array], Array]:
    """The activation named by `config.model.nonlinearity` (elu, relu, lrelu, swish)."""
    try:
        return _ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(
            f"config.model.nonlinearity={name!r} is not one of {sorted(_ACTIVATIONS)}") from None


def default_init(scale: float = 1.0):
    """DDPM's initialiser: variance scaling, fan_avg, uniform.

    A scale of 0 (used for the last conv of every residual branch) is replaced by
    1e-10 because variance scaling needs a positive scale; the weights are then
    numerically zero but keep their shape and name.
    """
    scale = 1e-10 if scale == 0 else scale
    return jax.nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def _conv(x: Array, features: int, size: int, stride: int, bias: bool, dilation: int,
          init_scale: float) -> Array:
    return nn.Conv(
        features,
        kernel_size=(size, size),
        strides=(stride, stride),
        padding="SAME",
        use_bias=bias,
        kernel_dilation=(dilation, dilation),
        kernel_init=default_init(init_scale),
        bias_init=jax.nn.initializers.zeros,
    )(x)


def conv1x1(x: Array, features: int, stride: int = 1, bias: bool = True, dilation: int = 1,
            init_scale: float = 1.0) -> Array:
    """1×1 convolution (NHWC) with DDPM initialisation, created in the caller's scope."""
    return _conv(x, features, 1, stride, bias, dilation, init_scale)


def conv3x3(x: Array, features: int, stride: int = 1, bias: bool = True, dilation: int = 1,
            init_scale: float = 1.0) -> Array:
    """3×3 'SAME' convolution (NHWC) with DDPM initialisation, created in the caller's scope."""
    return _conv(x, features, 3, stride, bias, dilation, init_scale)


class NIN(nn.Module):
    """Network-in-network: a per-pixel linear map over channels, y = x W + b.

    Params `W` (C_in, num_units) and `b` (num_units,), as in DDPM/score_sde.
    """

    num_units: int
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        W = self.param("W", default_init(self.init_scale), (x.shape[-1], self.num_units))
        b = self.param("b", jax.nn.initializers.zeros, (self.num_units,))
        return jnp.tensordot(x, W, axes=1) + b


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of a scalar noise level (Tancik et al., 2020).

    emb(s) = [sin(2π s W), cos(2π s W)], W ~ N(0, scale²) of size `embedding_size`,
    fixed during training (stop_gradient). NCSN++ feeds s = log σ. Input (batch,),
    output (batch, 2 · embedding_size).
    """

    embedding_size: int = 256
    scale: float = 1.0

    @nn.compact
    def __call__(self, s: Array) -> Array:
        W = self.param("W", jax.nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
        W = jax.lax.stop_gradient(W)
        # Multiply in score_sde's order: the arguments reach ~1e3, where regrouping
        # the constant 2π changes sin/cos by ~1e-4.
        proj = s[:, None] * W[None, :] * 2 * jnp.pi
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


def timestep_embedding(timesteps: Array, dim: int, max_positions: int = 10000) -> Array:
    """Transformer sinusoidal embedding of (possibly fractional) timesteps, as in DDPM.

    Frequencies exp(−log(max_positions) · j / (dim/2 − 1)), j = 0..dim/2−1; output
    [sin(t f), cos(t f)] of shape (batch, dim), zero-padded when `dim` is odd.
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must have shape (batch,), got {timesteps.shape}")
    half = dim // 2
    rate = math.log(max_positions) / (half - 1)
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -rate)
    args = timesteps[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
    if dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb
