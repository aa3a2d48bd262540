"""Tests of pds_jax.metrics: Fréchet distance, KID, sharded statistics and their files.

Every value is checked against an independent computation (SciPy's `sqrtm`, closed
forms, explicit double sums, NumPy's mean/cov) rather than against itself.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from pds_jax import metrics
from pds_jax.io_utils import OutputExistsError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gaussian_features(rng, n, d, shift=0.0):
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ a + shift


def _scipy_frechet(mu1, s1, mu2, s2):
    """Reference: the textbook formula with scipy.linalg.sqrtm of the product."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


# ------------------------------------------------------------------ Fréchet distance


@pytest.mark.parametrize("d,shift", [(4, 0.0), (16, 0.3), (64, 1.0)])
def test_frechet_distance_matches_scipy_sqrtm(d, shift):
    rng = np.random.default_rng(d)
    f1, f2 = _gaussian_features(rng, 500, d), _gaussian_features(rng, 400, d, shift)
    mu1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
    mu2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
    expected = _scipy_frechet(mu1, s1, mu2, s2)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9, abs=1e-10)
    # symmetric in its two arguments, as a distance must be
    assert metrics.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    f = _gaussian_features(rng, 300, 32)
    mu, s = f.mean(0), np.cov(f, rowvar=False)
    assert abs(metrics.frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)


def test_frechet_distance_closed_form_for_commuting_covariances():
    # diagonal covariances: FD = ‖μ₁ − μ₂‖² + Σ (√a − √b)², zeros (singular) included
    a, b = np.array([1.0, 0.0, 4.0, 9.0]), np.array([0.0, 0.0, 1.0, 2.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expected = 1 + 4 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # rotating both covariances by the same orthogonal matrix changes nothing
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 4)))
    got = metrics.frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_rank_deficient_covariances_stay_finite():
    # fewer samples than dimensions: singular covariances, where sqrtm struggles
    rng = np.random.default_rng(3)
    f1, f2 = rng.normal(size=(10, 50)), rng.normal(size=(10, 50)) + 0.1
    fd = metrics.frechet_distance(f1.mean(0), np.cov(f1, rowvar=False),
                                  f2.mean(0), np.cov(f2, rowvar=False))
    assert np.isfinite(fd) and fd > 0


def test_frechet_distance_rejects_bad_inputs():
    with pytest.raises(ValueError, match="dimensions differ"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"\(d, d\)"):
        metrics.frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(np.full(3, np.nan), np.eye(3), np.zeros(3), np.eye(3))


# ----------------------------------------------------------------------------- KID


def test_mmd2_unbiased_matches_explicit_double_sums():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(7, 5)) + 0.5
    k = lambda a, b: (a @ b / 5 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    yy = sum(k(y[i], y[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(7)) / (6 * 7)
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_with_whole_sets_as_subsets_is_the_full_mmd():
    # subset_size >= N: every subset is a permutation of the whole set, MMD² is
    # permutation-invariant, so all subsets agree with the full estimate
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 8)), rng.normal(size=(40, 8)) + 0.2
    result = metrics.kid(x, y, num_subsets=5, subset_size=1000)
    assert result.mean == pytest.approx(metrics.mmd2_unbiased(x, y), rel=1e-10)
    assert result.std < 1e-10 * abs(result.mean)


def test_kid_is_unbiased_on_equal_distributions():
    rng = np.random.default_rng(2)
    draws, biased = [], []
    for _ in range(40):
        x, y = rng.normal(size=(60, 10)), rng.normal(size=(60, 10))
        draws.append(metrics.kid(x, y, num_subsets=3, subset_size=50, seed=len(draws)).mean)
        kxx, kyy = metrics.polynomial_kernel(x, x), metrics.polynomial_kernel(y, y)
        biased.append(kxx.mean() + kyy.mean() - 2 * metrics.polynomial_kernel(x, y).mean())
    draws, biased = np.array(draws), np.array(biased)
    stderr = draws.std(ddof=1) / np.sqrt(len(draws))
    assert abs(draws.mean()) < 3 * stderr
    # the test has power: the biased (V-statistic) estimator fails it clearly
    assert biased.mean() > 3 * biased.std(ddof=1) / np.sqrt(len(biased))


def test_kid_is_positive_for_shifted_distributions_and_seeded():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 16)), rng.normal(size=(250, 16)) + 0.5
    result = metrics.kid(x, y, num_subsets=20, subset_size=100, seed=7)
    assert result.mean > 5 * result.std > 0
    assert metrics.kid(x, y, num_subsets=20, subset_size=100, seed=7) == result
    assert metrics.kid(x, y, num_subsets=20, subset_size=100, seed=8) != result


def test_kid_defaults_follow_the_usual_implementations():
    assert (metrics.KID_NUM_SUBSETS, metrics.KID_SUBSET_SIZE) == (100, 1000)
    with pytest.raises(ValueError, match=r"\(N1, d\)"):
        metrics.kid(np.zeros((5, 3)), np.zeros((5, 4)))


# ------------------------------------------------------------- feature statistics

_W = np.random.default_rng(42).normal(size=(8 * 8 * 2, 6)).astype(np.float32)


def _toy_feature_fn(images):
    """A fixed random projection + tanh: (B, 8, 8, 2) → (B, 6)."""
    return jnp.tanh(images.reshape(images.shape[0], -1) @ _W) * 3.0 + 1.0


def _numpy_toy_features(images):
    return np.tanh(images.reshape(len(images), -1).astype(np.float64) @ _W) * 3.0 + 1.0


def _toy_images(n=37, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 8, 8, 2)).astype(np.float32)


@pytest.mark.parametrize("batch_size", [37, 10, 1, 64])
def test_statistics_equal_numpy_mean_and_cov(batch_size):
    images = _toy_images()
    feats = metrics.compute_features(images, _toy_feature_fn, batch_size, progress=False)
    np.testing.assert_allclose(feats, _numpy_toy_features(images), rtol=1e-5, atol=1e-5)
    stats = metrics.compute_statistics(images, _toy_feature_fn, batch_size, feature_net="toy",
                                       dataset="random", progress=False)
    f64 = feats.astype(np.float64)
    assert stats.count == 37 and stats.dim == 6 and stats.image_size == (8, 8, 2)
    np.testing.assert_allclose(stats.mean, f64.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(f64, rowvar=False), rtol=1e-10, atol=1e-12)


def test_statistics_from_an_iterable_of_uneven_batches():
    images = _toy_images()
    chunks = (images[a:b] for a, b in [(0, 5), (5, 6), (6, 30), (30, 37)])
    stats = metrics.compute_statistics(chunks, _toy_feature_fn, batch_size=8, feature_net="toy",
                                       keep_features=True, progress=False)
    assert stats.count == 37 and stats.image_size == (8, 8, 2)
    ref = _numpy_toy_features(images)
    np.testing.assert_allclose(stats.features, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.mean, ref.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats.cov, np.cov(ref, rowvar=False), atol=1e-5)


def test_uint8_images_are_scaled_to_unit_range():
    u8 = np.random.default_rng(1).integers(0, 256, size=(9, 8, 8, 2), dtype=np.uint8)
    a = metrics.compute_features(u8, _toy_feature_fn, 4, progress=False)
    b = metrics.compute_features(u8.astype(np.float32) / 255, _toy_feature_fn, 4, progress=False)
    np.testing.assert_array_equal(a, b)


def test_moment_merging_is_stable_for_large_means():
    # Σffᵀ − Nμμᵀ would lose every digit here; the pairwise merge keeps them
    rng = np.random.default_rng(5)
    f = rng.normal(size=(1000, 3)) * 1e-3 + 1e6
    moments = metrics._Moments()
    for i in range(0, 1000, 64):
        moments.add(f[i:i + 64])
    np.testing.assert_allclose(moments.covariance(), np.cov(f, rowvar=False), rtol=1e-6)


def test_feature_fn_errors_are_explained():
    images = _toy_images(4)
    with pytest.raises(FloatingPointError, match="NaN"):
        metrics.compute_features(images, lambda x: _toy_feature_fn(x) * jnp.nan, 2, progress=False)
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        metrics.compute_features(images, lambda x: x.sum(), 2, progress=False)
    with pytest.raises(ValueError, match="NHWC"):
        metrics.compute_features(images[..., 0], _toy_feature_fn, 2, progress=False)
    with pytest.raises(ValueError, match="feature_net"):
        metrics.compute_statistics(images, _toy_feature_fn, 2, progress=False)


_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from pds_jax import metrics
    W = np.random.default_rng(42).normal(size=(8 * 8 * 2, 6)).astype(np.float32)
    def fn(images):
        return jnp.tanh(images.reshape(images.shape[0], -1) @ W) * 3.0 + 1.0
    images = np.random.default_rng(0).uniform(size=(37, 8, 8, 2)).astype(np.float32)
    out = {"devices": jax.device_count()}
    for bs in (10, 16):
        s = metrics.compute_statistics(images, fn, bs, feature_net="toy", progress=False)
        out[bs] = {"count": s.count, "mean": s.mean.tolist(), "cov": s.cov.tolist()}
    print("RESULT" + json.dumps(out))
""")


def test_statistics_do_not_depend_on_the_number_of_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["devices"] == 8
    images = _toy_images()
    ref = _numpy_toy_features(images)
    one_device = metrics.compute_statistics(images, _toy_feature_fn, 10, feature_net="toy",
                                            progress=False)
    for bs in ("10", "16"):  # 10: padded to 16 rows per step; 16: last batch of 5 padded
        assert result[bs]["count"] == 37
        np.testing.assert_allclose(result[bs]["mean"], one_device.mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(result[bs]["cov"], one_device.cov, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result[bs]["cov"], np.cov(ref, rowvar=False), atol=1e-5)


# ---------------------------------------------------------------------- files


def _stats(feature_net="toy", d=6, features=False, seed=0):
    f = _gaussian_features(np.random.default_rng(seed), 50, d)
    return metrics.FeatureStatistics(mean=f.mean(0), cov=np.cov(f, rowvar=False), count=50,
                                     feature_net=feature_net, dataset="unit-test",
                                     image_size=(8, 8, 2),
                                     features=f.astype(np.float32) if features else None)


@pytest.mark.parametrize("with_features", [False, True])
def test_statistics_file_round_trip(tmp_path, with_features):
    stats = _stats(features=with_features)
    path = metrics.save_statistics(str(tmp_path / "s.npz"), stats)
    back = metrics.load_statistics(path, feature_net="toy", dim=6)
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.cov, stats.cov)
    assert (back.count, back.feature_net, back.dataset, back.image_size) == (50, "toy", "unit-test", (8, 8, 2))
    if with_features:
        np.testing.assert_array_equal(back.features, stats.features)
        assert metrics.kid_from_statistics(back, stats, num_subsets=2).mean < 0.01
    else:
        assert back.features is None
    assert metrics.fid_from_statistics(back, stats) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(OutputExistsError):
        metrics.save_statistics(path, stats)


def test_statistics_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="compute_statistics"):
        metrics.load_statistics(str(tmp_path / "absent.npz"))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="garbage.npz is truncated, corrupt or not a .npz file"):
        metrics.load_statistics(str(garbage))
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(ValueError, match="missing format, mean, cov, count, feature_net"):
        metrics.load_statistics(str(other))
    path = metrics.save_statistics(str(tmp_path / "s.npz"), _stats())
    with pytest.raises(ValueError, match="'toy'.*'inception'"):
        metrics.load_statistics(path, feature_net="inception")
    with pytest.raises(ValueError, match="6-d.*2048-d"):
        metrics.load_statistics(path, dim=2048)


def test_comparing_statistics_of_different_feature_nets_is_refused():
    with pytest.raises(ValueError, match="different feature networks"):
        metrics.fid_from_statistics(_stats("toy"), _stats("inception"))
    with pytest.raises(ValueError, match="different dimensions"):
        metrics.fid_from_statistics(_stats(d=6), _stats(d=5))
    with pytest.raises(ValueError, match="keep_features=True"):
        metrics.kid_from_statistics(_stats(), _stats(features=True))


def test_pytorch_fid_statistics_files_load_as_inception(tmp_path):
    mu, sigma = np.arange(4.0), np.eye(4) * 2
    np.savez(tmp_path / "cifar10.npz", mu=mu, sigma=sigma)
    stats = metrics.load_statistics(str(tmp_path / "cifar10.npz"), feature_net="inception")
    assert stats.feature_net == "inception" and stats.count == 0
    np.testing.assert_array_equal(stats.cov, sigma)
