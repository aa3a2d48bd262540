"""The PDS preconditioner: identities P = M Mᵀ, FFT paths, filter formulas, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pds_jax.precond import (Preconditioner, circle_filter, flip_frequencies, frequency_filter,
                             is_hermitian_symmetric, space_filter)

H, W, C = 6, 5, 2  # odd W exercises the rfft half-spectrum bookkeeping


def _stats(seed=0, n=4):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, H, W, C))
    R = np.log1p(np.mean(np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2, axis=0))
    A = np.mean(x**2, axis=0)
    return R, A


def _matrix(op, shape=(H, W, C)):
    """The dense matrix of a linear operator on NHWC images (columns = images of basis vectors)."""
    n = int(np.prod(shape))
    basis = jnp.eye(n, dtype=jnp.float32).reshape((n,) + shape)
    return np.asarray(op(basis), np.float64).reshape(n, n).T


def test_P_equals_M_MT_and_is_symmetric_positive_definite():
    R, A = _stats()
    p = Preconditioner.from_arrays(R, A, alpha=5.0)
    M, MT, P = _matrix(p.M), _matrix(p.MT), _matrix(p.P)
    np.testing.assert_allclose(MT, M.T, atol=2e-6)
    np.testing.assert_allclose(P, M @ M.T, atol=2e-6)
    np.testing.assert_allclose(P, P.T, atol=2e-6)
    assert np.linalg.eigvalsh(0.5 * (P + P.T)).min() > 0.5


def test_frequency_operator_is_the_fourier_multiplier():
    """K x = Re ifft2(D · fft2(x)) computed independently with NumPy."""
    R, _ = _stats()
    D = frequency_filter(R, 5.0)
    p = Preconditioner.from_filters(D)
    x = np.random.default_rng(1).normal(size=(3, H, W, C)).astype(np.float32)
    ref = np.real(np.fft.ifft2(np.fft.fft2(x, axes=(1, 2)) * D, axes=(1, 2)))
    np.testing.assert_allclose(p.frequency_operator(jnp.asarray(x)), ref, atol=1e-5)


def test_rfft_path_equals_full_fft_path():
    R, A = _stats()
    fast = Preconditioner.from_arrays(R, A, fft="rfft")
    full = Preconditioner.from_arrays(R, A, fft="full")
    assert (fast.fft, full.fft) == ("rfft", "full")
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, H, W, C)), jnp.float32)
    for name in ("M", "MT", "P"):
        np.testing.assert_allclose(getattr(fast, name)(x), getattr(full, name)(x), atol=1e-5)


def test_asymmetric_filter_uses_full_fft_which_equals_its_symmetrised_half_spectrum():
    """Re F⁻¹ D F = F⁻¹ D_sym F for real D: the full path matches rfft with (D + D[−k]) / 2."""
    D = np.random.default_rng(3).uniform(1.0, 2.0, size=(H, W, C))
    assert not is_hermitian_symmetric(D)
    full = Preconditioner.from_filters(D)
    assert full.fft == "full"
    sym = Preconditioner.from_filters(0.5 * (D + flip_frequencies(D)))
    assert sym.fft == "rfft"
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, H, W, C)), jnp.float32)
    np.testing.assert_allclose(full.P(x), sym.P(x), atol=1e-5)
    np.testing.assert_allclose(_matrix(full.P), _matrix(full.P).T, atol=2e-6)
    with pytest.raises(ValueError, match="Hermitian-symmetric"):
        Preconditioner.from_filters(D, fft="rfft")


def test_normalized_filters_follow_the_formula_and_range():
    R, A = _stats()
    alpha = 5.0
    D = frequency_filter(R, alpha, "normalized")
    s = space_filter(A, alpha, "normalized")
    np.testing.assert_allclose(D, alpha / (R / R.max() + alpha - 1))
    np.testing.assert_allclose(s, alpha / (A / A.max() + alpha - 1))
    for f in (D, s):
        assert f.min() >= 1.0 - 1e-12 and f.max() <= alpha / (alpha - 1) + 1e-12
        np.testing.assert_allclose(f.min(), 1.0)  # at the global max of the statistic


def test_legacy_filters_follow_the_formula():
    R, A = _stats()
    np.testing.assert_allclose(frequency_filter(R, 3.0, "legacy"), 3.0 / (R + 2.0))
    np.testing.assert_allclose(space_filter(A, 3.0, "legacy"), 1.0 / A)
    p = Preconditioner.from_arrays(R, A, alpha=3.0, mode="legacy")
    np.testing.assert_allclose(p.space, 1.0 / A, rtol=1e-6)


def test_constant_statistics_give_the_identity_operator():
    R = np.full((H, W, C), 7.0)
    p = Preconditioner.from_arrays(freq=R, space=R)
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, H, W, C)), jnp.float32)
    np.testing.assert_allclose(p.P(x), x, atol=1e-6)
    np.testing.assert_allclose(p.M(x), x, atol=1e-6)


def test_identity_preconditioner_is_exact_noop():
    p = Preconditioner.identity((H, W, C))
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2, H, W, C)), jnp.float32)
    assert p.is_identity
    for op in (p.M, p.MT, p.P, p.precondition_drift):
        assert op(x) is x


@pytest.mark.parametrize("layout", ["shifted", "unshifted"])
@pytest.mark.parametrize("mode", ["multiply", "divide"])
def test_circle_filter(layout, mode):
    D = circle_filter((16, 16, 1), r=0.2 * 16, lam=1.6, layout=layout, mode=mode)
    assert is_hermitian_symmetric(D)
    scale = 1.6 if mode == "multiply" else 1 / 1.6
    assert set(np.unique(D)) == {1.0, scale}
    dc, nyquist = D[0, 0, 0], D[8, 8, 0]
    # The shifted circle is centred on DC (low frequencies keep 1), the unshifted one on Nyquist.
    assert (dc, nyquist) == ((1.0, scale) if layout == "shifted" else (scale, 1.0))
    p = Preconditioner.parametric((16, 16, 1), r=3.2, lam=1.6, layout=layout, mode=mode)
    assert p.fft == "rfft"


def test_solenoidal_operator_is_skew_and_enters_the_drift():
    R, A = _stats()
    p = Preconditioner.from_arrays(R, A, solenoidal_omega=10.0)
    S = _matrix(p.S)
    np.testing.assert_allclose(S, -S.T, atol=1e-7)
    u = jnp.asarray(np.random.default_rng(7).normal(size=(5, H, W, C)), jnp.float32)
    inner = jnp.sum(u * p.S(u), axis=(1, 2, 3))
    np.testing.assert_allclose(inner, 0.0, atol=1e-5)
    np.testing.assert_allclose(p.precondition_drift(u), p.P(u) + 10.0 * p.S(u), atol=1e-5)


def test_preconditioner_is_a_pytree_for_jit():
    R, A = _stats()
    p = Preconditioner.from_arrays(R, A)
    x = jnp.ones((1, H, W, C))
    np.testing.assert_allclose(jax.jit(lambda p, x: p.P(x))(p, x), p.P(x), atol=1e-6)
    leaves = jax.tree_util.tree_leaves(p)
    assert len(leaves) == 4  # freq, space, omega, alpha


def test_alpha_is_recorded_as_a_leaf_and_reported():
    R, A = _stats()
    p = Preconditioner.from_arrays(R, A, alpha=3.0)
    assert p.alpha == 3.0 and p.describe()["alpha"] == 3.0
    leaves, treedef = jax.tree_util.tree_flatten(p)
    assert len(leaves) == 4  # freq, space, omega and α; shape, fft, solenoidal stay static
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert (rebuilt.alpha, rebuilt.shape, rebuilt.fft) == (3.0, p.shape, p.fft)
    # Another α of the same filters has the same structure: one compiled sampler serves an α sweep.
    assert treedef == jax.tree_util.tree_structure(Preconditioner.from_arrays(R, A, alpha=5.0))
    for other in (Preconditioner.identity((H, W, C)), Preconditioner.from_filters(np.ones((H, W, C))),
                  Preconditioner.parametric((8, 8, 1), r=2.0, lam=1.5)):
        assert other.alpha is None and other.describe()["alpha"] is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(freq=np.ones((H, W))), r"\(H, W, C\)"),
        (dict(freq=np.full((H, W, C), np.nan)), "NaN or Inf"),
        (dict(freq=-np.ones((H, W, C))), ">= 0"),
        (dict(space=np.zeros((H, W, C)), mode="legacy"), "> 0 everywhere"),
        (dict(freq=np.ones((H, W, C)), alpha=1.0), "alpha must be a finite number > 1"),
        (dict(freq=np.ones((H, W, C)), mode="bogus"), "normalization mode"),
        (dict(freq=np.ones((H, W, C)), space=np.ones((H, W + 1, C))), "shapes disagree"),
        (dict(), "needs freq and/or space"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Preconditioner.from_arrays(**kwargs)


def test_filters_for_another_image_shape_refuse_the_batch():
    p = Preconditioner.from_arrays(freq=np.ones((C, H, W)))  # e.g. an official (C, H, W) array
    with pytest.raises(ValueError, match="preconditioner built for NHWC images"):
        p.M(jnp.ones((1, H, W, C)))


def test_nonpositive_ready_filter_is_refused():
    with pytest.raises(ValueError, match="> 0 everywhere"):
        Preconditioner.from_filters(np.zeros((H, W, C)))
