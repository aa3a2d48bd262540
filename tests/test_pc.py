"""The predictor–corrector sampler, vanilla and preconditioned, on the Gaussian oracle."""

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pds_jax.oracles import GaussianOracle
from pds_jax.precond import Preconditioner
from pds_jax.pds import pc_schedule
from pds_jax.samplers.pc import CORRECTORS, PREDICTORS, get_pc_sampler
from pds_jax.sde import VESDE, VPSDE, subVPSDE

SHAPE = (16, 16, 1)
BATCH = 256
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def oracle():
    return GaussianOracle.natural_image(SHAPE, gamma=2.0, pixel_std=0.25, mean=0.5)


@pytest.fixture(scope="module")
def pds(oracle):
    R, A = oracle.filter_statistics()
    return Preconditioner.from_arrays(R, A, alpha=5.0, mode="normalized")


def _errors(oracle, x):
    """(mean abs error of the mean image, mean and rms of log(sample var / true var) per frequency)."""
    log_ratio = np.log(oracle.frequency_variance(x) / np.asarray(oracle.spectrum))
    mean_err = float(np.abs(np.asarray(x).mean(0) - np.asarray(oracle.mean)).mean())
    return mean_err, float(log_ratio.mean()), float(np.sqrt((log_ratio**2).mean()))


VE = VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)


@pytest.mark.parametrize("speed_up", [1, 10], ids=["N=1000", "N=100"])
@pytest.mark.parametrize("use_pds", [False, True], ids=["vanilla", "pds"])
def test_pc_recovers_oracle_mean_and_spectrum(oracle, pds, speed_up, use_pds):
    """Sampling noise alone: the mean error ~ 0.25/√256 ≈ 0.016, log-variance rms ~ √(2/256) ≈ 0.09."""
    sampler = get_pc_sampler(VE, (BATCH,) + SHAPE, snr=0.16, precond=pds if use_pds else None,
                             speed_up=speed_up)
    x, nfe = sampler(jax.random.PRNGKey(1), oracle.score_fn(VE))
    assert nfe == 2 * (1000 // speed_up)
    mean_err, bias, rms = _errors(oracle, x)
    assert mean_err < 0.02
    assert abs(bias) < 0.04
    assert rms < 0.09


def test_pds_beats_vanilla_with_few_steps(oracle, pds):
    """At N = 20 (speed_up 50) vanilla PC over-disperses badly; PDS stays close."""
    errs = {}
    for name, p in (("vanilla", None), ("pds", pds)):
        sampler = get_pc_sampler(VE, (BATCH,) + SHAPE, snr=0.16, precond=p, speed_up=50)
        x, _ = sampler(jax.random.PRNGKey(1), oracle.score_fn(VE))
        errs[name] = _errors(oracle, x)
    assert errs["vanilla"][1] > 0.2  # biased: sample variances ~25% too large
    assert abs(errs["pds"][1]) < 0.12
    assert errs["pds"][2] < 0.5 * errs["vanilla"][2]


@pytest.mark.parametrize("corrector", ["langevin", "ald"])
def test_identity_filters_reproduce_the_vanilla_sampler(oracle, corrector):
    """D ≡ 1 and s ≡ 1 built through the FFT path give the vanilla samples (same key)."""
    const = np.full(SHAPE, 3.0)
    ones = Preconditioner.from_arrays(freq=const, space=const)
    assert not ones.is_identity
    kw = dict(snr=0.16, corrector=corrector, speed_up=20)
    x0, _ = get_pc_sampler(VE, (8,) + SHAPE, **kw)(jax.random.PRNGKey(3), oracle.score_fn(VE))
    x1, _ = get_pc_sampler(VE, (8,) + SHAPE, precond=ones, **kw)(jax.random.PRNGKey(3), oracle.score_fn(VE))
    np.testing.assert_allclose(x1, x0, rtol=1e-6, atol=1e-6)


COMBOS = [
    (VESDE(0.01, 50.0, N=500), "euler_maruyama", "none", False),
    (VESDE(0.01, 50.0, N=500), "ancestral_sampling", "none", False),
    (VESDE(0.01, 50.0, N=500), "none", "ald", False),
    (VPSDE(N=500), "reverse_diffusion", "none", False),
    (VPSDE(N=500), "ancestral_sampling", "langevin", False),
    (VPSDE(N=500), "euler_maruyama", "langevin", False),
    (subVPSDE(N=500), "euler_maruyama", "none", False),
    # PDS relies on its corrector: see test_preconditioned_predictor_alone_is_biased.
    (VPSDE(N=500), "reverse_diffusion", "langevin", True),
    (VPSDE(N=500), "ancestral_sampling", "langevin", True),
    (subVPSDE(N=500), "euler_maruyama", "langevin", True),
    (VESDE(0.01, 50.0, N=500), "none", "ald", True),
]


@pytest.mark.parametrize("sde, predictor, corrector, use_pds", COMBOS)
def test_every_predictor_and_corrector_samples_the_oracle(oracle, pds, sde, predictor, corrector, use_pds):
    snr = 0.16 if corrector == "langevin" else 0.3  # ald's step 2 (snr σ)² as in NCSN's annealing
    n_steps = 5 if predictor == "none" else 1
    sampler = get_pc_sampler(sde, (BATCH,) + SHAPE, predictor=predictor, corrector=corrector, snr=snr,
                             n_steps=n_steps, precond=pds if use_pds else None)
    x, nfe = sampler(jax.random.PRNGKey(4), oracle.score_fn(sde))
    assert nfe == 500 * ((predictor != "none") + (corrector != "none") * n_steps)
    mean_err, bias, rms = _errors(oracle, x)
    assert mean_err < 0.03, (mean_err, bias, rms)
    assert abs(bias) < 0.1, (mean_err, bias, rms)
    assert rms < 0.15, (mean_err, bias, rms)


def test_preconditioned_predictor_alone_is_biased(oracle, pds):
    """A finding, pinned down: P on the whole reverse drift (as the official code does) is
    not marginal-preserving by itself — the exact preconditioned reverse SDE would use
    f − ½ g² (I + P) ∇log p. With P ⪰ I the predictor-only chain over-contracts; the
    Langevin corrector (exactly P-invariant) is what removes the bias in PDS."""
    sde = VESDE(0.01, 50.0, N=500)
    sampler = get_pc_sampler(sde, (BATCH,) + SHAPE, predictor="reverse_diffusion", corrector="none",
                             precond=pds)
    x, _ = sampler(jax.random.PRNGKey(4), oracle.score_fn(sde))
    assert _errors(oracle, x)[1] < -0.15  # sample variances ≥ 14% too small


def test_speed_up_schedule_matches_the_official_cli():
    sde, eps = pc_schedule(VESDE(N=2000), 30)
    assert (sde.N, eps) == (66, pytest.approx(3e-4))
    sde, eps = pc_schedule(VPSDE(N=1000), 10)
    assert (sde.N, eps) == (100, pytest.approx(1e-2))
    sampler = get_pc_sampler(VESDE(N=2000), (1,) + SHAPE, speed_up=12)
    assert (sampler.num_steps, sampler.nfe) == (166, 332)


def test_program_size_does_not_grow_with_steps(oracle):
    def program(n):
        sde = VESDE(0.01, 50.0, N=n)
        sampler = get_pc_sampler(sde, (2,) + SHAPE)
        return sampler.lower(jax.random.PRNGKey(0), oracle.score_fn(sde)).as_text()

    small, large = program(10), program(5000)
    # Identical programs up to the numbers printed in them (N, eps, table lengths).
    assert re.sub(r"[0-9.e+-]+", "#", small) == re.sub(r"[0-9.e+-]+", "#", large)
    assert abs(len(large) - len(small)) < 0.01 * len(small)


def test_check_finite_reports_the_first_bad_step(oracle):
    sde = VESDE(0.01, 50.0, N=50)
    good = oracle.score_fn(sde)

    def broken(x, t):  # NaN once t < 0.5, i.e. from step 25 on
        return jnp.where(t[:, None, None, None] < 0.5, jnp.nan, good(x, t))

    sampler = get_pc_sampler(sde, (2,) + SHAPE, check_finite=True)
    with pytest.raises(FloatingPointError, match="first at step 25 of 50"):
        sampler(jax.random.PRNGKey(0), broken)
    x, _ = sampler(jax.random.PRNGKey(0), good)
    assert np.all(np.isfinite(x))


def test_bad_arguments_raise_clear_errors():
    sde = VESDE()
    with pytest.raises(ValueError, match="unknown predictor 'heun'"):
        get_pc_sampler(sde, (1,) + SHAPE, predictor="heun")
    with pytest.raises(ValueError, match="unknown corrector"):
        get_pc_sampler(sde, (1,) + SHAPE, corrector="mala")
    with pytest.raises(ValueError, match=r"shape must be the NHWC batch shape"):
        get_pc_sampler(sde, SHAPE)
    with pytest.raises(ValueError, match="no probability-flow variant"):
        get_pc_sampler(sde, (1,) + SHAPE, predictor="ancestral_sampling", probability_flow=True)
    with pytest.raises(ValueError, match="supports VESDE and VPSDE only"):
        get_pc_sampler(subVPSDE(), (1,) + SHAPE, predictor="ancestral_sampling")
    with pytest.raises(ValueError, match="preconditioner is for images of shape"):
        get_pc_sampler(sde, (1, 8, 8, 1), precond=Preconditioner.identity(SHAPE))
    with pytest.raises(ValueError, match="leaves no steps"):
        get_pc_sampler(VESDE(N=10), (1,) + SHAPE, speed_up=20)
    assert set(PREDICTORS) == {"reverse_diffusion", "euler_maruyama", "ancestral_sampling", "none"}
    assert set(CORRECTORS) == {"langevin", "ald", "none"}


_DEVICE_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, numpy as np
    from pds_jax.oracles import GaussianOracle
    from pds_jax.precond import Preconditioner
    from pds_jax.samplers.pc import get_pc_sampler
    from pds_jax.sde import VESDE
    from pds_jax.sharding import batch_sharding
    assert jax.device_count() == int(sys.argv[1]), jax.devices()
    oracle = GaussianOracle.natural_image((16, 16, 1))
    sde = VESDE(0.01, 50.0, N=1000)
    precond = Preconditioner.from_arrays(*oracle.filter_statistics())
    sampler = get_pc_sampler(sde, (16, 16, 16, 1), precond=precond, speed_up=20,
                             batch_sharding=batch_sharding())
    x, _ = sampler(jax.random.PRNGKey(7), oracle.score_fn(sde))
    assert len(x.sharding.device_set) == jax.device_count()
    np.save(sys.argv[2], np.asarray(x))
    """
)


def test_same_samples_on_one_and_eight_devices(tmp_path):
    """The corrector's batch means are global, so sharding does not change the samples."""
    outs = []
    for n in (1, 8):
        out = tmp_path / f"x{n}.npy"
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run([sys.executable, "-c", _DEVICE_SCRIPT, str(n), str(out)], env=env, check=True,
                       capture_output=True, timeout=300)
        outs.append(np.load(out))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("chunk_steps", [1, 7, None, 500])
def test_chunked_run_with_progress_equals_the_one_program_run(oracle, pds, chunk_steps):
    """call_with_progress: the same samples (bitwise on CPU), every step reported exactly once,
    one report per chunk; the chunk program compiles once for every chunk (traced bounds)."""
    sampler = get_pc_sampler(VE, (8,) + SHAPE, precond=pds, speed_up=20, check_finite=True)  # 50 steps
    key, score = jax.random.PRNGKey(5), oracle.score_fn(VE)
    x, nfe = sampler(key, score)
    reports = []
    y, nfe_chunked = sampler.call_with_progress(key, score, reports.append, chunk_steps=chunk_steps)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    assert nfe_chunked == nfe == 100 and sum(reports) == 50
    chunk = chunk_steps or 3  # default: ceil(50 / 20)
    assert len(reports) == -(-50 // min(chunk, 50)) and max(reports) == min(chunk, 50)
    assert sampler._chunk_programs[1]._cache_size() == 1


def test_chunked_run_names_the_first_non_finite_step(oracle, pds):
    """The NaN guard of the chunked loop reports the same first bad step as the one-program loop."""
    sampler = get_pc_sampler(VE, (4,) + SHAPE, precond=pds, speed_up=20, check_finite=True)  # 50 steps
    exact = oracle.score_fn(VE)
    t_bad = float(np.linspace(VE.T, sampler.eps, 50)[17]) + 1e-6  # NaN scores from step 17 on

    def score(x, t):
        return jnp.where((t < t_bad)[:, None, None, None], jnp.nan, exact(x, t))

    key = jax.random.PRNGKey(0)
    with pytest.raises(FloatingPointError) as whole:
        sampler(key, score)
    with pytest.raises(FloatingPointError) as chunked:
        sampler.call_with_progress(key, score, lambda k: None, chunk_steps=3)
    assert str(whole.value) == str(chunked.value) and "first at step 17 of 50" in str(whole.value)
