"""`get_sampler`: one config section selects PC (with PDS), ODE or DEIS."""

import jax
import numpy as np
import pytest

from configs.fashion_mnist_pds import get_config
from pds_jax.oracles import GaussianOracle
from pds_jax.precond import Preconditioner
from pds_jax.samplers import get_sampler
from pds_jax.sde import VESDE

SHAPE = (4, 8, 8, 1)


@pytest.fixture
def setup():
    config = get_config()
    config.model.num_scales = 40
    config.sampling.pds.speed_up = 2.0
    config.sampling.ode.num_steps = 6
    config.sampling.deis.num_steps = 7
    sde = VESDE(config.model.sigma_min, config.model.sigma_max, config.model.num_scales)
    return config, sde, GaussianOracle.natural_image(SHAPE[1:])


@pytest.mark.parametrize("method, solver, expected_nfe", [
    ("pc", None, 2 * 20), ("ode", "euler", 6), ("ode", "heun", 12), ("deis", None, 7)])
def test_each_method_is_selected_by_the_config(setup, method, solver, expected_nfe):
    config, sde, oracle = setup
    config.sampling.method = method
    if solver:
        config.sampling.ode.solver = solver
    sampler = get_sampler(config, sde, SHAPE, inverse_scaler=lambda x: x + 100.0)
    x, nfe = sampler(jax.random.PRNGKey(0), oracle.score_fn(sde))
    assert x.shape == SHAPE and np.all(np.isfinite(x))
    assert int(nfe) == expected_nfe
    assert float(np.mean(x)) > 50  # the inverse scaler was applied


def test_adaptive_solver_is_reached_by_its_score_sde_name(setup):
    config, sde, oracle = setup
    config.sampling.method, config.sampling.ode.solver = "ode", "rk45"
    x, nfe = get_sampler(config, sde, SHAPE)(jax.random.PRNGKey(0), oracle.score_fn(sde))
    assert np.all(np.isfinite(x)) and int(nfe) > 6


def test_pds_applies_to_pc_and_is_refused_by_deterministic_samplers(setup):
    config, sde, oracle = setup
    precond = Preconditioner.from_arrays(*oracle.filter_statistics())
    x, _ = get_sampler(config, sde, SHAPE, precond=precond)(jax.random.PRNGKey(0), oracle.score_fn(sde))
    assert np.all(np.isfinite(x))
    for method in ("ode", "deis"):
        config.sampling.method = method
        with pytest.raises(ValueError, match="PDS preconditioner"):
            get_sampler(config, sde, SHAPE, precond=precond)
    config.sampling.method = "heun"
    with pytest.raises(ValueError, match="is not one of"):
        get_sampler(config, sde, SHAPE)
