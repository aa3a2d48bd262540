"""SDEs: score_sde semantics, checked against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pds_jax.sde import VESDE, VPSDE, batch_mul, subVPSDE


def test_ve_sigma_schedule_and_discrete_grid():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0, N=10)
    np.testing.assert_allclose(sde.discrete_sigmas, np.geomspace(0.01, 50.0, 10), rtol=1e-5)
    t = jnp.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(sde.sigma(t), [0.01, np.sqrt(0.01 * 50.0), 50.0], rtol=1e-5)
    np.testing.assert_allclose(sde.t_of_sigma(sde.sigma(t)), t, atol=1e-6)


def test_ve_smld_discretisation():
    """G_i = sqrt(σ_i² − σ_{i−1}²), σ_{−1} = 0, f = 0 (docs/design.md §2)."""
    sde = VESDE(sigma_min=0.01, sigma_max=50.0, N=10)
    sig = np.geomspace(0.01, 50.0, 10)
    x = jnp.ones((3, 2, 2, 1))
    t = jnp.array([1.0, 5.0 / 9.0, 0.0])  # indices 9, 5, 0
    f, G = sde.discretize(x, t)
    np.testing.assert_array_equal(f, 0.0)
    expected = [np.sqrt(sig[9] ** 2 - sig[8] ** 2), np.sqrt(sig[5] ** 2 - sig[4] ** 2), sig[0]]
    np.testing.assert_allclose(G, expected, rtol=1e-4)


def test_ve_diffusion_matches_derivative_of_variance():
    """g(t)² = d σ(t)² / dt for the VE SDE."""
    sde = VESDE(0.01, 50.0)
    t = jnp.array([0.1, 0.7])
    _, g = sde.sde(jnp.zeros((2, 1, 1, 1)), t)
    dvar = jax.vmap(jax.grad(lambda s: sde.sigma(s) ** 2))(t)
    np.testing.assert_allclose(g**2, dvar, rtol=1e-4)


@pytest.mark.parametrize("cls", [VPSDE, subVPSDE])
def test_vp_marginals_solve_the_moment_odes(cls):
    """m' = f m and (s²)' = 2 f s² + g² with f = −β/2 (linear SDE moment equations)."""
    sde = cls()
    t = jnp.array([0.05, 0.3, 0.8])
    m = lambda s: sde.marginal_coefficients(s)[0]
    v = lambda s: sde.marginal_coefficients(s)[1] ** 2
    dm = jax.vmap(jax.grad(m))(t)
    dv = jax.vmap(jax.grad(v))(t)
    _, g = sde.sde(jnp.zeros((3, 1, 1, 1)), t)
    f = -0.5 * sde.beta(t)
    np.testing.assert_allclose(dm, f * m(t), rtol=1e-4)
    np.testing.assert_allclose(dv, 2 * f * v(t) + g**2, rtol=1e-3)


def test_vp_ddpm_tables():
    sde = VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    betas = np.linspace(0.1 / 1000, 20.0 / 1000, 1000)
    np.testing.assert_allclose(sde.discrete_betas, betas, rtol=1e-5)
    np.testing.assert_allclose(sde.alphas_cumprod, np.cumprod(1 - betas), rtol=1e-4)
    x = jnp.full((1, 2, 2, 1), 2.0)
    f, G = sde.discretize(x, jnp.array([1.0]))
    np.testing.assert_allclose(f, (np.sqrt(1 - betas[-1]) - 1) * 2.0, rtol=1e-5)
    np.testing.assert_allclose(G, np.sqrt(betas[-1]), rtol=1e-5)


def test_reverse_sde_and_probability_flow():
    sde = VPSDE()
    score_fn = lambda x, t: -x  # score of N(0, I)
    x = jnp.ones((2, 2, 2, 1))
    t = jnp.array([0.5, 0.5])
    drift, g = sde.sde(x, t)
    rdrift, rg = sde.reverse(score_fn).sde(x, t)
    np.testing.assert_allclose(rdrift, drift - batch_mul(g**2, -x), rtol=1e-6)
    np.testing.assert_allclose(rg, g)
    pdrift, pg = sde.reverse(score_fn, probability_flow=True).sde(x, t)
    np.testing.assert_allclose(pdrift, drift - 0.5 * batch_mul(g**2, -x), rtol=1e-6)
    np.testing.assert_array_equal(pg, 0.0)


def test_continuous_labels_follow_score_sde():
    t = jnp.array([0.25, 1.0])
    np.testing.assert_allclose(VESDE(0.01, 50.0).continuous_label(t), VESDE(0.01, 50.0).sigma(t))
    np.testing.assert_allclose(VPSDE().continuous_label(t), 999.0 * t)


def test_prior_sampling_scale_and_logp():
    sde = VESDE(0.01, 50.0)
    z = sde.prior_sampling(jax.random.PRNGKey(0), (64, 8, 8, 1))
    assert abs(float(jnp.std(z)) - 50.0) < 2.0
    # log N(0, σ² I) at 0 is −d/2 log(2πσ²)
    np.testing.assert_allclose(sde.prior_logp(jnp.zeros((1, 2, 2, 1))), -2 * np.log(2 * np.pi * 2500.0), rtol=1e-6)


def test_sdes_are_hashable_jit_friendly_and_validated():
    sde = VESDE(0.01, 50.0, N=10)
    assert hash(sde) == hash(VESDE(0.01, 50.0, N=10))
    assert jax.tree_util.tree_leaves((sde, VPSDE(), subVPSDE())) == []  # every parameter is static
    out = jax.jit(lambda s, x: s.marginal_prob(x, jnp.ones(x.shape[0]))[1])(sde, jnp.ones((2, 1, 1, 1)))
    np.testing.assert_allclose(out, 50.0, rtol=1e-5)
    assert sde.with_steps(5).N == 5 and sde.N == 10
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="N must be a positive integer"):
        VPSDE(N=0)


@pytest.mark.parametrize("sde", [VESDE(0.01, 50.0), VPSDE(), subVPSDE()], ids=["ve", "vp", "subvp"])
def test_float64_schedule_matches_sde_and_inverts(sde):
    t = np.linspace(1e-3, 1.0, 50)
    mean, std = sde.marginal_coefficients(jnp.asarray(t, jnp.float32))
    np.testing.assert_allclose(sde.np_alpha(t), mean, rtol=2e-5)
    # Loose: the jnp std of VP / sub-VP is 1 − e^{2c} in float32 (cancellation near t = 0).
    np.testing.assert_allclose(sde.np_std(t), std, rtol=3e-4, atol=1e-7)
    np.testing.assert_allclose(sde.np_rho(t), sde.np_std(t) / sde.np_alpha(t), rtol=1e-12)
    np.testing.assert_allclose(sde.np_t_of_rho(sde.np_rho(t)), t, rtol=1e-10)


def test_network_conventions_follow_score_sde():
    """score_sde's labels: VE σ(t) / round((T − t)(N − 1)); VP 999 t / t (N − 1); sub-VP always 999 t."""
    t = jnp.array([0.0, 0.25, 1.0])
    ve, vp, subvp = VESDE(0.01, 50.0, N=11), VPSDE(N=11), subVPSDE(N=11)
    np.testing.assert_array_equal(ve.discrete_label(t), [10, 8, 0])
    np.testing.assert_allclose(vp.discrete_label(t), [0.0, 2.5, 10.0])
    np.testing.assert_allclose(subvp.discrete_label(t), subvp.continuous_label(t))
    out = jnp.ones((3, 2, 2, 1))
    np.testing.assert_array_equal(ve.score_from_output(out, t, ve.discrete_label(t), False), out)
    # VP networks predict ε = −s · score.
    std = np.sqrt(1.0 - np.cumprod(1.0 - np.linspace(0.1 / 11, 20.0 / 11, 11)))[[0, 2, 10]]
    np.testing.assert_allclose(vp.score_from_output(out, t, vp.discrete_label(t), False)[:, 0, 0, 0], -1.0 / std,
                               rtol=1e-5)
    t = jnp.array([0.3, 0.6, 0.9])
    for sde in (vp, subvp):
        np.testing.assert_allclose(sde.score_from_output(out, t, None, True)[:, 0, 0, 0],
                                   -1.0 / sde.np_std(np.asarray(t, np.float64)), rtol=1e-4)


def test_langevin_scale_and_ancestral_support():
    t = jnp.array([1.0, 0.5])
    np.testing.assert_array_equal(VESDE().langevin_alpha(t), 1.0)
    vp = VPSDE(N=5)
    np.testing.assert_allclose(vp.langevin_alpha(t), 1.0 - np.linspace(0.1 / 5, 20.0 / 5, 5)[[4, 2]], rtol=1e-6)
    assert VESDE().supports_ancestral_sampling and VPSDE().supports_ancestral_sampling
    assert not subVPSDE().supports_ancestral_sampling
    x = jnp.ones((2, 2, 2, 1))
    with pytest.raises(ValueError, match="ancestral_sampling"):
        subVPSDE().ancestral_step(x, t, x, x)
