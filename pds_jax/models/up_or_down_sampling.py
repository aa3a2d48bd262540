"""FIR up/down-sampling (StyleGAN2's `upfirdn`) for NHWC images.

NCSN++ resamples feature maps with a small FIR filter (default [1, 3, 3, 1]) instead
of nearest-neighbour / average pooling ("fir" in the config). The arithmetic is that
of score_sde's `models/up_or_down_sampling.py`, itself ported from StyleGAN2
(Karras et al., 2020); this module re-expresses it with `lax.conv_general_dilated`:
zero insertion is an input (lhs) dilation, cropping/padding is the conv padding,
and the per-channel FIR filter is a depthwise (grouped) convolution.

`Conv2d` is the fused "conv + resample" layer; its parameters are stored as
`Conv2d_<k>/{weight, bias}` like in score_sde checkpoints.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
_DIMS = ("NHWC", "HWIO", "NHWC")


def fir_filter(k: Sequence[float] | np.ndarray, gain: float = 1.0) -> np.ndarray:
    """2-D FIR filter from a 1-D (separable, outer product) or 2-D kernel, summing to `gain`."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {k.shape}")
    k = k / np.sum(k)
    return (k * gain).astype(np.float32)


def upfirdn2d(x: Array, k: np.ndarray, up: int = 1, down: int = 1,
              pad: Tuple[int, int] = (0, 0)) -> Array:
    """Upsample (zero insertion) → pad → FIR-filter (true convolution) → downsample.

    x: (N, H, W, C); k: (kh, kw). With zeros inserted *after* every pixel, the output
    has size (H·up + pad0 + pad1 − kh) // down + 1 (same along W), as scipy's upfirdn.
    """
    C = x.shape[-1]
    kh, kw = k.shape
    # The flipped kernel turns XLA's cross-correlation into a convolution.
    w = jnp.asarray(np.ascontiguousarray(k[::-1, ::-1]), dtype=x.dtype)
    w = jnp.broadcast_to(w[:, :, None, None], (kh, kw, 1, C))
    # lhs_dilation only puts zeros *between* pixels; the trailing up − 1 zeros become padding.
    padding = ((pad[0], pad[1] + up - 1), (pad[0], pad[1] + up - 1))
    return jax.lax.conv_general_dilated(
        x, w, window_strides=(down, down), padding=padding, lhs_dilation=(up, up),
        dimension_numbers=_DIMS, feature_group_count=C)


def upsample_2d(x: Array, k: Optional[Sequence[float]] = None, factor: int = 2,
                gain: float = 1.0) -> Array:
    """(N, H, W, C) → (N, H·factor, W·factor, C) with FIR filter `k` (default: nearest)."""
    k = fir_filter([1] * factor if k is None else k, gain * factor**2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: Array, k: Optional[Sequence[float]] = None, factor: int = 2,
                  gain: float = 1.0) -> Array:
    """(N, H, W, C) → (N, H/factor, W/factor, C) with FIR filter `k` (default: average pooling)."""
    k = fir_filter([1] * factor if k is None else k, gain)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: Array, w: Array, k: Optional[Sequence[float]] = None, factor: int = 2,
                     gain: float = 1.0) -> Array:
    """Fused stride-`factor` transposed convolution with `w` (kh, kw, C_in, C_out), then FIR.

    The transposed convolution correlates the zero-inserted input, padded by kw − 1
    on both sides, with `w` itself (StyleGAN2 feeds TF's `conv2d_transpose` a flipped
    kernel, and the transpose flips it back). Output (N, H·factor, W·factor, C_out).
    """
    kw = w.shape[1]
    if w.shape[0] != kw:
        raise ValueError(f"conv kernel must be square, got {w.shape}")
    k = fir_filter([1] * factor if k is None else k, gain * factor**2)
    p = (k.shape[0] - factor) - (kw - 1)
    y = jax.lax.conv_general_dilated(
        x, w.astype(x.dtype), window_strides=(1, 1), padding=((kw - 1, kw - 1),) * 2,
        lhs_dilation=(factor, factor), dimension_numbers=_DIMS)
    return upfirdn2d(y, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: Array, w: Array, k: Optional[Sequence[float]] = None, factor: int = 2,
                       gain: float = 1.0) -> Array:
    """FIR-filter (padded once), then a stride-`factor` 'VALID' convolution with `w`."""
    kw = w.shape[1]
    if w.shape[0] != kw:
        raise ValueError(f"conv kernel must be square, got {w.shape}")
    k = fir_filter([1] * factor if k is None else k, gain)
    p = (k.shape[0] - factor) + (kw - 1)
    y = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return jax.lax.conv_general_dilated(
        y, w.astype(x.dtype), window_strides=(factor, factor), padding="VALID",
        dimension_numbers=_DIMS)


def naive_upsample_2d(x: Array, factor: int = 2) -> Array:
    """Nearest-neighbour upsampling by pixel repetition."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x: Array, factor: int = 2) -> Array:
    """Average pooling over non-overlapping factor × factor blocks."""
    N, H, W, C = x.shape
    return x.reshape(N, H // factor, factor, W // factor, factor, C).mean(axis=(2, 4))


class Conv2d(nn.Module):
    """Convolution with optional fused FIR up- or down-sampling (StyleGAN2 / score_sde).

    Params: `weight` (kernel, kernel, C_in, fmaps) and, with `use_bias`, `bias` (fmaps,).
    """

    fmaps: int
    kernel: int
    up: bool = False
    down: bool = False
    resample_kernel: Tuple[int, ...] = (1, 3, 3, 1)
    use_bias: bool = True
    weight_var: str = "weight"
    kernel_init: Optional[Any] = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.up and self.down:
            raise ValueError("Conv2d: up and down are exclusive")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"Conv2d: kernel must be odd and >= 1, got {self.kernel}")
        w = self.param(self.weight_var, self.kernel_init,
                       (self.kernel, self.kernel, x.shape[-1], self.fmaps))
        if self.up:
            x = upsample_conv_2d(x, w, k=self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, w, k=self.resample_kernel)
        else:
            x = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DIMS)
        if self.use_bias:
            x = x + self.param("bias", jax.nn.initializers.zeros, (x.shape[-1],))
        return x
