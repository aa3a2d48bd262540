"""Exact PC-sampler moments on Gaussian data (pds_jax.analysis) and the α rule built on them."""

import jax
import numpy as np
import pytest

from pds_jax import alpha_rule, analysis
from pds_jax.alpha_law import stability_boundary, stability_floor, surrogate, surrogate_alpha
from pds_jax.oracles import GaussianOracle
from pds_jax.precond import Preconditioner
from pds_jax.pds import pc_schedule
from pds_jax.samplers.pc import get_pc_sampler
from pds_jax.sde import VESDE, VPSDE

SHAPE = (16, 16, 1)
VE = VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
VP = VPSDE(beta_min=0.1, beta_max=20.0, N=1000)


@pytest.fixture(scope="module")
def oracle():
    return GaussianOracle.natural_image(SHAPE, gamma=2.0)


@pytest.fixture(scope="module")
def stats(oracle):
    return oracle.filter_statistics()


def _arrays(oracle):
    return np.asarray(oracle.spectrum, np.float64), np.asarray(oracle.mean, np.float64)


@pytest.mark.parametrize("base,speed_up", [(VE, 100), (VP, 50)], ids=["VE-N10", "VP-N20"])
@pytest.mark.parametrize("alpha", [None, 5.0], ids=["vanilla", "pds5"])
def test_prediction_matches_the_real_sampler(oracle, stats, base, speed_up, alpha):
    """3000 samples in one batch: the KL and every per-frequency variance agree with the prediction.

    Sampling floor of the KL ≈ 0.75 / B ≈ 2.5e-4 (mean and variance estimation); the
    predicted KLs here are ≥ 0.09, so agreement is tested far above the floor.
    """
    batch = 3000
    precond = None if alpha is None else Preconditioner.from_arrays(*stats, alpha=alpha)
    sde, eps = pc_schedule(base, speed_up)
    lam, mu = _arrays(oracle)
    predicted = analysis.pc_output_moments(lam, mu, sde, sde.N, eps, 0.16, precond)
    kl = float(analysis.kl_per_dim(predicted, lam, mu))
    sampler = get_pc_sampler(base, (batch,) + SHAPE, snr=0.16, precond=precond, speed_up=speed_up)
    x, _ = sampler(jax.random.PRNGKey(3), oracle.score_fn(sde))
    sampled = analysis.sample_moments(np.asarray(x))
    kl_sampled = float(analysis.kl_per_dim(sampled, lam, mu))
    assert kl > 100 * 0.75 / batch
    assert abs(kl_sampled - kl) < 0.05 * kl
    # each complex variance estimate has relative std ≈ 1/√B ≈ 0.018; 128 independent ones
    assert np.max(np.abs(sampled.var / predicted.var - 1.0)) < 6.0 / np.sqrt(batch)
    scale = np.sqrt(predicted.var / batch)
    assert np.max(np.abs(sampled.mean - predicted.mean) / scale) < 6.0


def test_identity_preconditioner_is_the_vanilla_recursion(oracle):
    lam, mu = _arrays(oracle)
    sde, eps = pc_schedule(VE, 50)
    vanilla = analysis.pc_output_moments(lam, mu, sde, sde.N, eps, 0.16, None)
    for precond in (Preconditioner.identity(SHAPE), Preconditioner.from_filters(np.ones(SHAPE))):
        same = analysis.pc_output_moments(lam, mu, sde, sde.N, eps, 0.16, precond)
        np.testing.assert_array_equal(same.var, vanilla.var)
        np.testing.assert_array_equal(same.mean, vanilla.mean)


def test_vanilla_predictor_only_matches_a_scalar_recursion(oracle):
    """No corrector, VE: one coefficient by hand, v ← (1 − G²/V)² v + G², from v = σ_max²."""
    lam, mu = _arrays(oracle)
    sde = VE.with_steps(7)
    out = analysis.pc_output_moments(lam, mu, sde, 7, 1e-3, 0.16, None, n_steps=0)
    t = np.linspace(1.0, 1e-3, 7)
    sigmas = 0.01 * 5000.0 ** (np.arange(7) / 6.0)  # σ_i, i = int(t (N − 1)) = 6, 5, ..., 0
    k = (3, 5, 0)
    v = 50.0**2
    for j, i in enumerate(range(6, -1, -1)):
        G2 = sigmas[i] ** 2 - (sigmas[i - 1] ** 2 if i > 0 else 0.0)
        a = 1.0 - G2 / (lam[k] + (0.01 * 5000.0 ** t[j]) ** 2)
        v_mean, v = a**2 * v, a**2 * v + G2
    np.testing.assert_allclose(out.var[k], v_mean, rtol=1e-5)  # the float32 schedule of the sampler


def test_uniform_gain_leaves_the_corrector_unchanged():
    """P = c² everywhere: the snr-matched step ε scales as 1/c², so ε P and the injected
    variance 2 ε P do not change: one Langevin step gives the same moments."""
    rng = np.random.default_rng(0)
    K = 50
    lam, V = rng.uniform(0.1, 1.0, K), rng.uniform(0.5, 2.0, K)
    mu = np.zeros(K, complex)
    mu[0] = 0.7
    v = np.tile(rng.uniform(0.1, 3.0, K), (2, 1))
    m = np.full((2, 1), 0.3 + 0.1j)
    P = np.stack([np.ones(K), 9.0 * np.ones(K)])
    m_out, v_out = analysis._langevin(m, v, mu, P, np.ones(K), 0.8, V, np.array([0]), 2 * 0.16**2)
    np.testing.assert_allclose(v_out[0], v_out[1], rtol=1e-12)
    np.testing.assert_allclose(m_out[0], m_out[1], rtol=1e-12)
    assert not np.allclose(v_out[0], v[0])


def test_non_constant_space_filter_is_refused(oracle, stats):
    R, _ = stats
    A = np.linspace(0.1, 1.0, np.prod(SHAPE)).reshape(SHAPE)
    lam, mu = _arrays(oracle)
    precond = Preconditioner.from_arrays(R, A, alpha=5.0)
    with pytest.raises(ValueError, match="space filter is not constant"):
        analysis.pc_kl(lam, mu, VE.with_steps(10), 10, 1e-3, 0.16, precond)
    solenoidal = Preconditioner.from_arrays(R, None, alpha=5.0, solenoidal_omega=0.1)
    with pytest.raises(ValueError, match="solenoidal"):
        analysis.pc_kl(lam, mu, VE.with_steps(10), 10, 1e-3, 0.16, solenoidal)
    with pytest.raises(ValueError, match="sde.N=1000"):
        analysis.pc_kl(lam, mu, VE, 10, 1e-3, 0.16)


@pytest.mark.parametrize("base", [VE, VP], ids=["VE", "VP"])
def test_vanilla_kl_vanishes_as_steps_grow(oracle, base):
    lam, mu = _arrays(oracle)
    kls = []
    for k in (20, 5, 1):  # N = 50, 200, 1000
        sde, eps = pc_schedule(base, k)
        kls.append(analysis.pc_kl(lam, mu, sde, sde.N, eps, 0.16))
    assert kls[0] > kls[1] > kls[2]
    assert kls[2] < 5e-4


def test_vp_score_only_variant_differs_only_with_a_preconditioner(oracle, stats):
    lam, mu = _arrays(oracle)
    sde, eps = pc_schedule(VP, 20)
    gains = analysis.alpha_gains(*stats, [5.0, np.inf])
    drift = analysis.pc_kl_batch(lam, mu, sde, sde.N, eps, 0.16, gains, precondition="drift")
    score = analysis.pc_kl_batch(lam, mu, sde, sde.N, eps, 0.16, gains, precondition="score")
    assert drift[1] == score[1]
    assert drift[0] != score[0]


def test_stability_boundary_is_where_the_sampler_blows_up(oracle, stats):
    """N = 10 on the 16² γ=2 oracle: α = 2.27 (the shipped table rule) blows up, α = 5 does not."""
    lam, mu = _arrays(oracle)
    R, A = stats
    sde, eps = pc_schedule(VE, 100)
    kl = analysis.pc_kl_batch(lam, mu, sde, 10, eps, 0.16, analysis.alpha_gains(R, A, [2.27, 5.0, np.inf]))
    assert kl[0] > 100 * kl[2] and kl[1] < kl[2]
    assert 2.27 < stability_boundary(R, sde, 10, "absolute") < stability_boundary(R, sde, 10) < 5.0


def test_surrogate_recovers_the_spectrum_off_dc(oracle, stats):
    lam, _ = _arrays(oracle)
    lam_s, mu_s = surrogate(*stats)
    off_dc = np.ones(SHAPE, bool)
    off_dc[0, 0] = False
    np.testing.assert_allclose(lam_s[off_dc], lam[off_dc], rtol=1e-5)
    assert 0.45 < mu_s[0, 0, 0] < 0.55  # true 0.5; the DC split is an assumption


def _kl_of(oracle, stats, num_steps, alphas):
    lam, mu = _arrays(oracle)
    sde, eps = pc_schedule(VE, 1000 / num_steps)
    return analysis.pc_kl_batch(lam, mu, sde, num_steps, eps, 0.16, analysis.alpha_gains(*stats, alphas))


@pytest.mark.parametrize("num_steps", [10, 20, 50, 100])
def test_surrogate_alpha_is_safe_and_near_the_best(oracle, stats, num_steps):
    alpha = surrogate_alpha(*stats, VE, num_steps)
    grid = list(np.geomspace(1.05, 1000.0, 40))
    kl = _kl_of(oracle, stats, num_steps, [alpha] + grid)
    assert np.isfinite(kl[0]) and kl[0] < 2.0 * np.min(kl[1:])
    assert alpha > stability_boundary(stats[0], pc_schedule(VE, 1000 / num_steps)[0], num_steps)


@pytest.mark.parametrize("num_steps", [10, 20, 50, 100])
def test_auto_alpha_never_diverges_where_alpha_5_works(oracle, stats, num_steps):
    """alpha='auto' on the 16² γ=2 oracle (VE σ ∈ [0.01, 50], 1000-step base schedule, the
    oracle's own filters): above the stability floor at every N, and its KL within a small
    factor of α = 5's and of the best α's (before the floor, N = 10 gave α = 2.27 and a KL of
    ~4e4 against 0.09 at α = 5)."""
    alpha = alpha_rule.auto_alpha(*stats, VE, num_steps)
    floor = stability_floor(*stats, VE, num_steps)
    grid = list(np.geomspace(1.05, 1000.0, 40))
    kl = _kl_of(oracle, stats, num_steps, [alpha, 5.0] + grid)
    assert alpha >= floor > 1.0
    assert np.isfinite(kl[0]) and kl[0] < 2.0 * kl[1] and kl[0] < 5.0 * np.min(kl[2:])


def test_stability_floor_is_above_the_blow_up(oracle, stats):
    """The floor lies above the α at which the exact recursion blows up and below α = 5."""
    floor = stability_floor(*stats, VE, 10)
    kl = _kl_of(oracle, stats, 10, [1.0 + (floor - 1.0) / 1.5 * 0.97, floor, 1000.0])
    assert kl[0] > 10 * kl[2] and kl[1] < 10 * kl[2] and floor < 5.0


def test_surrogate_variance_ratio_is_the_recursion_on_the_surrogate():
    """Per-frequency output/data variance of the surrogate equals pc_output_moments run on the
    surrogate's (λ, μ) with the same preconditioner (no space filter: exact)."""
    from pds_jax.alpha_law import surrogate_variance_ratio
    from pds_jax.precond import flip_frequencies

    oracle = GaussianOracle.natural_image((16, 16, 1), gamma=2.0)
    R, _ = oracle.filter_statistics()
    sde = VESDE(0.01, 50.0, 1000)
    ratio = surrogate_variance_ratio(R, None, sde, 50, [5.0, 20.0])
    R = np.asarray(R, np.float64)
    lam, mu = surrogate(0.5 * (R + flip_frequencies(R)), None)
    for k, alpha in enumerate((5.0, 20.0)):
        precond = Preconditioner.from_arrays(R, None, alpha=alpha, mode="normalized")
        expected = analysis.pc_output_moments(lam, mu, sde.with_steps(50), 50, 1e-5 * 20, 0.16, precond)
        np.testing.assert_allclose(ratio[k], expected.var / lam, rtol=1e-6)
    assert ratio.shape == (2, 16, 16, 1) and np.all(ratio > 0)
