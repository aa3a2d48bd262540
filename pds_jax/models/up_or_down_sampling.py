"""FIR up/down-sampling (StyleGAN2's `upfirdn`) for NHWC images.

NCSN++ resamples feature maps with a small FIR filter (default [1, 3, 3, 1]) instead
of nearest-neighbour / average pooling ("fir" in the config). The arithmetic is that
of score_sde's `models/up_or_down_sampling.py`, itself ported from StyleGAN2
(Karras et al., 2020). This module computes the same quantities differently:
separable filters (a 1-D kernel, as in every NCSN++ config) run as two 1-D passes
of weighted shifted slices, in polyphase form when upsampling so that the inserted
zeros are never multiplied; general 2-D kernels use a depthwise
`lax.conv_general_dilated` after zero insertion by `lax.pad`.

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


def _pad_axis(x: Array, axis: int, low: int, high: int, interior: int = 0) -> Array:
    """Zero-pad (crop, for negative amounts) one axis; `interior` zeros go between samples."""
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (low, high, interior)
    return jax.lax.pad(x, jnp.zeros((), x.dtype), config)


def _weighted_slices(x: Array, weights, starts, length: int, stride: int, axis: int) -> Array:
    """Σ_j weights[j] · x[starts[j] : starts[j] + stride·length : stride] along `axis`."""
    acc = None
    for w, start in zip(weights, starts):
        if w == 0:
            continue
        term = jax.lax.slice_in_dim(x, start, start + (length - 1) * stride + 1, stride, axis) * w
        acc = term if acc is None else acc + term
    if acc is None:  # an all-zero filter
        shape = list(x.shape)
        shape[axis] = length
        acc = jnp.zeros(shape, x.dtype)
    return acc


def _upfirdn_1d(x: Array, taps: np.ndarray, axis: int, up: int, down: int,
                pad: Tuple[int, int]) -> Array:
    """`upfirdn` along one axis with shifted, weighted slices (no convolution).

    Output z[m] = Σ_j k[K−1−j] · y_pad[m·down + j], y = x with up − 1 zeros after each
    sample. For up > 1 the polyphase form skips the inserted zeros: the outputs of
    phase r = m mod up only see the taps j with (r + j − pad0) ≡ 0 (mod up).
    """
    n, K = x.shape[axis], len(taps)
    out_len = (n * up + pad[0] + pad[1] - K) // down + 1
    kf = [float(t) for t in taps[::-1]]  # correlation weights
    if up == 1:
        return _weighted_slices(_pad_axis(x, axis, *pad), kf, range(K), out_len, down, axis)
    if down != 1:  # not used by NCSN++: insert the zeros explicitly
        x = _pad_axis(x, axis, pad[0], pad[1] + up - 1, interior=up - 1)
        return _weighted_slices(x, kf, range(K), out_len, down, axis)
    per_phase = -(-out_len // up)
    taps_of = [[j for j in range(K) if (r + j - pad[0]) % up == 0] for r in range(up)]
    sources = [(r + j - pad[0]) // up for r in range(up) for j in taps_of[r]] or [0]
    left = max(0, -min(sources))
    right = max(0, per_phase - 1 + max(sources) - (n - 1))
    xp = _pad_axis(x, axis, left, right)
    phases = [_weighted_slices(xp, [kf[j] for j in taps_of[r]],
                               [(r + j - pad[0]) // up + left for j in taps_of[r]], per_phase, 1, axis)
              for r in range(up)]
    z = jnp.stack(phases, axis=axis + 1)
    z = z.reshape(z.shape[:axis] + (per_phase * up,) + z.shape[axis + 2:])
    return jax.lax.slice_in_dim(z, 0, out_len, axis=axis)


def fir_filter(k: Sequence[float] | np.ndarray) -> np.ndarray:
    """A 1-D (separable) or square 2-D FIR kernel, normalised to sum to 1 (float32)."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim not in (1, 2) or (k.ndim == 2 and k.shape[0] != k.shape[1]):
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {k.shape}")
    return k / np.sum(k)


def upfirdn2d(x: Array, k: Sequence[float] | np.ndarray, up: int = 1, down: int = 1,
              pad: Tuple[int, int] = (0, 0), gain: float = 1.0) -> Array:
    """Upsample (zero insertion) → pad → FIR-filter (true convolution) → downsample.

    x: (N, H, W, C). k: a 1-D kernel, used separably as outer(k, k), or a 2-D one;
    it is normalised to sum to `gain`. With zeros inserted *after* every pixel the
    output has size (H·up + pad0 + pad1 − K) // down + 1 along H and W, as scipy's
    upfirdn. Separable kernels (all of NCSN++'s) run as two 1-D passes of shifted
    slices, which is many times faster than a depthwise convolution on CPU.
    """
    k = fir_filter(k)
    if k.ndim == 1:
        x = _upfirdn_1d(x, k * np.float32(gain), 1, up, down, pad)
        return _upfirdn_1d(x, k, 2, up, down, pad)
    C = x.shape[-1]
    kh, kw = k.shape
    # Zero insertion (interior padding, plus up − 1 trailing zeros) and padding/cropping
    # in one lax.pad: XLA's CPU convolution mishandles negative conv padding.
    for axis in (1, 2):
        x = _pad_axis(x, axis, pad[0], pad[1] + up - 1, interior=up - 1)
    # The flipped kernel turns XLA's cross-correlation into a convolution.
    w = jnp.asarray(np.ascontiguousarray(k[::-1, ::-1] * np.float32(gain)), dtype=x.dtype)
    w = jnp.broadcast_to(w[:, :, None, None], (kh, kw, 1, C))
    return jax.lax.conv_general_dilated(x, w, window_strides=(down, down), padding="VALID",
                                        dimension_numbers=_DIMS, feature_group_count=C)


def _kernel_size(k) -> int:
    return np.shape(k)[0]


def upsample_2d(x: Array, k: Optional[Sequence[float]] = None, factor: int = 2,
                gain: float = 1.0) -> Array:
    """(N, H, W, C) → (N, H·factor, W·factor, C) with FIR filter `k` (default: nearest)."""
    k = [1] * factor if k is None else k
    p = _kernel_size(k) - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2), gain=gain * factor**2)


def downsample_2d(x: Array, k: Optional[Sequence[float]] = None, factor: int = 2,
                  gain: float = 1.0) -> Array:
    """(N, H, W, C) → (N, H/factor, W/factor, C) with FIR filter `k` (default: average pooling)."""
    k = [1] * factor if k is None else k
    p = _kernel_size(k) - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2), gain=gain)


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
    k = [1] * factor if k is None else k
    p = (_kernel_size(k) - factor) - (kw - 1)
    y = jax.lax.conv_general_dilated(
        x, w.astype(x.dtype), window_strides=(1, 1), padding=((kw - 1, kw - 1),) * 2,
        lhs_dilation=(factor, factor), dimension_numbers=_DIMS)
    return upfirdn2d(y, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), gain=gain * factor**2)


def conv_downsample_2d(x: Array, w: Array, k: Optional[Sequence[float]] = None, factor: int = 2,
                       gain: float = 1.0) -> Array:
    """FIR-filter (padded once), then a stride-`factor` 'VALID' convolution with `w`."""
    kw = w.shape[1]
    if w.shape[0] != kw:
        raise ValueError(f"conv kernel must be square, got {w.shape}")
    k = [1] * factor if k is None else k
    p = (_kernel_size(k) - factor) + (kw - 1)
    y = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2), gain=gain)
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
