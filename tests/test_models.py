"""NCSN++ port: same parameter trees and same outputs as score_sde's original model.

Two independent truths, both produced by running score_sde's own code
(`tests/data/make_ncsnpp_reference.py`):
* `score_sde_param_trees.json`: count, leaf count and the digest of the sorted
  `path:shape` list of the full-size original models (the counts also match docs/design.md §6);
* `ncsnpp_tiny_reference.npz`: five tiny models covering every NCSN++ switch, with
  the original parameters, inputs and outputs.
"""

import hashlib
import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from pds_jax import models, sde as sde_lib
from pds_jax.models import layers, up_or_down_sampling as fir_ops
from tests.model_helpers import (flat_param_shapes, load_config, num_params, random_params,
                                 random_images, tiny_config)

DATA = os.path.join(os.path.dirname(__file__), "data")

# docs/design.md §6: parameter counts of the original architectures (incl. the fixed Fourier W).
DESIGN_COUNTS = {
    "ve/cifar10_ncsnpp_continuous": 62_758_915,
    "ve/cifar10_ncsnpp_deep_continuous": 107_587_075,
    "ve/bedroom_ncsnpp_continuous": 65_574_549,
    "ve/church_ncsnpp_continuous": 65_574_549,
    "ve/celebahq_256_ncsnpp_continuous": 65_574_549,
    "ve/ffhq_256_ncsnpp_continuous": 65_574_549,
    "ve/ffhq_ncsnpp_continuous": 105_785_896,
    "vp/cifar10_ddpmpp_continuous": 61_804_419,
}


# Not in docs/design.md §6: the original DDPM's count, read from score_sde_param_trees.json.
ORIGINAL_ONLY = ["vp/ddpm/cifar10"]


def _tree_digest(flat):
    return hashlib.sha256("\n".join(f"{k}:{tuple(s)}" for k, s in flat).encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(DESIGN_COUNTS) + ORIGINAL_ONLY)
def test_full_size_tree_equals_original(name):
    """Count (docs/design.md §6) and every path and shape of the original score_sde model."""
    flat = flat_param_shapes(load_config(name))
    with open(os.path.join(DATA, "score_sde_param_trees.json")) as f:
        original = json.load(f)["configs"][name]
    assert num_params(flat) == DESIGN_COUNTS.get(name, original["num_params"]) == original["num_params"]
    assert len(flat) == original["num_leaves"]
    assert sorted({k.split("/")[0] for k, _ in flat}) == original["top_level_modules"]
    assert _tree_digest(flat) == original["tree_sha256"], "same count but different paths/shapes"


def test_bedroom_tree_has_score_sde_names():
    """Spot-check of names a score_sde checkpoint uses (readable documentation of the tree)."""
    flat = dict(flat_param_shapes(load_config("ve/bedroom_ncsnpp_continuous")))
    assert flat["GaussianFourierProjection_0/W"] == (128,)
    assert flat["Dense_0/kernel"] == (256, 512) and flat["Dense_1/kernel"] == (512, 512)
    assert flat["Conv_0/kernel"] == (3, 3, 3, 128)               # first conv3x3, top scope
    assert flat["ResnetBlockBigGANpp_0/GroupNorm_0/scale"] == (128,)
    assert flat["ResnetBlockBigGANpp_0/Dense_0/kernel"] == (512, 128)
    assert flat["AttnBlockpp_0/NIN_3/W"] == (256, 256)
    assert flat["Combine_0/Conv_0/kernel"] == (1, 1, 3, 128)      # input_skip pyramid
    assert not any(k.startswith(("Downsample_", "Upsample_")) for k in flat)  # no conv: no params


# -- the reference fixture ------------------------------------------------------------------

def _fixture():
    data = np.load(os.path.join(DATA, "ncsnpp_tiny_reference.npz"))
    return data, json.loads(str(data["meta"]))


_META = _fixture()[1]


def _fixture_case(name):
    data, meta = _fixture()
    case = meta["cases"][name]
    config = tiny_config(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in case["overrides"].items()})
    flat, offset = {}, 0
    vector = data[f"{name}/params"]
    for path, shape in case["param_shapes"]:
        size = int(np.prod(shape))
        flat[path] = vector[offset:offset + size].reshape(shape)
        offset += size
    assert offset == vector.size
    return config, case, flat, data[f"{name}/x"], data[f"{name}/labels"], data[f"{name}/out"]


@pytest.mark.parametrize("name", sorted(_META["cases"]))
def test_forward_matches_original_score_sde(name):
    """Same tree (paths and shapes) and same outputs as the original model.

    Tolerance: |ours − original| <= 1e-5 · max|original| + 1e-4 · |original| (float32;
    on the machine that made the fixture the two agree bitwise).
    """
    config, case, flat, x, labels, expected = _fixture_case(name)
    ours = dict(flat_param_shapes(config))
    assert ours == {k: tuple(v.shape) for k, v in flat.items()}      # same names, same shapes
    model = models.create_model(config)
    out = model.apply({"params": unflatten_dict(flat, sep="/")}, x, labels, train=False)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_ddpm_forward_matches_original_score_sde():
    """score_sde's original DDPM network, with deterministic `pattern_params` (not stored)."""
    from tests.data.make_ncsnpp_reference import pattern_params
    data, meta = _fixture()
    case = meta["ddpm_case"]
    config = load_config(case["base_config"])
    config.data.image_size = case["image_size"]
    config.model.update({k: tuple(v) if isinstance(v, list) else v for k, v in case["overrides"].items()})
    expected_shapes = {k: tuple(s) for k, s in case["param_shapes"]}
    assert dict(flat_param_shapes(config)) == expected_shapes
    params = unflatten_dict(pattern_params(list(expected_shapes.items())), sep="/")
    out = models.create_model(config).apply({"params": params}, data["ddpm/x"], data["ddpm/labels"], train=False)
    expected = data["ddpm/out"]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.skipif(_META["jax_version"] != jax.__version__ or _META["flax_version"] != flax.__version__,
                    reason="initial values depend on the jax/flax versions that made the fixture")
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_META["cases"]))
def test_init_equals_original_init(name, request):
    """Same initial values from the same key: same initialisers and same creation order.

    (Flax derives each parameter's key from its path and creation index, so any
    difference in the order modules are created changes these values.) Compiling
    the random initialisers takes ~10 s per case on CPU: run with `-m slow`.
    """
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow on CPU; run with -m slow")
    config, case, _, x, labels, _ = _fixture_case(name)
    model = models.create_model(config)
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    flat = flatten_dict(model.init(rngs, x, labels, train=False)["params"], sep="/")
    h = hashlib.sha256()
    for key in sorted(flat):
        h.update(key.encode())
        h.update(np.ascontiguousarray(flat[key], dtype=np.float32).tobytes())
    assert h.hexdigest() == case["init_sha256"]


# -- behaviour ------------------------------------------------------------------------------

def test_tiny_forward_is_finite_and_shaped():
    config = tiny_config()
    model = models.create_model(config)
    params = random_params(config)
    x = random_images(config)
    out = model.apply({"params": params}, x, jnp.array([0.01, 50.0]), train=False)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))


def test_scale_by_sigma_divides_by_sigma():
    scaled, plain = tiny_config(scale_by_sigma=True), tiny_config(scale_by_sigma=False)
    params = random_params(scaled)
    x, sigmas = random_images(scaled), jnp.array([0.5, 20.0])
    a = models.create_model(scaled).apply({"params": params}, x, sigmas, train=False)
    b = models.create_model(plain).apply({"params": params}, x, sigmas, train=False)
    np.testing.assert_allclose(a * sigmas[:, None, None, None], b, rtol=1e-5, atol=1e-6)


def test_uncentered_model_maps_x_to_2x_minus_1():
    params = random_params(tiny_config())
    x, sigmas = random_images(tiny_config()), jnp.array([0.5, 20.0])
    a = models.create_model(tiny_config(centered=False)).apply({"params": params}, x, sigmas, train=False)
    b = models.create_model(tiny_config(centered=True)).apply({"params": params}, 2 * x - 1, sigmas, train=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dropout_needs_train_flag_and_rng():
    config = tiny_config(dropout=0.5)
    model, params, x = models.create_model(config), random_params(config), random_images(config)
    sigmas = jnp.array([0.5, 20.0])
    eval_out = model.apply({"params": params}, x, sigmas, train=False)
    np.testing.assert_array_equal(eval_out, model.apply({"params": params}, x, sigmas, train=False))
    # An 'rbg' key: threefry bits for many 4-D shapes take seconds to compile on CPU.
    rng = jax.random.key(0, impl="rbg")
    train_out = model.apply({"params": params}, x, sigmas, train=True, rngs={"dropout": rng})
    assert not np.allclose(train_out, eval_out)


def test_bad_switch_and_unknown_model_raise():
    with pytest.raises(ValueError, match="progressive"):
        models.init_params(tiny_config(progressive="skip"), jax.random.PRNGKey(0))
    config = tiny_config()
    config.model.name = "no_such_model"
    with pytest.raises(ValueError, match="no_such_model"):
        models.create_model(config)
    config = tiny_config()
    config.training.continuous = False
    with pytest.raises(ValueError, match="continuous"):
        models.create_model(config)


def test_fir_resampling_preserves_constants_and_shapes():
    @jax.jit  # one compilation instead of dozens of eager slice ops
    def resample(x, y):
        return (fir_ops.upsample_2d(x, (1, 3, 3, 1)), fir_ops.downsample_2d(x, (1, 3, 3, 1)),
                fir_ops.upsample_2d(y, (1, 1)), fir_ops.naive_upsample_2d(y),
                fir_ops.downsample_2d(y, (1, 1)), fir_ops.naive_downsample_2d(y))

    x = jnp.ones((1, 8, 8, 2))
    y = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
    up, down, up_fir, up_naive, down_fir, down_naive = resample(x, y)
    assert up.shape == (1, 16, 16, 2) and down.shape == (1, 4, 4, 2)
    np.testing.assert_allclose(up[:, 2:-2, 2:-2], 1.0, rtol=1e-6)   # away from the zero border
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 1.0, rtol=1e-6)
    # A [1, 1] filter is nearest-neighbour upsampling / 2×2 average pooling.
    np.testing.assert_allclose(up_fir, up_naive, rtol=1e-6)
    np.testing.assert_allclose(down_fir, down_naive, rtol=1e-6)


def _numpy_upfirdn(x, k, up, down, pad, gain):
    """Reference: zero insertion, pad/crop, 'valid' true convolution, decimation, per axis."""
    k = np.asarray(k, np.float64) / np.sum(k)
    out = np.asarray(x, np.float64)
    for axis, taps in ((1, k * gain), (2, k)):
        out = np.moveaxis(out, axis, -1)
        y = np.zeros(out.shape[:-1] + (out.shape[-1] * up,))
        y[..., ::up] = out
        y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(max(pad[0], 0), max(pad[1], 0))])
        y = y[..., max(-pad[0], 0):y.shape[-1] - max(-pad[1], 0)]
        y = np.apply_along_axis(lambda v: np.convolve(v, taps, "valid"), -1, y)[..., ::down]
        out = np.moveaxis(y, -1, axis)
    return out


@pytest.mark.parametrize("up,down,pad,taps", [
    (2, 1, (2, 1), (1, 3, 3, 1)), (1, 2, (1, 1), (1, 3, 3, 1)), (1, 1, (2, 2), (1, 3, 3, 1)),
    (3, 1, (-1, 2), (1, 2, 5)), (1, 3, (0, -1), (2, 1, 1, 4, 1)), (2, 2, (1, 0), (1, 2))])
def test_upfirdn_matches_numpy_reference(up, down, pad, taps):
    """Both code paths: separable 1-D kernel (slices) and 2-D kernel (depthwise conv)."""
    x = np.random.default_rng(0).standard_normal((2, 7, 7, 3)).astype(np.float32)
    expected = _numpy_upfirdn(x, taps, up, down, pad, gain=1.5)
    separable, general = jax.jit(lambda x: (
        fir_ops.upfirdn2d(x, taps, up, down, pad, gain=1.5),
        fir_ops.upfirdn2d(x, np.outer(taps, taps), up, down, pad, gain=1.5)))(jnp.asarray(x))
    np.testing.assert_allclose(separable, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(general, expected, rtol=1e-5, atol=1e-5)


def test_positional_embedding_matches_formula():
    t = jnp.array([0.0, 3.0, 999.0])
    emb = layers.timestep_embedding(t, 8)
    freqs = np.exp(-np.log(10000) * np.arange(4) / 3)
    expected = np.concatenate([np.sin(np.outer(t, freqs)), np.cos(np.outer(t, freqs))], axis=1)
    np.testing.assert_allclose(emb, expected, rtol=1e-4, atol=1e-4)


# -- score functions --------------------------------------------------------------------------

def _raw(model, params, x, labels):
    return model.apply({"params": params}, x, labels, train=False)


def test_ve_continuous_score_is_model_output_at_sigma():
    config = tiny_config()
    model, params, x = models.create_model(config), random_params(config), random_images(config)
    sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
    t = jnp.array([0.1, 0.9])
    score = models.get_score_fn(sde, model, params)(x, t)
    np.testing.assert_allclose(score, _raw(model, params, x, sde.sigma(t)), rtol=1e-6)


def test_ve_discrete_labels_are_reversed_indices():
    config = tiny_config(embedding_type="positional")
    config.training.continuous = False
    model, params, x = models.create_model(config), random_params(config), random_images(config)
    sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
    t = jnp.array([1.0, 0.25])
    score = models.get_score_fn(sde, model, params, continuous=False)(x, t)
    np.testing.assert_allclose(score, _raw(model, params, x, jnp.array([0, 749])), rtol=1e-6)


def test_vp_scores_divide_by_minus_std():
    config = tiny_config(embedding_type="positional", scale_by_sigma=False, centered=True)
    model, params, x = models.create_model(config), random_params(config), random_images(config)
    sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    t = jnp.array([0.3, 0.8])
    score = models.get_score_fn(sde, model, params, continuous=True)(x, t)
    std = sde.marginal_prob(jnp.zeros_like(x), t)[1]
    np.testing.assert_allclose(score, -_raw(model, params, x, 999 * t) / std[:, None, None, None], rtol=1e-5)
    discrete = models.get_score_fn(sde, model, params, continuous=False)(x, t)
    idx = (t * 999).astype(jnp.int32)
    expected = -_raw(model, params, x, t * 999) / sde.sqrt_1m_alphas_cumprod[idx][:, None, None, None]
    np.testing.assert_allclose(discrete, expected, rtol=1e-5)


def test_score_fn_is_a_pytree_passed_into_jit():
    """Params are traced arguments, not constants; equal models reuse the compilation."""
    config = tiny_config(ch_mult=(1,), attn_resolutions=(), fir=False)  # quick to compile
    config.data.image_size = 8
    model, params, x = models.create_model(config), random_params(config), random_images(config)
    sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
    score_fn = models.get_score_fn(sde, model, params)
    assert isinstance(score_fn, jax.tree_util.Partial)
    assert len(jax.tree.leaves(score_fn)) == len(jax.tree.leaves(params))
    traces = []

    @jax.jit
    def sampler_step(fn, x, t):
        traces.append(1)
        return x + 0.1 * fn(x, t)

    t = jnp.full((2,), 0.5)
    out = sampler_step(score_fn, x, t)
    np.testing.assert_allclose(out, x + 0.1 * score_fn(x, t), rtol=1e-5, atol=1e-6)
    doubled = jax.tree.map(lambda p: 2 * p, params)
    sampler_step(models.get_score_fn(sde, models.create_model(config), doubled), x, t)
    assert len(traces) == 1
    # Every parameter is an argument of the compiled program.
    lowered = jax.jit(lambda fn, x, t: fn(x, t)).lower(score_fn, x, t)
    assert len(jax.tree.leaves(lowered.args_info)) == len(jax.tree.leaves(params)) + 2
