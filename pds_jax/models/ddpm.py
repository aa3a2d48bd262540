"""DDPM U-Net (Ho et al., 2020) as in score_sde's `models/ddpm.py` (`config.model.name='ddpm'`).

The original DDPM architecture: GroupNorm with 32 groups, residual blocks with a
timestep-embedding bias, self-attention at `attn_resolutions`, nearest-neighbour
upsampling and strided-conv (or average-pool) downsampling. The parameter tree is
score_sde's, so its DDPM checkpoints (e.g. `vp/cifar10_ddpm`) load unchanged; the
class names below (`ResnetBlockDDPM`, `AttnBlock`, `Upsample`, `Downsample`) are part
of that tree. Inputs/outputs as for `NCSNpp`; labels are (possibly fractional)
timesteps.
"""

from __future__ import annotations

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import layers
from .layers import NIN, conv3x3, default_init, get_act
from .ncsnpp import smld_sigmas
from .up_or_down_sampling import naive_downsample_2d, naive_upsample_2d

Array = jax.Array


def _norm(x: Array) -> Array:
    # score_sde builds DDPM's normaliser as a bare nn.GroupNorm: 32 groups.
    return nn.GroupNorm(num_groups=32)(x)


class ResnetBlockDDPM(nn.Module):
    """GN → act → conv → +Dense(temb) → GN → act → dropout → conv(init 0), + shortcut."""

    act: str = "swish"
    out_ch: Optional[int] = None
    conv_shortcut: bool = False
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: Array, temb: Optional[Array] = None, train: bool = True) -> Array:
        act = get_act(self.act)
        C = x.shape[-1]
        out_ch = self.out_ch or C
        h = conv3x3(act(_norm(x)), out_ch)
        if temb is not None:
            h = h + nn.Dense(out_ch, kernel_init=default_init())(act(temb))[:, None, None, :]
        h = nn.Dropout(self.dropout)(act(_norm(h)), deterministic=not train)
        h = conv3x3(h, out_ch, init_scale=0.0)
        if C != out_ch:
            x = conv3x3(x, out_ch) if self.conv_shortcut else NIN(out_ch)(x)
        return x + h


class AttnBlock(nn.Module):
    """DDPM self-attention over all pixels, residual, zero-initialised output projection."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        B, H, W, C = x.shape
        h = _norm(x)
        q, k, v = NIN(C)(h), NIN(C)(h), NIN(C)(h)
        logits = jnp.einsum("bhwc,bHWc->bhwHW", q, k) * (int(C) ** (-0.5))
        weights = jax.nn.softmax(logits.reshape(B, H, W, H * W), axis=-1).reshape(B, H, W, H, W)
        h = jnp.einsum("bhwHW,bHWc->bhwc", weights, v)
        return x + NIN(C, init_scale=0.0)(h)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, optionally followed by a 3×3 conv."""

    with_conv: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = naive_upsample_2d(x)
        return conv3x3(h, x.shape[-1]) if self.with_conv else h


class Downsample(nn.Module):
    """Stride-2 3×3 conv, or 2×2 average pooling."""

    with_conv: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return conv3x3(x, x.shape[-1], stride=2) if self.with_conv else naive_downsample_2d(x)


class DDPM(nn.Module):
    """DDPM score network; fields are those of `config.model` (see `from_config`)."""

    nf: int = 128
    ch_mult: Tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    nonlinearity: str = "swish"
    scale_by_sigma: bool = False
    centered: bool = True
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000

    @classmethod
    def from_config(cls, config) -> "DDPM":
        m = config.model
        if m.normalization != "GroupNorm":
            raise ValueError(f"config.model.normalization={m.normalization!r}: the DDPM port "
                             "supports 'GroupNorm' only (as all score_sde DDPM configs)")
        return cls(nf=int(m.nf), ch_mult=tuple(int(c) for c in m.ch_mult),
                   num_res_blocks=int(m.num_res_blocks),
                   attn_resolutions=tuple(int(r) for r in m.attn_resolutions),
                   dropout=float(m.dropout), resamp_with_conv=bool(m.resamp_with_conv),
                   conditional=bool(m.conditional), nonlinearity=m.nonlinearity.lower(),
                   scale_by_sigma=bool(m.scale_by_sigma), centered=bool(config.data.centered),
                   sigma_min=float(m.sigma_min), sigma_max=float(m.sigma_max),
                   num_scales=int(m.num_scales))

    def _block(self, **kwargs) -> nn.Module:
        return ResnetBlockDDPM(act=self.nonlinearity, dropout=self.dropout, **kwargs)

    @nn.compact
    def __call__(self, x: Array, labels: Array, train: bool = True) -> Array:
        act = get_act(self.nonlinearity)
        temb = None
        if self.conditional:
            temb = layers.timestep_embedding(labels, self.nf)
            temb = nn.Dense(self.nf * 4, kernel_init=default_init())(temb)
            temb = nn.Dense(self.nf * 4, kernel_init=default_init())(act(temb))
        h = x if self.centered else 2 * x - 1.0

        hs = [conv3x3(h, self.nf)]
        for level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = self._block(out_ch=self.nf * mult)(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock()(h)
                hs.append(h)
            if level != len(self.ch_mult) - 1:
                hs.append(Downsample(with_conv=self.resamp_with_conv)(hs[-1]))

        h = self._block()(hs[-1], temb, train)
        h = AttnBlock()(h)
        h = self._block()(h, temb, train)

        for level in reversed(range(len(self.ch_mult))):
            for _ in range(self.num_res_blocks + 1):
                h = self._block(out_ch=self.nf * self.ch_mult[level])(
                    jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
            if h.shape[1] in self.attn_resolutions:
                h = AttnBlock()(h)
            if level != 0:
                h = Upsample(with_conv=self.resamp_with_conv)(h)

        h = conv3x3(act(_norm(h)), x.shape[-1], init_scale=0.0)
        if self.scale_by_sigma:
            # Only meaningful for integer labels (NCSN-style training with DDPM).
            sigmas = smld_sigmas(self.sigma_min, self.sigma_max, self.num_scales)
            h = h / sigmas[labels.astype(jnp.int32)].reshape((-1,) + (1,) * (h.ndim - 1))
        return h
