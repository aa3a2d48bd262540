"""NCSN++ / DDPM++ (Song et al., 2021, "Score-Based Generative Modeling through SDEs").

A port of score_sde's `models/ncsnpp.py` that produces the *same parameter tree*
(names, creation order, shapes) and the same outputs, so the released score_sde
checkpoints load unchanged. DDPM++ is the same network with other switches
(`resblock_type`, `fir`, `embedding_type`, ...), see `configs/vp/`.

Layout (U-Net): an optional noise-level embedding (Gaussian Fourier features of
log σ, or sinusoidal features of a timestep), an encoder of residual blocks with
self-attention at `attn_resolutions` and ×2 downsampling between levels, a middle
block, and a mirrored decoder that concatenates the encoder activations. The
"progressive" switches add an input pyramid (encoder side) and an output pyramid
(decoder side), combined by sum/concat or as residuals.

Inputs: x (batch, H, W, C) NHWC float32, in [0, 1] when `centered` is False (the
network itself maps x → 2x − 1) or in [−1, 1] otherwise; labels (batch,): σ for the
Fourier embedding, a (possibly fractional) timestep for the positional one.
"""

from __future__ import annotations

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import layers, layerspp
from .normalization import group_norm

Array = jax.Array

_CHOICES = {
    "resblock_type": ("ddpm", "biggan"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
    "embedding_type": ("fourier", "positional"),
}


def smld_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> Array:
    """score_sde's discrete noise levels, geometric from σ_max down to σ_min (float32)."""
    return jnp.exp(jnp.linspace(jnp.log(sigma_max), jnp.log(sigma_min), num_scales))


class NCSNpp(nn.Module):
    """NCSN++ score network; field names and meanings are those of `config.model`.

    Build it from a score_sde config with `NCSNpp.from_config(config)`. Call as
    `model.apply({'params': params}, x, labels, train=False)`; the output has x's shape.
    """

    nf: int = 128
    ch_mult: Tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: Tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: Tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    init_scale: float = 0.0
    nonlinearity: str = "swish"
    scale_by_sigma: bool = True
    centered: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000

    @classmethod
    def from_config(cls, config) -> "NCSNpp":
        """The network described by a score_sde config (`config.model`, `config.data.centered`)."""
        m = config.model
        if m.embedding_type.lower() == "fourier" and not config.training.continuous:
            raise ValueError("config.model.embedding_type='fourier' needs config.training.continuous=True "
                             "(Fourier features embed a continuous σ); use 'positional' for discrete labels")
        return cls(
            nf=int(m.nf), ch_mult=tuple(int(c) for c in m.ch_mult),
            num_res_blocks=int(m.num_res_blocks),
            attn_resolutions=tuple(int(r) for r in m.attn_resolutions),
            dropout=float(m.dropout), resamp_with_conv=bool(m.resamp_with_conv),
            conditional=bool(m.conditional), fir=bool(m.fir),
            fir_kernel=tuple(int(k) for k in m.fir_kernel), skip_rescale=bool(m.skip_rescale),
            resblock_type=m.resblock_type.lower(), progressive=m.progressive.lower(),
            progressive_input=m.progressive_input.lower(),
            progressive_combine=m.progressive_combine.lower(),
            embedding_type=m.embedding_type.lower(), fourier_scale=float(m.fourier_scale),
            init_scale=float(m.init_scale), nonlinearity=m.nonlinearity.lower(),
            scale_by_sigma=bool(m.scale_by_sigma), centered=bool(config.data.centered),
            sigma_min=float(m.sigma_min), sigma_max=float(m.sigma_max),
            num_scales=int(m.num_scales))

    def _check(self):
        for field, allowed in _CHOICES.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"config.model.{field}={getattr(self, field)!r} is not one of {allowed}")

    # -- factories: each call creates one submodule in this scope, named like score_sde's ----

    def _resnet_block(self, **kwargs) -> nn.Module:
        common = dict(act=self.nonlinearity, dropout=self.dropout, init_scale=self.init_scale,
                      skip_rescale=self.skip_rescale)
        if self.resblock_type == "ddpm":
            return layerspp.ResnetBlockDDPMpp(**common, **kwargs)
        return layerspp.ResnetBlockBigGANpp(fir=self.fir, fir_kernel=self.fir_kernel, **common, **kwargs)

    def _attention(self) -> nn.Module:
        return layerspp.AttnBlockpp(init_scale=self.init_scale, skip_rescale=self.skip_rescale)

    def _resample(self, cls, **kwargs) -> nn.Module:
        return cls(fir=self.fir, fir_kernel=self.fir_kernel, **kwargs)

    # -- the network ----------------------------------------------------------------------

    def _embed(self, labels: Array) -> Tuple[Optional[Array], Array]:
        """Noise-level embedding (batch, 4·nf) or None, and the σ used by `scale_by_sigma`."""
        if self.embedding_type == "fourier":
            sigmas = labels
            temb = layers.GaussianFourierProjection(
                embedding_size=self.nf, scale=self.fourier_scale)(jnp.log(labels))
        else:
            table = smld_sigmas(self.sigma_min, self.sigma_max, self.num_scales)
            sigmas = table[labels.astype(jnp.int32)]
            temb = layers.timestep_embedding(labels, self.nf)
        if not self.conditional:
            return None, sigmas
        act = layers.get_act(self.nonlinearity)
        temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init())(temb)
        temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init())(act(temb))
        return temb, sigmas

    def _encode(self, x: Array, temb: Optional[Array], train: bool) -> list:
        """Encoder; returns every activation the decoder will concatenate (last = deepest)."""
        pyramid = x if self.progressive_input != "none" else None
        hs = [layers.conv3x3(x, self.nf)]
        for level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = self._resnet_block(out_ch=self.nf * mult)(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = self._attention()(h)
                hs.append(h)
            if level == len(self.ch_mult) - 1:
                break
            if self.resblock_type == "ddpm":
                h = self._resample(layerspp.Downsample, with_conv=self.resamp_with_conv)(hs[-1])
            else:
                h = self._resnet_block(down=True)(hs[-1], temb, train)
            if self.progressive_input == "input_skip":
                pyramid = self._resample(layerspp.Downsample, with_conv=False)(pyramid)
                h = layerspp.Combine(method=self.progressive_combine)(pyramid, h)
            elif self.progressive_input == "residual":
                pyramid = self._resample(layerspp.Downsample, with_conv=True,
                                         out_ch=h.shape[-1])(pyramid)
                pyramid = layerspp.residual_sum(pyramid, h, self.skip_rescale)
                h = pyramid
            hs.append(h)
        return hs

    def _to_image(self, h: Array, channels: int, init_scale: float) -> Array:
        act = layers.get_act(self.nonlinearity)
        return layers.conv3x3(act(group_norm(h)), channels, bias=True, init_scale=init_scale)

    def _decode(self, h: Array, hs: list, temb: Optional[Array], train: bool,
                channels: int) -> Array:
        pyramid = None
        top = len(self.ch_mult) - 1
        for level in reversed(range(len(self.ch_mult))):
            for _ in range(self.num_res_blocks + 1):
                h = self._resnet_block(out_ch=self.nf * self.ch_mult[level])(
                    jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
            if h.shape[1] in self.attn_resolutions:
                h = self._attention()(h)

            if self.progressive == "output_skip":
                if level != top:
                    pyramid = self._resample(layerspp.Upsample, with_conv=False)(pyramid)
                out = self._to_image(h, channels, self.init_scale)
                pyramid = out if level == top else pyramid + out
            elif self.progressive == "residual":
                if level == top:
                    # score_sde keeps the default init scale (1) for this conv.
                    pyramid = self._to_image(h, h.shape[-1], 1.0)
                else:
                    pyramid = self._resample(layerspp.Upsample, with_conv=True,
                                             out_ch=h.shape[-1])(pyramid)
                    pyramid = layerspp.residual_sum(pyramid, h, self.skip_rescale)
                    h = pyramid

            if level != 0:
                if self.resblock_type == "ddpm":
                    h = self._resample(layerspp.Upsample, with_conv=self.resamp_with_conv)(h)
                else:
                    h = self._resnet_block(up=True)(h, temb, train)
        if hs:
            raise AssertionError("decoder did not consume every encoder activation")
        if self.progressive == "output_skip":
            return pyramid
        return self._to_image(h, channels, self.init_scale)

    @nn.compact
    def __call__(self, x: Array, labels: Array, train: bool = True) -> Array:
        """Score-network output for x (batch, H, W, C) at noise labels (batch,)."""
        self._check()
        temb, sigmas = self._embed(labels)
        if not self.centered:
            x = 2 * x - 1.0  # data in [0, 1] -> [-1, 1]
        hs = self._encode(x, temb, train)
        h = self._resnet_block()(hs[-1], temb, train)
        h = self._attention()(h)
        h = self._resnet_block()(h, temb, train)
        h = self._decode(h, hs, temb, train, x.shape[-1])
        if self.scale_by_sigma:
            h = h / sigmas.reshape((-1,) + (1,) * (h.ndim - 1))
        return h
