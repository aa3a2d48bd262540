"""Controllable generation by replacement: inpainting and colorization, vanilla or PDS.

The rule is score_sde's (Song et al., ICLR 2021, App. I.2; its JAX
`controllable_generation.py`, read for this module). Let m ∈ {0, 1} mark the known
coordinates (1 = known) of an image whose known values are `data`. The PC loop runs as
in `pds_jax.samplers.pc` (t = linspace(T, eps, N); corrector then predictor at t), and
after EVERY corrector update and EVERY predictor update the known coordinates are
overwritten by the data diffused to t with the forward kernel p_t(x | x_0) =
N(m(t) x_0, s(t)² I) (`sde.marginal_prob`):

    x      ← x · (1 − m) + (m(t) data + s(t) z) · m,          z ~ N(0, I)
    x_mean ← x · (1 − m) + (m(t) data) · m

Note that x_mean is built from the *already replaced* x, so on the unknown coordinates
it is the noisy x of the update, not the update's noise-free mean: with `denoise=True`
the output holds the exact data mean on known coordinates and the last predictor's
noisy state on unknown ones. This is what score_sde's code does (checked in its
source), and it is kept here; the last VE predictor noise is G = σ(eps) ≈ σ_min.
The initial state is x_T = data · m + M·prior · (1 − m).

Why it is exact only for independent coordinates. Write x = (x_u, x_k). The reverse
SDE of the unknown coordinates needs the score of p_t(x_u(t) | data_k), the law of the
unknown part of the *jointly* diffused image given the clean known part. The
replacement uses instead the unconditional score ∇_u log p_t(x_u, x_k) evaluated at an
x_k(t) that is a fresh forward sample of the known data, drawn independently of the
x_u(t) path at every step. When the coordinates are independent, p_t(x_u, x_k) =
p_t(x_u) p_t(x_k): the unknown score does not depend on x_k, the unknown coordinates
run the unconditional reverse SDE of p(x_u) = p(x_u | x_k), and the method is exactly
as good as unconditional sampling, at any number of steps. With correlations, what the
reverse process decides at high noise (for images: the low frequencies) is steered by
an x_k(t) that carries almost no information about the data, and p(x_u | x_k) is missed
— except for what the low-noise Langevin corrector repairs: at σ → 0, Langevin on x_u
with ∇_u log p(x_u, x_k = data) = ∇_u log p(x_u | data) targets the exact conditional,
but it only mixes the fast (high-frequency) directions within the steps it is given.
For Gaussians the exact answer is the Schur complement (`pds_jax.conditional_gaussian`);
docs/controllable.md measures the gap: with the predictor alone the replacement is
clearly biased on a 1/f² oracle, with the corrector and the full schedule the bias is
within sampling noise, and with 1/10 of the steps it returns.

Colorization works in a decoupled colour space y = x C with an orthonormal 3×3 C whose
first column is (1, 1, 1)/√3: y₀ = (R + G + B)/√3 = √3 · gray is known, y₁, y₂ are
generated; the replacement runs on y with m = (1, 0, 0), and x = y Cᵀ. Because C is
orthonormal, white noise stays white and p_t's kernel is the same in both spaces.

PDS (Ma et al., ECCV 2022): every score drift of the predictor and the corrector gets
P = M Mᵀ and every injected noise gets M (the predictor/corrector functions of
`pds_jax.samplers.pc` do it), and the prior sample is M·prior, exactly as in the
unconditional sampler; the replacement noise s(t) z is the forward kernel's and stays
white. With `precond=None` or `Preconditioner.identity` every step is the vanilla one.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from pds_jax import pds
from pds_jax.precond import Preconditioner
from pds_jax.samplers.common import check_shape
from pds_jax.samplers.pc import CORRECTORS, PREDICTORS, check_settings
from pds_jax.samplers.record import checked_score_fn
from pds_jax.sde import SDE, batch_mul

Array = jax.Array

__all__ = ["get_pc_inpainter", "get_pc_colorizer", "replacement_solve", "decoupling_matrix",
           "decouple", "couple"]


# --------------------------------------------------------------------------- #
# The decoupled colour space.
# --------------------------------------------------------------------------- #

def decoupling_matrix() -> np.ndarray:
    """The orthonormal C (3×3, float64) of y = x C: columns (1,1,1)/√3, (2,−1,−1)/√6, (0,1,−1)/√2.

    Any orthonormal completion of the first column works (score_sde uses another
    one); this one has a closed form, so C Cᵀ = I holds to rounding.
    """
    return np.stack([np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0),
                     np.array([2.0, -1.0, -1.0]) / np.sqrt(6.0),
                     np.array([0.0, 1.0, -1.0]) / np.sqrt(2.0)], axis=1)


def decouple(x: Array, mix: Optional[Array]) -> Array:
    """y = x C per pixel (NHWC); `mix=None` is the identity (inpainting)."""
    return x if mix is None else jnp.einsum("bhwi,ij->bhwj", x, mix)


def couple(y: Array, mix: Optional[Array]) -> Array:
    """x = y Cᵀ = y C⁻¹ (C orthonormal); `mix=None` is the identity."""
    return y if mix is None else jnp.einsum("bhwj,ij->bhwi", y, mix)


# --------------------------------------------------------------------------- #
# The jitted loop.
# --------------------------------------------------------------------------- #

def _replaced_update(update: Callable, rng, x, vec_t, sde: SDE, known_y, mask, mix):
    """One predictor or corrector update followed by score_sde's replacement (see module doc).

    Key discipline as score_sde: the update gets the second half of split(rng), the
    replacement noise the first.
    """
    rng, step_rng = jax.random.split(rng)
    x, _ = update(step_rng, x, vec_t)
    mean, std = sde.marginal_prob(known_y, vec_t)
    noisy = mean + batch_mul(std, jax.random.normal(rng, x.shape, x.dtype))
    y = decouple(x, mix) * (1.0 - mask) + noisy * mask
    y_mean = y * (1.0 - mask) + mean * mask  # score_sde: the noisy x on unknown coordinates
    return couple(y, mix), couple(y_mean, mix)


@functools.partial(jax.jit, static_argnames=("predictor", "corrector", "n_steps", "probability_flow",
                                             "denoise"))
def replacement_solve(rng: Array, score_fn, precond: Preconditioner, sde: SDE, data: Array, mask: Array,
                      mix: Optional[Array], eps: Array, snr: Array, *, predictor: str, corrector: str,
                      n_steps: int, probability_flow: bool, denoise: bool) -> Array:
    """The replacement PC loop (one `lax.fori_loop` over sde.N steps), jitted once per setting.

    Args:
      rng: PRNG key. score_fn: a `jax.tree_util.Partial` `score_fn(x, t)`.
      precond: the PDS preconditioner (identity for vanilla).
      sde: the SDE with the number of steps to run (static pytree).
      data: (B, H, W, C) known values in x-space (only the masked part matters).
      mask: broadcastable to (B, H, W, C), 1 = known, in the decoupled space y = x C.
      mix: C (C×C) or None (identity). eps: final time. snr: Langevin snr.
    Returns:
      (B, H, W, C): x_mean of the last predictor update when `denoise`, else x.
    """
    predictor_fn, corrector_fn = PREDICTORS[predictor], CORRECTORS[corrector]
    known_y = decouple(data, mix)
    rng, step_rng = jax.random.split(rng)
    prior = precond.M(sde.prior_sampling(step_rng, data.shape).astype(data.dtype))
    x = couple(known_y * mask + decouple(prior, mix) * (1.0 - mask), mix)
    timesteps = jnp.linspace(sde.T, eps, sde.N)

    def correct(key, x, t):
        return corrector_fn(key, x, t, sde, score_fn, precond, snr, n_steps)

    def predict(key, x, t):
        return predictor_fn(key, x, t, sde, score_fn, precond, probability_flow)

    def body(i, val):
        rng, x, x_mean = val
        vec_t = jnp.ones((x.shape[0],), x.dtype) * timesteps[i]
        rng, step_rng = jax.random.split(rng)
        x, x_mean = _replaced_update(correct, step_rng, x, vec_t, sde, known_y, mask, mix)
        rng, step_rng = jax.random.split(rng)
        x, x_mean = _replaced_update(predict, step_rng, x, vec_t, sde, known_y, mask, mix)
        return rng, x, x_mean

    _, x, x_mean = jax.lax.fori_loop(0, sde.N, body, (rng, x, x))
    return x_mean if denoise else x


# --------------------------------------------------------------------------- #
# Builders.
# --------------------------------------------------------------------------- #

def _check_pc_arguments(sde, shape, predictor, corrector, n_steps, probability_flow, precond, snr=0.16):
    check_settings(sde, predictor, corrector, n_steps, probability_flow, snr)  # the PC sampler's checks
    if precond is None:
        return Preconditioner.identity(shape[1:])
    if tuple(precond.shape) != shape[1:]:
        raise ValueError(f"preconditioner is for images of shape {precond.shape}, the batch is {shape[1:]}")
    return precond


def _check_array(name: str, x, shape) -> Array:
    x = jnp.asarray(x, jnp.float32)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)}; this sampler was built for {tuple(shape)} "
                         "(NHWC); build it with that shape")
    return x


@dataclasses.dataclass(frozen=True)
class ConditionalSampler:
    """A built inpainter / colorizer: `sampler(rng, score_fn, data, condition) -> samples`.

    Attributes: method ('inpaint' | 'colorize'), shape (NHWC), the schedule run
    (`setup`: a `pds_jax.pds.PDSSetup` with N, eps, α and the preconditioner), `nfe`
    (= N · (1 + n_steps)), `mix` (the colour decoupling matrix, or None), the static
    predictor/corrector settings. `describe()` is what run.json records.
    """

    method: str
    shape: Tuple[int, ...]
    setup: "pds.PDSSetup"
    nfe: int
    snr: float
    static: dict
    mix: Optional[np.ndarray] = None

    @property
    def num_steps(self) -> int:
        return self.setup.num_steps

    @property
    def eps(self) -> float:
        return self.setup.eps

    @property
    def sde(self) -> SDE:
        return self.setup.sde

    @property
    def precond(self) -> Preconditioner:
        return self.setup.precond

    @property
    def decoupling_matrix(self) -> Optional[np.ndarray]:
        return self.mix

    def solve(self, rng, score_fn, data, mask):
        mix = None if self.mix is None else jnp.asarray(self.mix, jnp.float32)
        return replacement_solve(rng, checked_score_fn(score_fn), self.precond, self.sde, data, mask, mix,
                                 jnp.asarray(self.eps, jnp.float32), jnp.asarray(self.snr, jnp.float32),
                                 **self.static)

    def describe(self) -> dict:
        info = {"method": self.method, "num_steps": int(self.num_steps), "nfe": int(self.nfe),
                "snr": float(self.snr), **self.static}
        info.update(self.setup.describe())
        return info


def _build(cls, method, sde, shape, predictor, corrector, snr, n_steps, probability_flow, denoise, eps,
           precond, speed_up, mix=None) -> ConditionalSampler:
    """The `ConditionalSampler` of both builders (schedule and filters from `pds_jax.pds`)."""
    shape = check_shape(shape)
    precond = _check_pc_arguments(sde, shape, predictor, corrector, n_steps, probability_flow, precond, snr)
    setup = pds.from_arguments(sde, shape[1:], speed_up=speed_up, eps=eps, precond=precond)
    static = dict(predictor=predictor, corrector=corrector, n_steps=int(n_steps),
                  probability_flow=bool(probability_flow), denoise=bool(denoise))
    evals = (predictor != "none") + (corrector != "none") * int(n_steps)
    return cls(method, shape, setup, setup.num_steps * evals, float(snr), static,
               None if mix is None else np.asarray(mix, np.float32))


@dataclasses.dataclass(frozen=True)
class Inpainter(ConditionalSampler):
    def __call__(self, rng, score_fn, data, mask):
        data = _check_array("data", data, self.shape)
        mask = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), self.shape)
        return self.solve(rng, score_fn, data, mask)


@dataclasses.dataclass(frozen=True)
class Colorizer(ConditionalSampler):
    def __call__(self, rng, score_fn, gray):
        gray = _check_array("gray", gray, self.shape)
        if not isinstance(gray, jax.core.Tracer):
            spread = float(jnp.max(jnp.abs(gray - jnp.mean(gray, axis=-1, keepdims=True))))
            if spread > 1e-5:
                raise ValueError(f"gray must have three equal channels (max channel spread {spread:.3g}); "
                                 "pass jnp.repeat(jnp.mean(rgb, -1, keepdims=True), 3, -1)")
        return self.solve(rng, score_fn, gray, jnp.asarray([1.0, 0.0, 0.0], jnp.float32))


def get_pc_inpainter(sde: SDE, shape: Sequence[int], predictor: str = "reverse_diffusion",
                     corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
                     probability_flow: bool = False, denoise: bool = True, eps: Optional[float] = None,
                     precond: Optional[Preconditioner] = None, speed_up: float = 1.0):
    """Build `inpainter(rng, score_fn, data, mask) -> samples` (score_sde's `get_pc_inpainter`).

    Args: as `pds_jax.samplers.pc.get_pc_sampler` (speed_up k: N → int(N/k), eps → eps·k;
    `precond` is the PDS preconditioner, None = vanilla). `shape` is the NHWC batch shape.

    The inpainter takes `data` (B, H, W, C) in the model's data space and `mask`
    (anything broadcastable to data's shape; 1 = known, 0 = to generate) and returns
    (B, H, W, C) samples from the replacement rule of the module docstring. It is an
    `Inpainter` record: `num_steps`, `eps`, `nfe` (= N · (1 + n_steps)), `sde`, `setup` and
    `describe()` give the schedule run.
    """
    return _build(Inpainter, "inpaint", sde, shape, predictor, corrector, snr, n_steps, probability_flow,
                  denoise, eps, precond, speed_up)


def get_pc_colorizer(sde: SDE, shape: Sequence[int], predictor: str = "reverse_diffusion",
                     corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
                     probability_flow: bool = False, denoise: bool = True, eps: Optional[float] = None,
                     precond: Optional[Preconditioner] = None, speed_up: float = 1.0):
    """Build `colorizer(rng, score_fn, gray) -> samples` (score_sde's `get_pc_colorizer`).

    `gray` is an RGB batch (B, H, W, 3) with three equal channels (a gray image repeated);
    in y = x C (`decoupling_matrix`) its channel y₀ = √3 gray is known and replaced after
    every update, y₁ and y₂ are generated. With `denoise` and a VE SDE the output's
    channel mean equals gray exactly (y₀ of x_mean is the data mean m(eps) y₀ = y₀).

    One deliberate difference from score_sde: its initial state masks the prior in RGB
    space before decoupling (`decouple(prior · (1 − m))`, which zeroes the red prior
    channel and leaves y₀ un-replaced until the first update); here x_T =
    couple(decouple(gray) m + decouple(M·prior)(1 − m)), the replacement rule itself.
    """
    shape = check_shape(shape)
    if shape[-1] != 3:
        raise ValueError(f"colorization needs RGB images (C = 3); the batch shape is {shape}")
    return _build(Colorizer, "colorize", sde, shape, predictor, corrector, snr, n_steps, probability_flow,
                  denoise, eps, precond, speed_up, mix=decoupling_matrix())
