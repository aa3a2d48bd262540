"""The PDS preconditioner M = F⁻¹ D F diag(s) and P = M Mᵀ (Ma et al., ECCV 2022).

With the 2-D FFT F over the H and W axes of an NHWC batch (unshifted layout, DC at
[0, 0]), a real frequency filter D (H, W, C) and a real space filter s (H, W, C):

    K g   = Re F⁻¹[D ⊙ F g]                 (the frequency operator)
    M z   = K (s ⊙ z)
    Mᵀ g  = s ⊙ K g
    P g   = M Mᵀ g = K (s² ⊙ K g)

`Re F⁻¹ D F` equals `F⁻¹ D_sym F` with D_sym[k] = (D[k] + D[−k]) / 2 for any real D,
so K is always real-symmetric and P = M Mᵀ is symmetric positive definite. When D is
Hermitian-symmetric (D[k] = D[−k], true for dataset statistics and for symmetric
grids) the half-spectrum `rfft2`/`irfft2` pair computes K exactly at half the cost;
otherwise the full complex FFT with the real part reproduces the official code.

PDS multiplies the score drift of the predictor and the corrector by P and all
injected noise (the prior sample included) by M (docs/design.md §3). An optional
solenoidal term ω S with a skew-symmetric S (Theorem 1 of the paper) is added to
the drift: dx = (ε²/2)(M Mᵀ + ω S) ∇log p dt + ε M dw keeps the stationary law.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array
FFT_MODES = ("auto", "rfft", "full")
NORMALIZATIONS = ("normalized", "legacy")


# --------------------------------------------------------------------------- #
# Filters from raw statistics (docs/design.md §3).
# --------------------------------------------------------------------------- #

def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not np.isfinite(alpha) or alpha <= 1.0:
        raise ValueError(
            f"PDS alpha must be a finite number > 1 (filters are α/(x + α − 1)); got alpha={alpha}. "
            "The paper and the official code use alpha=5.")
    return alpha


def _check_raw(name: str, raw, strictly_positive: bool) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 3:
        raise ValueError(
            f"{name} statistics must have shape (H, W, C), got {raw.shape}. Official PDS .npy files "
            "are (C, H, W) or (1, C, H, W): read them with pds_jax.filters.load_official_npy.")
    if not np.all(np.isfinite(raw)):
        raise ValueError(f"{name} statistics contain NaN or Inf; re-estimate the filter file")
    if strictly_positive and np.any(raw <= 0):
        raise ValueError(
            f"{name} statistics must be > 0 everywhere for the legacy 1/A space filter "
            f"(min {raw.min():.3g}); use mode='normalized' or re-estimate")
    if np.any(raw < 0) or raw.max() <= 0:
        raise ValueError(
            f"{name} statistics must be >= 0 with a positive maximum (got min {raw.min():.3g}, "
            f"max {raw.max():.3g}); they should be log(1 + power) or a second moment")
    return raw


def frequency_filter(R, alpha: float = 5.0, mode: str = "normalized") -> np.ndarray:
    """D from the log power spectrum R = log(1 + mean |F x|²), (H, W, C).

    normalized (official code since 2023): D = α / (R / max R + α − 1), D ∈ [1, α/(α−1)].
    legacy (ECCV-era code):                D = α / (R + α − 1).
    """
    alpha = _check_alpha(alpha)
    R = _check_raw("frequency", R, strictly_positive=False)
    if mode == "normalized":
        return alpha / (R / R.max() + alpha - 1.0)
    if mode == "legacy":
        return alpha / (R + alpha - 1.0)
    raise ValueError(f"normalization mode must be one of {NORMALIZATIONS}, got {mode!r}")


def space_filter(A, alpha: float = 5.0, mode: str = "normalized") -> np.ndarray:
    """s from the per-pixel second moment A = mean x², (H, W, C).

    normalized: s = α / (A / max A + α − 1), s ∈ [1, α/(α−1)].
    legacy:     s = 1 / A.
    """
    if mode == "legacy":
        return 1.0 / _check_raw("space", A, strictly_positive=True)
    if mode == "normalized":
        alpha = _check_alpha(alpha)
        A = _check_raw("space", A, strictly_positive=False)
        return alpha / (A / A.max() + alpha - 1.0)
    raise ValueError(f"normalization mode must be one of {NORMALIZATIONS}, got {mode!r}")


def circle_filter(shape: Sequence[int], r: float, lam: float, layout: str = "shifted",
                  mode: str = "multiply") -> np.ndarray:
    """The paper's parametric (r, λ) frequency filter on an (H, W, C) grid, unshifted layout.

    Grid points outside the circle {(h − H/2)² + (w − W/2)² ≤ 2 r²} get λ (mode='multiply')
    or 1/λ (mode='divide'), points inside get 1. With layout='shifted' the circle is drawn
    on the fftshifted spectrum (centred on DC: outside = high frequencies, which matches the
    direction of the data-driven filter for λ > 1); with layout='unshifted' it is drawn on
    the raw FFT grid (centred on the Nyquist frequency). Both are Hermitian-symmetric.
    """
    H, W, C = _check_shape(shape)
    if r <= 0 or not np.isfinite(r):
        raise ValueError(f"circle radius r must be > 0, got {r}")
    if lam <= 0 or not np.isfinite(lam):
        raise ValueError(f"circle scale lam must be > 0, got {lam}")
    if mode not in ("multiply", "divide"):
        raise ValueError(f"mode must be 'multiply' or 'divide', got {mode!r}")
    h = np.arange(H)[:, None] - H / 2
    w = np.arange(W)[None, :] - W / 2
    inside = h**2 + w**2 <= 2 * r**2
    scale = lam if mode == "multiply" else 1.0 / lam
    grid = np.where(inside, 1.0, scale)
    if layout == "shifted":
        grid = np.fft.ifftshift(grid, axes=(0, 1))
    elif layout != "unshifted":
        raise ValueError(f"layout must be 'shifted' or 'unshifted', got {layout!r}")
    return np.repeat(grid[:, :, None], C, axis=2)


def _check_shape(shape) -> Tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image shape must be (H, W, C) with positive sizes, got {shape}")
    return shape


def flip_frequencies(D: np.ndarray) -> np.ndarray:
    """D[−k] on the unshifted grid: index (h, w) → ((−h) mod H, (−w) mod W)."""
    return np.roll(np.flip(D, axis=(0, 1)), shift=1, axis=(0, 1))


def is_hermitian_symmetric(D: np.ndarray, rtol: float = 1e-5) -> bool:
    """Whether the real filter D satisfies D[k] = D[−k] (to `rtol` of its largest entry)."""
    D = np.asarray(D)
    return bool(np.max(np.abs(D - flip_frequencies(D))) <= rtol * np.max(np.abs(D)))


# --------------------------------------------------------------------------- #
# The operator.
# --------------------------------------------------------------------------- #

def _skew(g: Array) -> Array:
    """A skew-symmetric S: central differences along H and W with periodic boundary.

    (R₋ − R₊)ᵀ = R₊ − R₋ for the shift operators R±, so ⟨u, S u⟩ = 0 exactly.
    """
    return 0.5 * (jnp.roll(g, -1, axis=1) - jnp.roll(g, 1, axis=1)
                  + jnp.roll(g, -1, axis=2) - jnp.roll(g, 1, axis=2))


@struct.dataclass
class Preconditioner:
    """PDS preconditioner on NHWC batches (a `flax.struct` pytree: filters are leaves).

    Attributes:
      freq: frequency filter D, (H, W, C) float32 on the unshifted FFT grid, or None (D ≡ 1).
      space: space filter s, (H, W, C) float32, or None (s ≡ 1).
      omega: scale ω of the solenoidal term (a leaf, so changing it does not recompile).
      shape: (H, W, C) the filters act on (static).
      fft: 'rfft' (D Hermitian-symmetric) or 'full' (static).
      solenoidal: whether ω S is added to the drift (static).
      alpha: the α of `from_arrays` (None for identity / from_filters / parametric),
        recorded so that reports need not recompute it. A leaf like the filters it made, so
        a preconditioner for another α of the same shape runs the same compiled sampler
        (an α sweep compiles once per N).
    """

    # The one pytree idiom of pds_jax (see `pds_jax.sde.base.static_field`): leaves are
    # plain fields, static metadata is marked `pytree_node=False` where it is declared.
    freq: Optional[Array]
    space: Optional[Array]
    omega: Array
    shape: Tuple[int, int, int] = struct.field(pytree_node=False)
    fft: str = struct.field(pytree_node=False, default="rfft")
    solenoidal: bool = struct.field(pytree_node=False, default=False)
    alpha: Optional[float] = None

    # ----------------------------------------------------------------- builders
    @classmethod
    def identity(cls, shape: Sequence[int]) -> "Preconditioner":
        """M = I: every method is the identity (no FFT is computed)."""
        return cls(None, None, jnp.zeros((), jnp.float32), _check_shape(shape))

    @classmethod
    def from_filters(cls, freq_filter=None, space_filter=None, shape: Optional[Sequence[int]] = None,
                     fft: str = "auto", solenoidal_omega: float = 0.0) -> "Preconditioner":
        """From ready filters D and s ((H, W, C) arrays, positive and finite; None ⇒ 1).

        fft='auto' uses rfft2 when D is Hermitian-symmetric (then D is symmetrised exactly)
        and the full FFT otherwise; 'rfft' refuses an asymmetric D; 'full' always uses
        the full FFT.
        """
        if fft not in FFT_MODES:
            raise ValueError(f"fft must be one of {FFT_MODES}, got {fft!r}")
        arrays = {"frequency": freq_filter, "space": space_filter}
        shapes = {k: np.shape(v) for k, v in arrays.items() if v is not None}
        if shape is not None:
            shape = _check_shape(shape)
            shapes["requested"] = shape
        if not shapes:
            raise ValueError("give at least one filter or the image shape (use Preconditioner.identity)")
        if len(set(shapes.values())) != 1:
            raise ValueError(f"filter shapes disagree: {shapes}; all must be (H, W, C) of the model's images")
        shape = _check_shape(next(iter(shapes.values())))
        checked = {}
        for name, arr in arrays.items():
            if arr is None:
                checked[name] = None
                continue
            arr = np.asarray(arr, dtype=np.float64)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"the {name} filter contains NaN or Inf")
            if np.any(arr <= 0):
                raise ValueError(f"the {name} filter must be > 0 everywhere (min {arr.min():.3g})")
            checked[name] = arr
        D = checked["frequency"]
        mode = "rfft"
        if D is not None:
            symmetric = is_hermitian_symmetric(D)
            if fft == "full" or (fft == "auto" and not symmetric):
                mode = "full"
            elif not symmetric:
                raise ValueError(
                    "fft='rfft' needs a Hermitian-symmetric frequency filter (D[k] = D[-k]); this one "
                    "is not. Use fft='auto' or 'full'.")
            else:  # remove float noise so the half-spectrum path is exact
                D = 0.5 * (D + flip_frequencies(D))
        omega = float(solenoidal_omega)
        if not np.isfinite(omega):
            raise ValueError(f"solenoidal_omega must be finite, got {solenoidal_omega}")
        as_f32 = lambda a: None if a is None else jnp.asarray(a, jnp.float32)
        return cls(as_f32(D), as_f32(checked["space"]), jnp.asarray(omega, jnp.float32), shape,
                   mode, omega != 0.0)

    @classmethod
    def from_arrays(cls, freq=None, space=None, alpha: float = 5.0, mode: str = "normalized",
                    fft: str = "auto", solenoidal_omega: float = 0.0) -> "Preconditioner":
        """From raw statistics R (freq) and A (space), (H, W, C) each or None (docs/design.md §3)."""
        if freq is None and space is None:
            raise ValueError("from_arrays needs freq and/or space statistics; use "
                             "Preconditioner.identity(shape) for the vanilla sampler")
        D = None if freq is None else frequency_filter(freq, alpha, mode)
        s = None if space is None else space_filter(space, alpha, mode)
        return cls.from_filters(D, s, fft=fft, solenoidal_omega=solenoidal_omega).replace(alpha=float(alpha))

    @classmethod
    def parametric(cls, shape: Sequence[int], r: float, lam: float, layout: str = "shifted",
                   mode: str = "multiply", space=None, solenoidal_omega: float = 0.0) -> "Preconditioner":
        """The paper's (r, λ) circle filter (see `circle_filter`), with an optional space filter."""
        D = circle_filter(shape, r, lam, layout, mode)
        return cls.from_filters(D, space, fft="rfft", solenoidal_omega=solenoidal_omega)

    # --------------------------------------------------------------- operators
    @property
    def is_identity(self) -> bool:
        return self.freq is None and self.space is None and not self.solenoidal

    def _check(self, x: Array) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"preconditioner built for NHWC images of shape {self.shape}, got an array of shape "
                f"{x.shape}")

    def frequency_operator(self, x: Array) -> Array:
        """K x = Re F⁻¹[D ⊙ F x] over the H, W axes of an NHWC batch."""
        if self.freq is None:
            return x
        H, W, _ = self.shape
        if self.fft == "rfft":
            spectrum = jnp.fft.rfft2(x, axes=(1, 2)) * self.freq[:, : W // 2 + 1, :]
            return jnp.fft.irfft2(spectrum, s=(H, W), axes=(1, 2)).astype(x.dtype)
        spectrum = jnp.fft.fft2(x, axes=(1, 2)) * self.freq
        return jnp.real(jnp.fft.ifft2(spectrum, axes=(1, 2))).astype(x.dtype)

    def _space(self, x: Array, power: int = 1) -> Array:
        if self.space is None:
            return x
        return x * (self.space if power == 1 else self.space**power)

    def M(self, z: Array) -> Array:
        """M z = K (s ⊙ z): shapes white noise into the preconditioned noise."""
        self._check(z)
        return self.frequency_operator(self._space(z))

    def MT(self, g: Array) -> Array:
        """Mᵀ g = s ⊙ K g."""
        self._check(g)
        return self._space(self.frequency_operator(g))

    def P(self, g: Array) -> Array:
        """P g = M Mᵀ g = K (s² ⊙ K g)."""
        self._check(g)
        return self.frequency_operator(self._space(self.frequency_operator(g), power=2))

    def S(self, g: Array) -> Array:
        """The skew-symmetric solenoidal operator (see `_skew`); ⟨u, S u⟩ = 0."""
        self._check(g)
        return _skew(g)

    def precondition_drift(self, g: Array) -> Array:
        """(P + ω S) g: what PDS applies to every score drift."""
        out = self.P(g)
        if self.solenoidal:
            out = out + self.omega * _skew(g)
        return out

    # ------------------------------------------------------------------ report
    def describe(self) -> dict:
        """Ranges of D and s and the α they were built with (None if unknown), for logs and run.json."""
        info = {"shape": list(self.shape), "fft": self.fft, "solenoidal_omega": float(self.omega),
                "alpha": self.alpha}
        for name, arr in (("freq", self.freq), ("space", self.space)):
            info[name] = None if arr is None else {"min": float(jnp.min(arr)), "max": float(jnp.max(arr))}
        return info
