"""NCSN++ / DDPM++ blocks (score_sde, Song et al., 2021, `models/layerspp.py`).

Class names are part of the checkpoint format: Flax names a submodule
`<ClassName>_<k>`, so `ResnetBlockBigGANpp`, `AttnBlockpp`, `Combine`, `Upsample`
and `Downsample` must keep these exact names. Inside every block the submodules
are created in score_sde's order, which fixes their `_k` suffixes.

All tensors are NHWC; `temb` is the (batch, 4·nf) noise-level embedding or None.
`act` is an activation *name* (see `layers.get_act`) so that modules stay hashable.
"""

from __future__ import annotations

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import up_or_down_sampling as fir_ops
from .layers import NIN, conv1x1, conv3x3, default_init, get_act
from .normalization import group_norm

Array = jax.Array


def residual_sum(x: Array, h: Array, skip_rescale: bool) -> Array:
    """(x + h) / √2 with `skip_rescale`, else x + h."""
    # skip_rescale keeps the variance of a residual sum of two unit-variance terms at 1.
    return (x + h) / np.sqrt(2.0) if skip_rescale else x + h


class Combine(nn.Module):
    """Merge a progressive-input pyramid level `x` into the feature map `y`.

    x goes through a 1×1 conv to y's channels, then is summed with or concatenated
    to y (`method` = 'sum' | 'cat').
    """

    method: str = "cat"

    @nn.compact
    def __call__(self, x: Array, y: Array) -> Array:
        h = conv1x1(x, y.shape[-1])
        if self.method == "cat":
            return jnp.concatenate([h, y], axis=-1)
        if self.method == "sum":
            return h + y
        raise ValueError(f"config.model.progressive_combine={self.method!r}: use 'sum' or 'cat'")


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all pixels (DDPM), with optional √2 rescaling."""

    skip_rescale: bool = False
    init_scale: float = 0.0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        B, H, W, C = x.shape
        h = group_norm(x)
        q, k, v = NIN(C)(h), NIN(C)(h), NIN(C)(h)
        logits = jnp.einsum("bhwc,bHWc->bhwHW", q, k) * (int(C) ** (-0.5))
        weights = jax.nn.softmax(logits.reshape(B, H, W, H * W), axis=-1).reshape(B, H, W, H, W)
        h = jnp.einsum("bhwHW,bHWc->bhwc", weights, v)
        h = NIN(C, init_scale=self.init_scale)(h)
        return residual_sum(x, h, self.skip_rescale)


class Upsample(nn.Module):
    """×2 upsampling: nearest or FIR, optionally with a conv to `out_ch` channels.

    Without a conv it owns no parameters, but each instance still takes a
    `Upsample_<k>` name, exactly as in score_sde.
    """

    out_ch: Optional[int] = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: Tuple[int, ...] = (1, 3, 3, 1)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            h = fir_ops.naive_upsample_2d(x)
            return conv3x3(h, out_ch) if self.with_conv else h
        if not self.with_conv:
            return fir_ops.upsample_2d(x, self.fir_kernel, factor=2)
        return fir_ops.Conv2d(out_ch, kernel=3, up=True, resample_kernel=self.fir_kernel,
                              use_bias=True, kernel_init=default_init())(x)


class Downsample(nn.Module):
    """×2 downsampling: average pool / strided conv, or FIR, optionally with a conv."""

    out_ch: Optional[int] = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: Tuple[int, ...] = (1, 3, 3, 1)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            if self.with_conv:
                return conv3x3(x, out_ch, stride=2)
            return fir_ops.naive_downsample_2d(x)
        if not self.with_conv:
            return fir_ops.downsample_2d(x, self.fir_kernel, factor=2)
        return fir_ops.Conv2d(out_ch, kernel=3, down=True, resample_kernel=self.fir_kernel,
                              use_bias=True, kernel_init=default_init())(x)


def _add_time_bias(h: Array, temb: Optional[Array], act, out_ch: int) -> Array:
    """h + Dense(act(temb)) broadcast over pixels: the noise level enters every block here."""
    if temb is None:
        return h
    return h + nn.Dense(out_ch, kernel_init=default_init())(act(temb))[:, None, None, :]


class ResnetBlockDDPMpp(nn.Module):
    """DDPM residual block: GN → act → conv → +temb → GN → act → dropout → conv, + shortcut.

    The shortcut is a NIN (or a 3×3 conv with `conv_shortcut`) when channels change.
    """

    act: str = "swish"
    out_ch: Optional[int] = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0

    @nn.compact
    def __call__(self, x: Array, temb: Optional[Array] = None, train: bool = True) -> Array:
        act = get_act(self.act)
        C = x.shape[-1]
        out_ch = self.out_ch or C
        h = conv3x3(act(group_norm(x)), out_ch)
        h = _add_time_bias(h, temb, act, out_ch)
        h = nn.Dropout(self.dropout)(act(group_norm(h)), deterministic=not train)
        h = conv3x3(h, out_ch, init_scale=self.init_scale)
        if C != out_ch:
            x = conv3x3(x, out_ch) if self.conv_shortcut else NIN(out_ch)(x)
        return residual_sum(x, h, self.skip_rescale)


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block that can also resample (`up` / `down`) by 2.

    Both the residual branch (after the first GN + act) and the shortcut are
    resampled (FIR or naive); the shortcut gets a 1×1 conv whenever the shape changes.
    """

    act: str = "swish"
    up: bool = False
    down: bool = False
    out_ch: Optional[int] = None
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: Tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0

    def _resample(self, x: Array) -> Array:
        if self.up:
            return (fir_ops.upsample_2d(x, self.fir_kernel, factor=2) if self.fir
                    else fir_ops.naive_upsample_2d(x, factor=2))
        if self.down:
            return (fir_ops.downsample_2d(x, self.fir_kernel, factor=2) if self.fir
                    else fir_ops.naive_downsample_2d(x, factor=2))
        return x

    @nn.compact
    def __call__(self, x: Array, temb: Optional[Array] = None, train: bool = True) -> Array:
        act = get_act(self.act)
        C = x.shape[-1]
        out_ch = self.out_ch or C
        h = self._resample(act(group_norm(x)))
        x = self._resample(x)
        h = conv3x3(h, out_ch)
        h = _add_time_bias(h, temb, act, out_ch)
        h = nn.Dropout(self.dropout)(act(group_norm(h)), deterministic=not train)
        h = conv3x3(h, out_ch, init_scale=self.init_scale)
        if C != out_ch or self.up or self.down:
            x = conv1x1(x, out_ch)
        return residual_sum(x, h, self.skip_rescale)
