"""DEIS samplers on the Gaussian oracle (exact ε, exact probability-flow ODE solution).

Reading guide: the coefficient tests pin the tables to independent references (scipy
quadrature of the DEIS paper's integrals, exact polynomial integrals); the sampler
tests compare the final samples with the oracle's exact ODE map from the same x_T.
"""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from pds_jax.oracles import GaussianOracle
from pds_jax.precond import Preconditioner
from pds_jax.samplers import deis, ei_tables, grids, ode
from pds_jax.sde import VESDE, VPSDE, subVPSDE

KEY = jax.random.PRNGKey(0)
TOY_VE = VESDE(sigma_min=0.01, sigma_max=50.0)  # docs/design.md §5 toy problem: σ ∈ [0.01, 50]


def rmse(a, b):
    return float(jnp.sqrt(jnp.mean((a - b) ** 2)))


def exact_ode_solution(oracle, sde, shape, eps, rng=KEY):
    """The oracle's PF-ODE map applied to the sampler's own x_T (same key discipline)."""
    x_T = sde.prior_sampling(jax.random.split(rng)[1], shape)
    return oracle.ode_solution(x_T, sde.T, eps, sde)


def lagrange(nodes, j, x):
    out = 1.0
    for m, node in enumerate(nodes):
        if m != j:
            out *= (x - node) / (nodes[j] - node)
    return out


# --------------------------------------------------------------------------- #
# Coefficient tables.
# --------------------------------------------------------------------------- #

def test_order0_tab_is_euler_in_sigma():
    ts = grids.time_grid(TOY_VE, 12, "rho", eps=0.0)
    tables = deis.tab_coefficients(TOY_VE, ts, order=0)
    sigmas = TOY_VE.np_std(ts)
    np.testing.assert_allclose(tables.eps_coef[:, 0], np.diff(sigmas), rtol=1e-13)
    np.testing.assert_array_equal(tables.x_coef, 1.0)
    np.testing.assert_allclose(tables.std, sigmas[:-1], rtol=1e-15)

    shape = (4, 8, 8, 1)
    score_fn = GaussianOracle.isotropic(shape[1:], 0.5).score_fn(TOY_VE)
    x_deis, nfe_deis = deis.get_deis_sampler(TOY_VE, shape, 12, "tab", order=0, eps=0.0)(KEY, score_fn)
    x_euler, nfe_euler = ode.get_ode_sampler(TOY_VE, shape, "euler", 12, eps=0.0)(KEY, score_fn)
    assert nfe_deis == nfe_euler == 12
    np.testing.assert_allclose(x_deis, x_euler, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grid", ["rho", "t", "quad"])
@pytest.mark.parametrize("num_steps", [1, 3, 10, 60])
def test_ve_tab_closed_form_equals_quadrature(grid, num_steps):
    ts = grids.time_grid(TOY_VE, num_steps, grid, eps=0.0)
    closed = deis.tab_coefficients_ve(TOY_VE, ts, order=3).eps_coef
    quad = deis.tab_coefficients_quadrature(TOY_VE, ts, order=3, num_nodes=24).eps_coef
    scale = np.abs(quad).max(axis=1, keepdims=True)
    np.testing.assert_allclose(closed / scale, quad / scale, rtol=0, atol=1e-12)


def test_exp_moments_series_and_recursion_agree_with_quadrature():
    for h in [-8.0, -1.5, -1.0, -0.3, -1e-3, 1e-3, 0.7, 2.0]:
        expected = [integrate.quad(lambda w: np.exp(h * w) * w**k, 0, 1, epsabs=0, epsrel=1e-13)[0]
                    for k in range(4)]
        np.testing.assert_allclose(ei_tables.exp_moments(h, 3), expected, rtol=1e-12)


def _paper_tab_coefficients(ts, alphabar, dlog_alphabar, order):
    """DEIS's tAB integral in t, written independently with scipy.integrate.quad:

    C_ij = ∫_{t_i}^{t_{i+1}} −½ √(ᾱ_{i+1}/ᾱ_τ) (d log ᾱ/dτ) / √(1 − ᾱ_τ) ℓ_j(τ) dτ.
    """
    coef = np.zeros((len(ts) - 1, order + 1))
    for i in range(len(ts) - 1):
        nodes = ts[i - np.arange(min(i, order) + 1)]
        for j in range(len(nodes)):
            integrand = lambda tau: (-0.5 * np.sqrt(alphabar(ts[i + 1]) / alphabar(tau)) * dlog_alphabar(tau)
                                     / np.sqrt(1.0 - alphabar(tau)) * lagrange(nodes, j, tau))
            coef[i, j] = integrate.quad(integrand, ts[i], ts[i + 1], epsabs=0, epsrel=1e-12, limit=200)[0]
    return coef


@pytest.mark.parametrize("grid", ["rho", "quad"])
def test_vp_tab_equals_paper_integral(grid):
    sde = VPSDE()
    ts = grids.time_grid(sde, 8, grid)
    log_mean = lambda t: -0.25 * t**2 * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min
    alphabar = lambda t: np.exp(2 * log_mean(t))
    dlog_alphabar = lambda t: -(sde.beta_min + t * (sde.beta_max - sde.beta_min))
    expected = _paper_tab_coefficients(ts, alphabar, dlog_alphabar, 3)
    tables = deis.tab_coefficients(sde, ts, order=3)
    scale = np.abs(expected).max(axis=1, keepdims=True)
    np.testing.assert_allclose(tables.eps_coef / scale, expected / scale, rtol=0, atol=1e-9)
    np.testing.assert_allclose(tables.x_coef, np.sqrt(alphabar(ts[1:]) / alphabar(ts[:-1])), rtol=1e-12)


def test_ve_tab_equals_vp_formulation_with_alphabar_one_over_one_plus_sigma2():
    """The VE-σ and the VP-ρ formulations are the same ODE: ᾱ = 1/(1 + σ²) gives ρ = σ.

    The paper's VP coefficients carry a factor α_{i+1} = √ᾱ_{i+1} (they update α x);
    dividing it out must give the VE closed form, and α_{i+1}/α_i · x_coef_VP ... = 1.
    """
    ts = grids.time_grid(TOY_VE, 10, "rho", eps=0.0)
    sigma = lambda t: TOY_VE.sigma_min * (TOY_VE.sigma_max / TOY_VE.sigma_min) ** t
    log_ratio = np.log(TOY_VE.sigma_max / TOY_VE.sigma_min)
    alphabar = lambda t: 1.0 / (1.0 + sigma(t) ** 2)
    dlog_alphabar = lambda t: -2.0 * sigma(t) ** 2 * log_ratio / (1.0 + sigma(t) ** 2)
    vp = _paper_tab_coefficients(ts, alphabar, dlog_alphabar, 3)
    alpha_next = np.sqrt(alphabar(ts[1:]))
    ve = deis.tab_coefficients_ve(TOY_VE, ts, order=3).eps_coef
    scale = np.abs(ve).max(axis=1, keepdims=True)
    np.testing.assert_allclose(vp / alpha_next[:, None] / scale, ve / scale, rtol=0, atol=1e-9)


@pytest.mark.parametrize("sde", [TOY_VE, VPSDE()], ids=["ve", "vp"])
def test_rhoab_equals_integral_of_lagrange_basis_in_rho(sde):
    ts = grids.time_grid(sde, 7, "rho", eps=0.0 if isinstance(sde, VESDE) else None)
    rhos, alphas = sde.np_rho(ts), sde.np_alpha(ts)
    tables = deis.rhoab_coefficients(sde, ts, order=3)
    for i in range(len(ts) - 1):
        nodes = rhos[i - np.arange(min(i, 3) + 1)]
        for j in range(len(nodes)):
            expected = alphas[i + 1] * integrate.quad(lambda r: lagrange(nodes, j, r), rhos[i], rhos[i + 1],
                                                      epsabs=0, epsrel=1e-13)[0]
            assert tables.eps_coef[i, j] == pytest.approx(expected, rel=1e-10, abs=1e-12 * abs(rhos[i]))
        assert np.all(tables.eps_coef[i, len(nodes):] == 0.0)


def test_ipndm_table_is_ab_weights_times_ddim_step():
    ts = grids.time_grid(VPSDE(), 6, "t")
    tables = deis.ipndm_coefficients(VPSDE(), ts, order=3)
    alpha, rho = VPSDE().np_alpha(ts), VPSDE().np_rho(ts)
    # DDIM's ε coefficient √(1 − ᾱ_{i+1}) − √(ᾱ_{i+1}/ᾱ_i) √(1 − ᾱ_i) is α_{i+1}(ρ_{i+1} − ρ_i).
    abar = alpha**2
    ddim = np.sqrt(1 - abar[1:]) - np.sqrt(abar[1:] / abar[:-1]) * np.sqrt(1 - abar[:-1])
    np.testing.assert_allclose(alpha[1:] * np.diff(rho), ddim, rtol=1e-10)
    weights = np.array([[1, 0, 0, 0], [3 / 2, -1 / 2, 0, 0], [23 / 12, -16 / 12, 5 / 12, 0]]
                       + [[55 / 24, -59 / 24, 37 / 24, -9 / 24]] * 3)
    np.testing.assert_allclose(tables.eps_coef, ddim[:, None] * weights, rtol=1e-10)


def test_multistep_rows_integrate_constants_exactly():
    """Σ_j C_ij = α_{i+1}(ρ_{i+1} − ρ_i) for every multistep method (Lagrange bases sum to 1)."""
    for sde in (TOY_VE, VPSDE(), subVPSDE()):
        for method in ("tab", "rhoab", "ipndm"):
            tables = deis.deis_coefficients(sde, 9, method, order=3)
            expected = sde.np_alpha(tables.t[1:]) * np.diff(sde.np_rho(tables.t))
            np.testing.assert_allclose(tables.eps_coef.sum(axis=1), expected, rtol=1e-10)


def test_rk_stage_times_lie_on_rho_between_grid_points():
    tables = deis.deis_coefficients(VPSDE(), 5, "rhork", order=4)
    np.testing.assert_allclose(VPSDE().np_rho(tables.stage_t[:, 1]), 0.5 * (tables.rho[:-1] + tables.rho[1:]),
                               rtol=1e-12)
    np.testing.assert_array_equal(tables.stage_t[:, 0], tables.t[:-1])
    np.testing.assert_array_equal(tables.stage_t[:, 3], tables.t[1:])


# --------------------------------------------------------------------------- #
# Samplers against the exact ODE solution.
# --------------------------------------------------------------------------- #

def test_tab3_meets_published_toy_accuracy():
    """N(0, 0.5² I), σ ∈ [0.01, 50], EDM ρ-grid κ = 7 (docs/design.md §5: ≈ 8e-3 at 10, 7.5e-4 at 20)."""
    shape = (32, 8, 8, 1)
    oracle = GaussianOracle.isotropic(shape[1:], std=0.5)
    exact = exact_ode_solution(oracle, TOY_VE, shape, 0.0)
    errors = {}
    for n in (10, 20):
        sampler = deis.get_deis_sampler(TOY_VE, shape, n, "tab", order=3, grid="rho", rho=7.0, eps=0.0)
        x, nfe = sampler(KEY, oracle.score_fn(TOY_VE))
        assert nfe == n
        errors[n] = rmse(x, exact)
    assert errors[10] <= 1e-2, errors
    assert errors[20] <= 1e-3, errors
    assert errors[20] < errors[10] / 5


@pytest.mark.parametrize("order,min_rate", [(1, 1.8), (2, 2.6), (3, 3.5)])
def test_tab_converges_at_order_r_plus_one(order, min_rate):
    """On the uniform log σ grid, tAB-r is a (r + 1)-th order method (error ratio ≈ 2^{r+1})."""
    shape = (8, 8, 8, 1)
    oracle = GaussianOracle.natural_image(shape[1:])
    exact = exact_ode_solution(oracle, TOY_VE, shape, 0.0)
    errors = []
    for n in (20, 40, 80):
        x, _ = deis.get_deis_sampler(TOY_VE, shape, n, "tab", order, grid="t", eps=0.0)(
            KEY, oracle.score_fn(TOY_VE))
        errors.append(rmse(x, exact))
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert rates[-1] >= min_rate, (errors, rates)


def test_rhork_heun_is_ode_heun_in_sigma():
    shape = (4, 8, 8, 1)
    score_fn = GaussianOracle.natural_image(shape[1:]).score_fn(TOY_VE)
    x_rk, nfe_rk = deis.get_deis_sampler(TOY_VE, shape, 9, "rhork", order=2, eps=0.0)(KEY, score_fn)
    x_heun, nfe_heun = ode.get_ode_sampler(TOY_VE, shape, "heun", 9, eps=0.0)(KEY, score_fn)
    assert nfe_rk == nfe_heun == 18
    np.testing.assert_allclose(x_rk, x_heun, rtol=1e-4, atol=1e-5)


METHOD_CASES = [("tab", 3, 1e-3), ("rhoab", 3, 4e-3), ("ipndm", 3, 2e-3), ("rhork", 2, 6e-3),
                ("rhork", 3, 1e-4), ("rhork", 4, 1e-4)]


@pytest.mark.parametrize("sde", [TOY_VE, VPSDE(), subVPSDE()], ids=["ve", "vp", "subvp"])
@pytest.mark.parametrize("method,order,tol", METHOD_CASES)
def test_samplers_converge_to_exact_ode_solution(sde, method, order, tol):
    shape = (4, 8, 8, 1)
    eps = 0.0 if isinstance(sde, VESDE) else 1e-3
    oracle = GaussianOracle.natural_image(shape[1:])
    exact = exact_ode_solution(oracle, sde, shape, eps)
    errors = []
    for n in (10, 40):
        x, nfe = deis.get_deis_sampler(sde, shape, n, method, order, eps=eps)(KEY, oracle.score_fn(sde))
        assert nfe == (n * order if method == "rhork" else n)
        errors.append(rmse(x, exact))
    assert errors[1] < tol and errors[1] < errors[0] / 3, errors


# --------------------------------------------------------------------------- #
# The interface: NFE, jit discipline, errors.
# --------------------------------------------------------------------------- #

def _counting_score(oracle, sde, counter):
    base = oracle.score_fn(sde)

    def score_fn(x, t):
        jax.debug.callback(lambda: counter.append(1))
        return base(x, t)

    return score_fn


@pytest.mark.parametrize("method,order", [("tab", 3), ("rhoab", 1), ("ipndm", 2), ("rhork", 3)])
def test_reported_nfe_equals_score_evaluations(method, order):
    shape = (2, 4, 4, 1)
    counter = []
    score_fn = _counting_score(GaussianOracle.isotropic(shape[1:]), VPSDE(), counter)
    x, nfe = deis.get_deis_sampler(VPSDE(), shape, 7, method, order)(KEY, score_fn)
    jax.block_until_ready(x)
    jax.effects_barrier()
    assert nfe == len(counter) == (7 * order if method == "rhork" else 7)


def _equation_count(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += _equation_count(sub)
    return total


@pytest.mark.parametrize("method,order", [("tab", 3), ("ipndm", 3), ("rhork", 4)])
def test_program_size_does_not_depend_on_num_steps(method, order):
    shape = (2, 4, 4, 1)
    score_fn = GaussianOracle.isotropic(shape[1:]).score_fn(TOY_VE)
    sizes = []
    for n in (3, 30, 300):
        sampler = deis.get_deis_sampler(TOY_VE, shape, n, method, order)
        sizes.append(_equation_count(jax.make_jaxpr(lambda rng: sampler(rng, score_fn)[0])(KEY).jaxpr))
    assert sizes[0] == sizes[1] == sizes[2], sizes


def test_sampler_compiles_once_for_new_model_parameters():
    shape = (2, 4, 4, 1)
    traces = []

    def score(scale, x, t):
        traces.append(1)  # runs only while tracing
        return -x * scale

    sampler = deis.get_deis_sampler(TOY_VE, shape, 5)
    for scale in (1.0, 2.0, 3.0):
        x, _ = sampler(KEY, jax.tree_util.Partial(score, jnp.float32(scale)))
        jax.block_until_ready(x)
    assert len(traces) == 1


def test_same_key_same_samples_and_prior_key_discipline():
    shape = (3, 4, 4, 1)
    score_fn = GaussianOracle.isotropic(shape[1:]).score_fn(TOY_VE)
    sampler = deis.get_deis_sampler(TOY_VE, shape, 6)
    np.testing.assert_array_equal(sampler(KEY, score_fn)[0], sampler(KEY, score_fn)[0])
    assert not np.allclose(sampler(KEY, score_fn)[0], sampler(jax.random.PRNGKey(1), score_fn)[0])


def test_preconditioner_is_refused_unless_identity():
    shape = (2, 8, 8, 1)
    score_fn = GaussianOracle.isotropic(shape[1:]).score_fn(TOY_VE)
    identity = Preconditioner.identity(shape[1:])
    x, _ = deis.get_deis_sampler(TOY_VE, shape, 4, precond=identity)(KEY, score_fn)
    assert np.all(np.isfinite(x))
    pds = Preconditioner.parametric(shape[1:], r=2.0, lam=1.6)
    with pytest.raises(ValueError, match="probability-flow ODE"):
        deis.get_deis_sampler(TOY_VE, shape, 4, precond=pds)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="dpm"), "method"),
    (dict(order=4), "order"),
    (dict(method="rhork", order=0), "order"),
    (dict(grid="log"), "grid"),
    (dict(num_steps=0), "num_steps"),
    (dict(eps=1.5), "eps"),
])
def test_bad_arguments_raise(kwargs, match):
    args = dict(sde=TOY_VE, shape=(2, 4, 4, 1), num_steps=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        deis.get_deis_sampler(**args)


@pytest.mark.parametrize("method,order,nfe", [("tab", 2, 6), ("rhork", 3, 18)])
def test_sampler_record_reports_the_schedule_it_runs(method, order, nfe):
    sampler = deis.get_deis_sampler(VPSDE(), (2, 4, 4, 1), 6, method, order, grid="t", eps=2e-3)
    info = sampler.describe()
    assert (info["method"], info["num_steps"], info["nfe"], info["eps"]) == ("deis", 6, nfe, 2e-3)
    assert (info["solver"], info["order"], info["grid"], info["nfe_is_bound"]) == (method, order, "t", False)
    x, got = sampler(KEY, GaussianOracle.isotropic((4, 4, 1)).score_fn(VPSDE()))
    assert got == nfe and x.shape == (2, 4, 4, 1)
