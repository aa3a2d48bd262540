"""The Gaussian oracle against dense linear algebra (independent of its FFT formulas)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pds_jax.oracles import GaussianOracle
from pds_jax.sde import VESDE, VPSDE, subVPSDE

jax.config.update("jax_enable_x64", False)


def _dense_covariance(oracle):
    """Σ = Uᴴ diag(λ) U built from the explicit unitary DFT matrix (one channel)."""
    H, W, _ = oracle.shape
    Fh = np.fft.fft(np.eye(H), norm="ortho")
    Fw = np.fft.fft(np.eye(W), norm="ortho")
    U = np.kron(Fh, Fw)  # row-major (h, w) flattening
    lam = np.asarray(oracle.spectrum, np.float64)[..., 0].reshape(-1)
    cov = U.conj().T @ np.diag(lam) @ U
    assert np.abs(cov.imag).max() < 1e-10
    return cov.real


@pytest.fixture(scope="module")
def oracle():
    return GaussianOracle.natural_image((4, 6, 1), gamma=2.0, pixel_std=0.3, mean=0.5)


@pytest.mark.parametrize("sde", [VESDE(0.01, 50.0), VPSDE(), subVPSDE()], ids=type)
def test_score_equals_gradient_of_dense_gaussian_log_density(oracle, sde):
    cov = _dense_covariance(oracle)
    mu = np.asarray(oracle.mean, np.float64).reshape(-1)
    t = jnp.array([0.02, 0.4, 0.9])
    m, s = (np.asarray(a, np.float64) for a in sde.marginal_coefficients(t))
    x = np.random.default_rng(0).normal(0.5, 1.0, size=(3,) + oracle.shape)
    got = np.asarray(oracle.score_fn(sde)(jnp.asarray(x, jnp.float32), t))
    for b in range(3):
        cov_t = m[b] ** 2 * cov + s[b] ** 2 * np.eye(cov.shape[0])
        ref = -np.linalg.solve(cov_t, x[b].reshape(-1) - m[b] * mu)
        np.testing.assert_allclose(got[b].reshape(-1), ref, rtol=2e-4, atol=2e-4 * np.abs(ref).max())


def test_samples_have_the_oracle_mean_and_covariance(oracle):
    x = np.asarray(oracle.sample(jax.random.PRNGKey(0), 20000), np.float64).reshape(20000, -1)
    np.testing.assert_allclose(x.mean(0), 0.5, atol=0.01)
    np.testing.assert_allclose(np.cov(x, rowvar=False), _dense_covariance(oracle), atol=0.004)


@pytest.mark.parametrize("sde", [VESDE(0.01, 50.0), VPSDE()], ids=type)
def test_ode_solution_solves_the_probability_flow_ode(oracle, sde):
    """d/dt x(t) = f(x, t) − ½ g(t)² ∇log p_t(x(t)) along the exact flow map."""
    x0 = oracle.sample(jax.random.PRNGKey(1), 2)
    t0 = 0.3

    def path(t):
        return oracle.ode_solution(x0, t0, t, sde)

    for t in (0.35, 0.6):
        x_t, dx = jax.jvp(path, (jnp.float32(t),), (jnp.float32(1.0),))
        drift = sde.reverse(oracle.score_fn(sde), probability_flow=True).sde(x_t, jnp.full((2,), t))[0]
        np.testing.assert_allclose(dx, drift, rtol=2e-3, atol=2e-3 * float(jnp.abs(drift).max()))
    np.testing.assert_allclose(path(jnp.float32(t0)), x0, atol=1e-5)


def test_filter_statistics_match_empirical_statistics(oracle):
    x = np.asarray(oracle.sample(jax.random.PRNGKey(2), 20000), np.float64)
    R_emp = np.log1p(np.mean(np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2, axis=0))
    A_emp = np.mean(x**2, axis=0)
    R, A = oracle.filter_statistics()
    np.testing.assert_allclose(R, R_emp, atol=0.03)
    np.testing.assert_allclose(A, A_emp, rtol=0.02)


def test_invalid_spectra_are_refused():
    with pytest.raises(ValueError, match="> 0"):
        GaussianOracle(jnp.zeros((4, 4, 1)), jnp.zeros((4, 4, 1)))
    asym = np.ones((4, 4, 1), np.float32)
    asym[0, 1] = 2.0
    with pytest.raises(ValueError, match="Hermitian-symmetric"):
        GaussianOracle(jnp.zeros((4, 4, 1)), jnp.asarray(asym))
