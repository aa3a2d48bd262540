"""Inpainting and colorization by replacement (vanilla and PDS) against exact Gaussian conditionals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pds_jax import conditional_gaussian as cg
from pds_jax.controllable import (couple, decouple, decoupling_matrix, get_pc_colorizer,
                                  get_pc_inpainter)
from pds_jax.oracles import GaussianOracle, _spectral_multiply
from pds_jax.precond import Preconditioner
from pds_jax.sde import VESDE

SHAPE = (8, 8, 1)
VE = VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
N_SAMPLES = 2000
# Std of the KL-per-dimension estimate of a 16-d full-covariance fit from 2000 exact
# samples (measured over 30 seeds: floor 0.0025 ± 0.00023).
KL_NOISE = 2.5e-4


def box_mask(shape=SHAPE):
    mask = np.ones(shape, np.float32)
    h, w = shape[0], shape[1]
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 0.0
    return mask


@pytest.fixture(scope="module")
def natural():
    oracle = GaussianOracle.natural_image(SHAPE)
    data = np.asarray(oracle.sample(jax.random.PRNGKey(0), 1))[0]
    return oracle, data


def _inpaint(oracle, data, mask, n=N_SAMPLES, key=1, **kw):
    inpainter = get_pc_inpainter(VE, (n,) + oracle.shape, **kw)
    batch = np.broadcast_to(data, (n,) + oracle.shape)
    return np.asarray(inpainter(jax.random.PRNGKey(key), oracle.score_fn(VE), batch, mask))


def _floor(oracle, data, mask, n=N_SAMPLES):
    """KL per dimension of the fit to n EXACT conditional samples (the estimator's bias)."""
    mean, cov, unknown = cg.conditional_gaussian(oracle, data, mask)
    full = np.tile(data.reshape(1, -1), (n, 1))
    full[:, unknown] = np.random.default_rng(0).multivariate_normal(mean, cov, size=n)
    return cg.kl_per_dimension(full.reshape((n,) + oracle.shape), oracle, data, mask)


# --------------------------------------------------------------------------- the exact conditional


def test_covariance_matrix_is_the_oracle_operator(natural):
    oracle, _ = natural
    shape = (4, 6, 2)
    lam = np.asarray(GaussianOracle.natural_image(shape).spectrum) * np.array([1.0, 3.0])
    two = GaussianOracle(jnp.zeros(shape), jnp.asarray(lam, jnp.float32))
    v = np.random.default_rng(0).standard_normal((3,) + shape)
    expected = np.asarray(_spectral_multiply(jnp.asarray(v, jnp.float32), two.spectrum)).reshape(3, -1)
    np.testing.assert_allclose(v.reshape(3, -1) @ cg.covariance_matrix(two).T, expected, atol=1e-5)


def test_schur_complement_matches_the_precision_form(natural):
    """x_u | x_k ~ N(μ_u − Q_uu⁻¹ Q_uk (d − μ_k), Q_uu⁻¹) with Q = Σ⁻¹ = Uᴴ diag(1/λ) U."""
    oracle, data = natural
    mask = box_mask()
    mean, cov, unknown = cg.conditional_gaussian(oracle, data, mask)
    D = int(np.prod(SHAPE))
    basis = jnp.eye(D, dtype=jnp.float32).reshape((D,) + SHAPE)
    Q = np.asarray(_spectral_multiply(basis, 1.0 / oracle.spectrum), np.float64).reshape(D, D)
    known = np.flatnonzero(mask.ravel() > 0.5)
    Q_uu, Q_uk = Q[np.ix_(unknown, unknown)], Q[np.ix_(unknown, known)]
    mu = np.asarray(oracle.mean, np.float64).ravel()
    np.testing.assert_allclose(cov, np.linalg.inv(Q_uu), rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(
        mean, mu[unknown] - np.linalg.solve(Q_uu, Q_uk @ (data.ravel()[known] - mu[known])), atol=2e-5)


def test_gaussian_kl_closed_forms():
    assert cg.gaussian_kl([0.0], [[1.0]], [0.0], [[1.0]]) == pytest.approx(0.0, abs=1e-12)
    # 1-d: ½(s0²/s1² + (m1 − m0)²/s1² − 1 + log(s1²/s0²))
    assert cg.gaussian_kl([1.0], [[2.0]], [0.0], [[4.0]]) == pytest.approx(
        0.5 * (0.5 + 0.25 - 1 + np.log(2.0)))


# --------------------------------------------------------------------------- truth on the oracles


def test_independent_pixels_replacement_is_exact():
    """Flat spectrum: the masked pixels' law given the rest is their marginal N(0.3, 0.5²)."""
    oracle = GaussianOracle.isotropic(SHAPE, std=0.5, mean=0.3)
    data = np.asarray(oracle.sample(jax.random.PRNGKey(0), 1))[0]
    mask = box_mask()
    mean, cov, unknown = cg.conditional_gaussian(oracle, data, mask)
    np.testing.assert_allclose(mean, 0.3, atol=1e-6)
    np.testing.assert_allclose(cov, 0.25 * np.eye(unknown.size), atol=1e-6)
    n = 1000
    x = _inpaint(oracle, data, mask, n=n).reshape(n, -1)
    masked = x[:, unknown]
    # Per pixel: the mean within 4 standard errors. The variance ratio averaged over the
    # 16 masked pixels: its standard error is √(2/n)/4 ≈ 0.011, and the unconditional PC
    # sampler itself is 1-3% high on this oracle at N = 1000 (discretisation, snr 0.16).
    assert np.max(np.abs(masked.mean(0) - 0.3)) < 4 * 0.5 / np.sqrt(n)
    assert abs(np.mean(masked.var(0)) / 0.25 - 1) < 4 * np.sqrt(2 / n) / 4 + 0.03
    known = mask.ravel() > 0.5
    np.testing.assert_array_equal(x[:, known], np.broadcast_to(data.ravel()[known], (n, known.sum())))


def test_replacement_is_not_exact_for_correlated_pixels(natural):
    """The 1/f² oracle with the predictor alone (no corrector to repair it) at the full N:
    the fit is > 3x farther from the Schur-complement conditional than exact samples,
    while for independent pixels the same sampler sits at the estimator's floor."""
    oracle, data = natural
    mask = box_mask()
    kl = cg.kl_per_dimension(_inpaint(oracle, data, mask, corrector="none"), oracle, data, mask)
    assert kl > 3 * _floor(oracle, data, mask)

    flat = GaussianOracle.isotropic(SHAPE, std=0.25, mean=0.5)
    flat_data = np.asarray(flat.sample(jax.random.PRNGKey(0), 1))[0]
    kl_flat = cg.kl_per_dimension(_inpaint(flat, flat_data, mask, corrector="none"), flat, flat_data, mask)
    assert kl_flat < _floor(flat, flat_data, mask) + 4 * KL_NOISE


def test_pds_at_a_tenth_of_the_steps_is_no_farther_than_vanilla(natural):
    """Vanilla vs PDS (filters from the oracle's own statistics, α = 5), N/10 = 100 steps."""
    oracle, data = natural
    mask = box_mask()
    pds = Preconditioner.from_arrays(*oracle.filter_statistics(), alpha=5.0)
    vanilla = cg.kl_per_dimension(_inpaint(oracle, data, mask, speed_up=10), oracle, data, mask)
    precond = cg.kl_per_dimension(_inpaint(oracle, data, mask, speed_up=10, precond=pds), oracle, data, mask)
    assert precond <= vanilla + 3 * KL_NOISE
    assert precond < 3 * _floor(oracle, data, mask)  # and close to the truth in absolute terms


# --------------------------------------------------------------------------- identities


def test_identity_preconditioner_is_bitwise_vanilla(natural):
    oracle, data = natural
    mask = box_mask()
    kw = dict(n=16, speed_up=50)
    x0 = _inpaint(oracle, data, mask, **kw)
    x1 = _inpaint(oracle, data, mask, precond=Preconditioner.identity(SHAPE), **kw)
    np.testing.assert_array_equal(x0, x1)
    ones = Preconditioner.from_filters(np.ones(SHAPE), np.ones(SHAPE))
    np.testing.assert_allclose(_inpaint(oracle, data, mask, precond=ones, **kw), x0, atol=1e-4)
    # A real preconditioner changes the unknown pixels only.
    pds = Preconditioner.from_arrays(*oracle.filter_statistics(), alpha=5.0)
    x2 = _inpaint(oracle, data, mask, precond=pds, **kw)
    known = np.broadcast_to(mask > 0.5, x0.shape)
    np.testing.assert_array_equal(x2[known], x0[known])
    assert not np.allclose(x2[~known], x0[~known])


def test_known_pixels_hold_the_data_and_a_full_mask_returns_it(natural):
    oracle, data = natural
    n = 16
    batch = np.asarray(oracle.sample(jax.random.PRNGKey(3), n))
    out = np.asarray(get_pc_inpainter(VE, (n,) + SHAPE, speed_up=50)(
        jax.random.PRNGKey(0), oracle.score_fn(VE), batch, np.ones(SHAPE)))
    np.testing.assert_array_equal(out, batch)  # VE: m(t) = 1, x_mean = data on known pixels
    # Without denoising the known pixels carry the forward noise σ(eps) z of the last step.
    noisy = get_pc_inpainter(VE, (n,) + SHAPE, speed_up=50, denoise=False)
    out = np.asarray(noisy(jax.random.PRNGKey(0), oracle.score_fn(VE), batch, box_mask()))
    diff = (out - batch)[np.broadcast_to(box_mask() > 0.5, out.shape)]
    sigma_eps = float(VE.sigma(noisy.eps))
    assert 0.5 * sigma_eps < diff.std() < 2 * sigma_eps
    assert noisy.num_steps == 20 and noisy.nfe == 40 and noisy.eps == pytest.approx(50 * VE.default_eps)


def test_bad_arguments_raise_clear_errors(natural):
    oracle, data = natural
    with pytest.raises(ValueError, match="predictor"):
        get_pc_inpainter(VE, (2,) + SHAPE, predictor="heun")
    inpainter = get_pc_inpainter(VE, (2,) + SHAPE, speed_up=100)
    with pytest.raises(ValueError, match="data has shape"):
        inpainter(jax.random.PRNGKey(0), oracle.score_fn(VE), data[None], box_mask())
    with pytest.raises(ValueError, match="C = 3"):
        get_pc_colorizer(VE, (2,) + SHAPE)
    with pytest.raises(ValueError, match="preconditioner"):
        get_pc_inpainter(VE, (2, 4, 4, 1), precond=Preconditioner.identity(SHAPE))


# --------------------------------------------------------------------------- colorization


def test_decoupling_matrix_is_orthonormal_with_the_gray_axis_first():
    C = decoupling_matrix()
    np.testing.assert_allclose(C.T @ C, np.eye(3), atol=1e-15)
    np.testing.assert_allclose(C[:, 0], np.ones(3) / np.sqrt(3.0), atol=1e-15)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 3, 3)), jnp.float32)
    mix = jnp.asarray(C, jnp.float32)
    np.testing.assert_allclose(couple(decouple(x, mix), mix), x, atol=1e-6)
    np.testing.assert_allclose(decouple(x, mix)[..., 0], x.sum(-1) / np.sqrt(3.0), atol=1e-6)


def test_colorizer_keeps_the_gray_channel():
    """A 3-channel oracle with independent channels: y₀ = √3 gray is kept, y₁, y₂ are generated."""
    shape = (8, 8, 3)
    oracle = GaussianOracle.natural_image(shape)
    n = 32
    rgb = np.asarray(oracle.sample(jax.random.PRNGKey(0), n))
    gray = np.repeat(rgb.mean(-1, keepdims=True), 3, axis=-1)
    precond = Preconditioner.from_arrays(*oracle.filter_statistics(), alpha=5.0)
    colorizer = get_pc_colorizer(VE, (n,) + shape, speed_up=10, precond=precond)
    out = np.asarray(colorizer(jax.random.PRNGKey(1), oracle.score_fn(VE), gray))
    np.testing.assert_allclose(out.mean(-1), gray[..., 0], atol=2e-6)  # denoise: exactly the gray
    # Colour was generated: per pixel, y₁ and y₂ have the channel variance 0.25² (C orthonormal,
    # channels i.i.d.), so the chroma x − mean_c x has std 0.25·√(2/3) ≈ 0.20.
    chroma = out - out.mean(-1, keepdims=True)
    assert 0.15 < chroma.std() < 0.25
    noisy = get_pc_colorizer(VE, (n,) + shape, speed_up=10, denoise=False)
    out = np.asarray(noisy(jax.random.PRNGKey(1), oracle.score_fn(VE), gray))
    err = out.mean(-1) - gray[..., 0]  # the y₀ noise σ(eps) z, divided by √3 in the channel mean
    assert 0 < err.std() < 2 * float(VE.sigma(noisy.eps)) / np.sqrt(3.0)
    with pytest.raises(ValueError, match="three equal channels"):
        colorizer(jax.random.PRNGKey(1), oracle.score_fn(VE), rgb)
