"""Likelihoods through the probability-flow ODE against the Gaussian oracle's closed form.

Truth: for data N(μ, Σ) (Σ diagonal in the unitary DFT basis) and any linear SDE,
p_eps = N(m μ, m² Σ + s² I) (`likelihood.gaussian_logp`). The ODE replaces p_T by the
prior N(0, σ_max² I) (VE) / N(0, I) (VP); `likelihood.oracle_bpd` adds that exact
mismatch at the exact z = x(T), so the comparison is tight for any mean. With zero-mean
data the mismatch is below the tolerance and the raw p_eps is compared too.

The divergence integral has a closed form too: per Fourier mode, the PF-ODE Jacobian is
f + g²/(2v) = v′/(2v) with v = m² λ + s², so K = ∫_eps^T J dt has eigenvalues
k = ½ log(v(T) / v(eps)), and a Hutchinson estimate εᵀKε has variance 2Σk² (Gaussian)
and 2(Σk² − D·mean(k)²) (Rademacher: K is circulant, so K_ii = mean k).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from pds_jax import likelihood
from pds_jax.oracles import GaussianOracle
from pds_jax.sde import VESDE, VPSDE

KEY = jax.random.PRNGKey(0)
SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=50.0), "vp": VPSDE()}
EPS = 1e-5


def oracle_and_data(shape=(8, 8, 1), batch=8, mean=0.5, seed=1):
    oracle = GaussianOracle.natural_image(shape, mean=mean)
    return oracle, oracle.sample(jax.random.PRNGKey(seed), batch)


def divergence_integral_eigenvalues(oracle, sde):
    """k = ½ log(v(T) / v(eps)) per Fourier mode, in float64."""
    lam = np.asarray(oracle.spectrum, np.float64)
    (m0, s0), (m1, s1) = (np.float64(sde.marginal_coefficients(jnp.float32(t))) for t in (EPS, sde.T))
    return 0.5 * np.log((m1**2 * lam + s1**2) / (m0**2 * lam + s0**2))


# --------------------------------------------------------------------------- the truth itself


def test_gaussian_logp_matches_dense_multivariate_normal():
    """The spectral log-density equals scipy's on the dense covariance Uᴴ diag(v) U (float64)."""
    oracle, x = oracle_and_data((4, 4, 1), batch=3)
    m, s = 0.9, 0.3
    n = 4
    dft = np.fft.fft(np.eye(n), norm="ortho")
    unitary = np.kron(dft, dft)  # the 2-D unitary DFT on row-major (h, w) vectors
    v = (m**2 * np.asarray(oracle.spectrum, np.float64) + s**2).reshape(-1)
    cov = np.real(unitary.conj().T @ np.diag(v) @ unitary)
    mean = m * np.asarray(oracle.mean, np.float64).reshape(-1)
    flat = np.asarray(x, np.float64).reshape(3, -1)
    expected = stats.multivariate_normal(mean, cov).logpdf(flat)
    np.testing.assert_allclose(likelihood.gaussian_logp(oracle, x, m, s), expected, rtol=1e-5)


# --------------------------------------------------------------------------- exact trace


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_exact_trace_matches_closed_form(name):
    sde = SDES[name]
    oracle, x = oracle_and_data()
    bpd, z, nfe = likelihood.get_likelihood_fn(sde, hutchinson_type="exact")(KEY, oracle.score_fn(sde), x)
    true_bpd, with_prior = likelihood.oracle_bpd(oracle, sde, x, EPS)
    np.testing.assert_allclose(bpd, with_prior, atol=1e-3)
    np.testing.assert_allclose(z, oracle.ode_solution(x, EPS, sde.T, sde), rtol=1e-3, atol=1e-3)
    assert bpd.shape == (8,) and int(nfe) % 6 == 2 and 20 < int(nfe) < 400
    # The prior mismatch is real for a mean-0.5 oracle (≈ μ·Σz/σ_max² for VE) and is what is corrected.
    if name == "ve":
        assert float(jnp.max(jnp.abs(true_bpd - with_prior))) > 1e-3


def test_zero_mean_data_needs_no_prior_correction():
    sde = SDES["ve"]
    oracle, x = oracle_and_data(mean=0.0)
    bpd, _, _ = likelihood.get_likelihood_fn(sde, hutchinson_type="exact")(KEY, oracle.score_fn(sde), x)
    np.testing.assert_allclose(bpd, likelihood.oracle_bpd(oracle, sde, x, EPS)[0], atol=1e-3)


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_solver_takes_scipy_rk45_steps(name):
    """score_sde's own route, scipy's solve_ivp(RK45) on the same flat state and right-hand
    side, uses the same number of evaluations and gives the same bits/dim."""
    sde = SDES[name]
    oracle, x = oracle_and_data()
    score_fn = oracle.score_fn(sde)
    bpd, _, nfe = likelihood.get_likelihood_fn(sde, hutchinson_type="exact")(KEY, score_fn, x)

    @jax.jit
    def rhs(state, t):
        y = state[:x.size].reshape(x.shape)
        drift, div = likelihood._exact_div(lambda v: likelihood._pf_drift(sde, score_fn, v, t), y, 64)
        return jnp.concatenate([drift.reshape(-1), div])

    state0 = np.concatenate([np.asarray(x, np.float64).reshape(-1), np.zeros(x.shape[0])])
    fun = lambda t, s: np.asarray(rhs(jnp.asarray(s, jnp.float32), jnp.float32(t)), np.float64)
    sol = integrate.solve_ivp(fun, (EPS, sde.T), state0, rtol=1e-5, atol=1e-5, method="RK45")
    end = sol.y[:, -1]
    z = jnp.asarray(end[:x.size].reshape(x.shape), jnp.float32)
    scipy_bpd = -(np.asarray(sde.prior_logp(z)) + end[x.size:]) / (x[0].size * np.log(2.0)) + 8.0
    assert int(nfe) == sol.nfev
    np.testing.assert_allclose(bpd, scipy_bpd, atol=2e-5)


# --------------------------------------------------------------------------- Hutchinson


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_the_closed_form_variance(kind):
    """Over 256 rows (one probe each) the bpd error has mean 0 (3 s.e.) and variance 2Σk²-type."""
    sde = SDES["ve"]
    oracle, x = oracle_and_data(batch=256)
    score_fn = oracle.score_fn(sde)
    exact, _, _ = likelihood.get_likelihood_fn(sde, hutchinson_type="exact")(KEY, score_fn, x)
    estimate, _, _ = likelihood.get_likelihood_fn(sde, hutchinson_type=kind)(KEY, score_fn, x)
    err = np.asarray(estimate - exact, np.float64)
    standard_error = err.std(ddof=1) / math.sqrt(err.size)
    assert abs(err.mean()) < 3 * standard_error, (err.mean(), standard_error)
    k = divergence_integral_eigenvalues(oracle, sde)
    var = 2 * (np.sum(k**2) - (k.size * k.mean() ** 2 if kind == "rademacher" else 0.0))
    var_bpd = var / (k.size * np.log(2.0)) ** 2
    assert 0.6 < err.var(ddof=1) / var_bpd < 1.6, (err.var(ddof=1), var_bpd)


# --------------------------------------------------------------------------- offset, arguments, jit


def test_offset_follows_the_inverse_scaler():
    assert likelihood.bpd_offset(None) == 8.0
    assert likelihood.bpd_offset(lambda u: u) == 8.0
    assert likelihood.bpd_offset(lambda u: (u + 1.0) / 2.0) == pytest.approx(7.0)  # [−1, 1] data
    assert likelihood.bpd_offset(lambda u: u / 4.0 + 0.5) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="inverse_scaler must be increasing"):
        likelihood.bpd_offset(lambda u: -u)
    sde = SDES["vp"]
    oracle, x = oracle_and_data(batch=2)
    fns = [likelihood.get_likelihood_fn(sde, s, "exact") for s in (None, lambda u: (u + 1.0) / 2.0)]
    assert fns[1].offset == pytest.approx(7.0)
    plain, centred = (fn(KEY, oracle.score_fn(sde), x)[0] for fn in fns)
    np.testing.assert_allclose(plain - centred, 1.0, atol=1e-5)


def test_argument_errors_name_the_argument():
    sde = SDES["ve"]
    with pytest.raises(ValueError, match="hutchinson_type"):
        likelihood.get_likelihood_fn(sde, hutchinson_type="normal")
    with pytest.raises(ValueError, match="eps"):
        likelihood.get_likelihood_fn(sde, eps=1.0)
    with pytest.raises(ValueError, match="rtol and atol"):
        likelihood.get_likelihood_fn(sde, rtol=0.0)
    oracle, x = oracle_and_data(batch=2)
    with pytest.raises(ValueError, match=r"x must be a float NHWC batch"):
        likelihood.get_likelihood_fn(sde)(KEY, oracle.score_fn(sde), x[0])


def test_exhausted_step_budget_gives_nan_and_new_parameters_do_not_recompile():
    sde = SDES["ve"]
    oracle, x = oracle_and_data(batch=2)
    bpd, _, nfe = likelihood.get_likelihood_fn(sde, max_steps=1)(KEY, oracle.score_fn(sde), x)
    assert np.all(np.isnan(bpd)) and int(nfe) == 8
    fn = likelihood.get_likelihood_fn(sde)
    fn(KEY, oracle.score_fn(sde), x)
    size = likelihood._solve_logp._cache_size()
    other = GaussianOracle(oracle.mean + 0.1, oracle.spectrum * 2.0)  # new leaves, same structure
    fn(KEY, other.score_fn(sde), x)
    assert likelihood._solve_logp._cache_size() == size
