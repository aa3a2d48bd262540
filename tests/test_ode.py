"""Probability-flow ODE samplers on the Gaussian oracle (exact score, exact ODE map)."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from pds_jax.oracles import GaussianOracle
from pds_jax.precond import Preconditioner
from pds_jax.samplers import grids, ode
from pds_jax.sde import VESDE, VPSDE, subVPSDE

KEY = jax.random.PRNGKey(0)
TOY_VE = VESDE(sigma_min=0.01, sigma_max=50.0)


def rmse(a, b):
    return float(jnp.sqrt(jnp.mean((a - b) ** 2)))


def exact_ode_solution(oracle, sde, shape, eps, rng=KEY):
    x_T = sde.prior_sampling(jax.random.split(rng)[1], shape)
    return oracle.ode_solution(x_T, sde.T, eps, sde)


def errors_for(sde, method, steps, eps, shape=(8, 8, 8, 1), grid="rho"):
    oracle = GaussianOracle.natural_image(shape[1:])
    exact = exact_ode_solution(oracle, sde, shape, eps)
    out = []
    for n in steps:
        x, nfe = ode.get_ode_sampler(sde, shape, method, n, grid=grid, eps=eps)(KEY, oracle.score_fn(sde))
        assert nfe == (n if method == "euler" else 2 * n)
        out.append(rmse(x, exact))
    return np.array(out)


# --------------------------------------------------------------------------- #
# Grids and schedules.
# --------------------------------------------------------------------------- #

def test_rho_grid_is_edm_sigma_grid_for_ve():
    ts = grids.time_grid(TOY_VE, 10, "rho", rho=7.0, eps=0.0)
    sigmas = TOY_VE.np_std(ts)
    i = np.arange(11) / 10
    expected = (50.0 ** (1 / 7) + i * (0.01 ** (1 / 7) - 50.0 ** (1 / 7))) ** 7
    np.testing.assert_allclose(sigmas, expected, rtol=1e-12)
    uniform = TOY_VE.np_std(grids.time_grid(TOY_VE, 10, "t", eps=0.0))
    np.testing.assert_allclose(np.diff(np.log(uniform)), np.log(0.01 / 50) / 10, rtol=1e-12)
    quad = grids.time_grid(VPSDE(), 4, "quad", eps=1e-2)
    np.testing.assert_allclose(np.sqrt(quad), np.linspace(1.0, 0.1, 5), rtol=1e-12)


# --------------------------------------------------------------------------- #
# Fixed grids: convergence orders.
# --------------------------------------------------------------------------- #

def test_euler_in_sigma_is_first_order():
    errors = errors_for(TOY_VE, "euler", (20, 40, 80), 0.0)
    ratios = errors[:-1] / errors[1:]
    assert np.all((ratios > 1.7) & (ratios < 2.3)), (errors, ratios)


def test_heun_in_sigma_is_second_order():
    errors = errors_for(TOY_VE, "heun", (20, 40, 80), 0.0)
    ratios = errors[:-1] / errors[1:]
    assert np.all((ratios > 3.5) & (ratios < 4.6)), (errors, ratios)


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE()], ids=["vp", "subvp"])
def test_vp_fixed_grids_converge_in_t(sde):
    """On the quadratic t grid (DEIS's VP default) the orders are clean already at 40 steps."""
    euler = errors_for(sde, "euler", (40, 80), 1e-3, grid="quad")
    heun = errors_for(sde, "heun", (40, 80), 1e-3, grid="quad")
    assert 1.8 < euler[0] / euler[1] < 2.2, euler
    assert 3.5 < heun[0] / heun[1] < 4.5, heun
    assert heun[1] < euler[1] / 20


# --------------------------------------------------------------------------- #
# Adaptive RK45.
# --------------------------------------------------------------------------- #

def test_dormand_prince_tableau_satisfies_order_conditions():
    """Butcher's order conditions: all 17 up to order 5 for b, the 8 up to order 4 for b − b_err."""
    tableau = ode.DORMAND_PRINCE
    c = np.array(tableau.c)
    A = np.zeros((7, 7))
    for i, row in enumerate(tableau.a):
        A[i, : len(row)] = row
    np.testing.assert_allclose(A.sum(axis=1), c, atol=1e-15)
    Ac = A @ c

    def residuals(b, order):
        out = [b.sum() - 1, b @ c - 1 / 2, b @ c**2 - 1 / 3, b @ Ac - 1 / 6, b @ c**3 - 1 / 4,
               b @ (c * Ac) - 1 / 8, b @ A @ c**2 - 1 / 12, b @ A @ Ac - 1 / 24]
        if order == 5:
            out += [b @ c**4 - 1 / 5, b @ (c**2 * Ac) - 1 / 10, b @ Ac**2 - 1 / 20,
                    b @ (c * (A @ c**2)) - 1 / 15, b @ A @ c**3 - 1 / 20, b @ (c * (A @ Ac)) - 1 / 30,
                    b @ A @ (c * Ac) - 1 / 40, b @ A @ A @ c**2 - 1 / 60, b @ A @ A @ Ac - 1 / 120]
        return np.array(out)

    b_low = np.array(tableau.b) - np.array(tableau.b_err)  # the embedded 4th-order weights
    np.testing.assert_allclose(residuals(np.array(tableau.b), 5), 0, atol=1e-14)
    np.testing.assert_allclose(residuals(b_low, 4), 0, atol=1e-14)
    assert abs(b_low @ c**4 - 1 / 5) > 1e-4  # the pair differs
    np.testing.assert_array_equal(tableau.a[-1] + (0.0,), tableau.b)  # FSAL


@pytest.mark.parametrize("sde,eps", [(TOY_VE, 0.0), (VESDE(), None), (VPSDE(), None), (subVPSDE(), None)],
                         ids=["toy-ve", "ve", "vp", "subvp"])
@pytest.mark.parametrize("tol", [1e-4, 1e-5])
def test_adaptive_meets_tolerance_with_sensible_nfe(sde, eps, tol):
    shape = (8, 8, 8, 1)
    oracle = GaussianOracle.natural_image(shape[1:])
    eps_value = grids.resolve_eps(sde, eps)
    exact = exact_ode_solution(oracle, sde, shape, eps_value)
    sampler = ode.get_ode_sampler(sde, shape, "adaptive", rtol=tol, atol=tol, eps=eps)
    x, nfe = sampler(KEY, oracle.score_fn(sde))
    _, stats = sampler.solve(sampler.prior(KEY), oracle.score_fn(sde))
    scale = tol * (1.0 + float(jnp.sqrt(jnp.mean(exact**2))))
    assert rmse(x, exact) < 10 * scale, (rmse(x, exact), scale)
    assert int(nfe) == int(stats["nfe"]) == 2 + 6 * int(stats["accepted"] + stats["rejected"])
    assert 20 <= int(nfe) <= 400
    assert float(stats["t_final"]) == pytest.approx(eps_value, abs=1e-9)


def test_adaptive_nfe_grows_as_tolerance_shrinks():
    shape = (4, 8, 8, 1)
    score_fn = GaussianOracle.natural_image(shape[1:]).score_fn(TOY_VE)
    nfes = [int(ode.get_ode_sampler(TOY_VE, shape, "adaptive", rtol=tol, atol=tol, eps=0.0)(KEY, score_fn)[1])
            for tol in (1e-3, 1e-5)]
    assert nfes[0] < nfes[1], nfes


def test_adaptive_returns_nan_when_step_budget_runs_out():
    shape = (2, 4, 4, 1)
    score_fn = GaussianOracle.isotropic(shape[1:]).score_fn(TOY_VE)
    sampler = ode.get_ode_sampler(TOY_VE, shape, "adaptive", max_steps=3)
    x, nfe = sampler(KEY, score_fn)
    assert np.all(np.isnan(x)) and int(nfe) == 2 + 6 * 3
    assert float(sampler.solve(sampler.prior(KEY), score_fn)[1]["t_final"]) > TOY_VE.default_eps


# --------------------------------------------------------------------------- #
# Denoising, NFE, program size, errors.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("sde", [TOY_VE, VPSDE()], ids=["ve", "vp"])
def test_tweedie_denoise_is_posterior_mean(sde):
    """For Gaussian data E[x_0 | x_t] = μ + Σ (α Σ + (s²/α) I)⁻¹ (x − α μ) mode by mode."""
    shape = (4, 8, 8, 1)
    oracle = GaussianOracle.natural_image(shape[1:])
    eps = 0.3  # a large eps makes the correction visible
    plain, nfe_plain = ode.get_ode_sampler(sde, shape, "heun", 8, eps=eps)(KEY, oracle.score_fn(sde))
    denoised, nfe = ode.get_ode_sampler(sde, shape, "heun", 8, eps=eps, denoise=True)(KEY, oracle.score_fn(sde))
    assert nfe == nfe_plain + 1
    alpha, std = (float(v) for v in sde.marginal_coefficients(jnp.float32(eps)))
    lam = np.asarray(oracle.spectrum, np.float64)
    mu = np.asarray(oracle.mean, np.float64)
    y = np.fft.fft2(np.asarray(plain, np.float64) - alpha * mu, axes=(1, 2))
    expected = mu + np.real(np.fft.ifft2(y * alpha * lam / (alpha**2 * lam + std**2), axes=(1, 2)))
    np.testing.assert_allclose(denoised, expected, atol=2e-5)
    assert rmse(denoised, plain) > 1e-2


def test_reported_nfe_equals_score_evaluations():
    shape = (2, 4, 4, 1)
    base = GaussianOracle.isotropic(shape[1:]).score_fn(VPSDE())
    for method, extra in (("euler", {}), ("heun", {"denoise": True}), ("adaptive", {"denoise": True})):
        counter = []

        def score_fn(x, t):
            jax.debug.callback(lambda: counter.append(1))
            return base(x, t)

        x, nfe = ode.get_ode_sampler(VPSDE(), shape, method, 6, **extra)(KEY, score_fn)
        jax.block_until_ready(x)
        jax.effects_barrier()
        assert int(nfe) == len(counter), method


def _equation_count(jaxpr) -> int:
    return sum(1 + sum(_equation_count(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params))
               for eqn in jaxpr.eqns)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_program_size_does_not_depend_on_num_steps(method):
    shape = (2, 4, 4, 1)
    score_fn = GaussianOracle.isotropic(shape[1:]).score_fn(TOY_VE)
    sizes = []
    for n in (2, 20, 200):
        sampler = ode.get_ode_sampler(TOY_VE, shape, method, n, denoise=True)
        sizes.append(_equation_count(jax.make_jaxpr(lambda rng: sampler(rng, score_fn)[0])(KEY).jaxpr))
    assert sizes[0] == sizes[1] == sizes[2], sizes


def test_preconditioner_is_refused_unless_identity():
    shape = (2, 8, 8, 1)
    ode.get_ode_sampler(TOY_VE, shape, "euler", 3, precond=Preconditioner.identity(shape[1:]))
    pds = Preconditioner.parametric(shape[1:], r=2.0, lam=1.6)
    for method in ("euler", "heun", "adaptive"):
        with pytest.raises(ValueError, match="Langevin"):
            ode.get_ode_sampler(TOY_VE, shape, method, 3, precond=pds)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="rk4"), "method"),
    (dict(grid="cosine"), "grid"),
    (dict(num_steps=-1), "num_steps"),
    (dict(method="adaptive", rtol=0.0), "rtol"),
    (dict(shape=(8, 8, 1)), "NHWC"),
])
def test_bad_arguments_raise(kwargs, match):
    args = dict(sde=TOY_VE, shape=(2, 4, 4, 1))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ode.get_ode_sampler(**args)


def test_sampler_record_reports_the_schedule_it_runs():
    shape = (2, 4, 4, 1)
    score_fn = GaussianOracle.isotropic(shape[1:]).score_fn(VPSDE())
    fixed = ode.get_ode_sampler(VPSDE(), shape, "heun", 5, grid="quad", eps=1e-2, denoise=True,
                                inverse_scaler=lambda x: 2.0 * x)
    info = fixed.describe()
    assert (info["method"], info["num_steps"], info["nfe"], info["eps"]) == ("ode", 5, 11, 1e-2)
    assert (info["solver"], info["grid"], info["denoise"], info["nfe_is_bound"]) == ("heun", "quad", True, False)
    x, nfe = fixed(KEY, score_fn)
    plain, _ = ode.get_ode_sampler(VPSDE(), shape, "heun", 5, grid="quad", eps=1e-2, denoise=True)(KEY, score_fn)
    assert nfe == 11
    np.testing.assert_allclose(x, 2.0 * plain, rtol=1e-6)  # the inverse scaler ran inside the program
    adaptive = ode.get_ode_sampler(VPSDE(), shape, "adaptive", max_steps=50, denoise=True)
    assert (adaptive.num_steps, adaptive.nfe, adaptive.describe()["nfe_is_bound"]) == (50, 2 + 6 * 50 + 1, True)
    _, nfe = adaptive(KEY, score_fn)
    assert isinstance(nfe, int) and 8 < nfe < adaptive.nfe
