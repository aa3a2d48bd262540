"""Tests of the feature networks: FID Inception-v3 (random weights) and the shipped
Fashion-MNIST classifier with its reference statistics.

No torch and no Inception weights are needed: the weight-conversion path is tested
with a fake pytorch-fid state dict built with NumPy from torchvision's layer table,
and the network's arithmetic against NumPy re-implementations of PyTorch's ops.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pds_jax import fashion_mnist, feature_nets, inception, metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --------------------------------------------------------- a fake pytorch-fid file


def _torch_layer_table():
    """(module path, in_ch, out_ch, kh, kw) of every BasicConv2d in pytorch-fid's
    FID Inception (torchvision `Inception3` + FIDInceptionA/C/E), in PyTorch naming."""
    layers = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3),
              ("Conv2d_2b_3x3", 32, 64, 3, 3), ("Conv2d_3b_1x1", 64, 80, 1, 1),
              ("Conv2d_4a_3x3", 80, 192, 3, 3)]

    def block(name, convs):
        layers.extend((f"{name}.{n}", i, o, kh, kw) for n, i, o, kh, kw in convs)

    for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        block(name, [("branch1x1", cin, 64, 1, 1), ("branch5x5_1", cin, 48, 1, 1),
                     ("branch5x5_2", 48, 64, 5, 5), ("branch3x3dbl_1", cin, 64, 1, 1),
                     ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3),
                     ("branch_pool", cin, pool, 1, 1)])
    block("Mixed_6a", [("branch3x3", 288, 384, 3, 3), ("branch3x3dbl_1", 288, 64, 1, 1),
                       ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3)])
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        block(name, [("branch1x1", 768, 192, 1, 1), ("branch7x7_1", 768, c7, 1, 1),
                     ("branch7x7_2", c7, c7, 1, 7), ("branch7x7_3", c7, 192, 7, 1),
                     ("branch7x7dbl_1", 768, c7, 1, 1), ("branch7x7dbl_2", c7, c7, 7, 1),
                     ("branch7x7dbl_3", c7, c7, 1, 7), ("branch7x7dbl_4", c7, c7, 7, 1),
                     ("branch7x7dbl_5", c7, 192, 1, 7), ("branch_pool", 768, 192, 1, 1)])
    block("Mixed_7a", [("branch3x3_1", 768, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3),
                       ("branch7x7x3_1", 768, 192, 1, 1), ("branch7x7x3_2", 192, 192, 1, 7),
                       ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)])
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        block(name, [("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1),
                     ("branch3x3_2a", 384, 384, 1, 3), ("branch3x3_2b", 384, 384, 3, 1),
                     ("branch3x3dbl_1", cin, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
                     ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1),
                     ("branch_pool", cin, 192, 1, 1)])
    return layers


def _fake_state_dict(seed=0):
    rng = np.random.default_rng(seed)
    sd = {}
    for name, cin, cout, kh, kw in _torch_layer_table():
        sd[f"{name}.conv.weight"] = (rng.normal(size=(cout, cin, kh, kw))
                                     * np.sqrt(2.0 / (cin * kh * kw))).astype(np.float32)
        sd[f"{name}.bn.weight"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        sd[f"{name}.bn.bias"] = rng.normal(0, 0.1, cout).astype(np.float32)
        sd[f"{name}.bn.running_mean"] = rng.normal(0, 0.1, cout).astype(np.float32)
        sd[f"{name}.bn.running_var"] = rng.uniform(0.5, 2.0, cout).astype(np.float32)
        sd[f"{name}.bn.num_batches_tracked"] = np.array(0, np.int64)
    sd["fc.weight"] = np.zeros((1008, 2048), np.float32)
    sd["fc.bias"] = np.zeros(1008, np.float32)
    return sd


@pytest.fixture(scope="module")
def converted_weights(tmp_path_factory):
    flat, dropped = inception.convert_pytorch_fid_state_dict(_fake_state_dict())
    path = str(tmp_path_factory.mktemp("inception") / "fid_inception.npz")
    np.savez(path, **flat)
    return path, flat, dropped


# ---------------------------------------------------------------- Inception-v3


def test_inception_has_torchvisions_parameter_count():
    # torchvision's Inception_V3_Weights metadata: 27,161,264 parameters including the
    # aux head (conv0 768→128 1×1 + BN, conv1 128→768 5×5 + BN, fc 768→1000) and the
    # 1000-way fc; the pool3 trunk is what remains.
    aux = 768 * 128 + 2 * 128 + 128 * 768 * 25 + 2 * 768 + 768 * 1000 + 1000
    fc = 2048 * 1000 + 1000
    shapes = inception.expected_shapes()
    trainable = sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith("params/"))
    assert trainable == 27_161_264 - aux - fc == 21_785_568


def test_converter_maps_a_pytorch_fid_state_dict_onto_the_flax_tree(converted_weights):
    path, flat, dropped = converted_weights
    sd = _fake_state_dict()
    variables = inception.load_inception_params(path)   # validates every key and shape
    assert set(variables) == {"params", "batch_stats"}
    assert len(dropped) == 2 + len(_torch_layer_table())  # fc.* + num_batches_tracked
    assert "fc.weight" in dropped
    # OIHW → HWIO transpose (no reshape, no flip), checked on a non-square kernel
    w = sd["Mixed_6b.branch7x7_2.conv.weight"]            # (O, I, 1, 7)
    k = np.asarray(variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"])
    assert k.shape == (1, 7, 128, 128)
    assert k[0, 5, 3, 9] == w[9, 3, 0, 5]
    bn = variables["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]
    np.testing.assert_array_equal(bn["var"], sd["Mixed_7c.branch_pool.bn.running_var"])
    np.testing.assert_array_equal(variables["params"]["Conv2d_1a_3x3"]["bn"]["scale"],
                                  sd["Conv2d_1a_3x3.bn.weight"])


def test_conversion_script_writes_a_loadable_file(tmp_path, monkeypatch):
    """scripts/convert_fid_inception_weights.py end to end, torch replaced by the fake."""
    spec = importlib.util.spec_from_file_location(
        "convert_fid_inception_weights",
        os.path.join(REPO, "scripts", "convert_fid_inception_weights.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "read_torch_state_dict", lambda path: _fake_state_dict())
    out = str(tmp_path / "fid_inception.npz")
    script.main(["pt_inception-2015-12-05-6726825d.pth", out])
    variables = inception.load_inception_params(out)
    np.testing.assert_array_equal(variables["params"]["Mixed_5b"]["branch_pool"]["bn"]["bias"],
                                  _fake_state_dict()["Mixed_5b.branch_pool.bn.bias"])


def test_converter_refuses_unknown_entries():
    sd = _fake_state_dict()
    sd["Mixed_5b.branch1x1.conv.bias"] = np.zeros(64, np.float32)
    with pytest.raises(ValueError, match="Mixed_5b.branch1x1.conv.bias"):
        inception.convert_pytorch_fid_state_dict(sd)


def test_wrong_weights_file_lists_the_offending_keys(tmp_path, converted_weights):
    _, flat, _ = converted_weights
    bad = dict(flat)
    del bad["params/Mixed_6e/branch7x7dbl_3/conv/kernel"]
    bad["params/Mixed_8a/branch1x1/conv/kernel"] = np.zeros((1, 1, 2, 2), np.float32)
    bad["batch_stats/Conv2d_1a_3x3/bn/mean"] = np.zeros(31, np.float32)
    path = str(tmp_path / "bad.npz")
    np.savez(path, **bad)
    with pytest.raises(ValueError) as err:
        inception.load_inception_params(path)
    msg = str(err.value)
    assert "missing (1)" in msg and "params/Mixed_6e/branch7x7dbl_3/conv/kernel" in msg
    assert "unexpected (1)" in msg and "params/Mixed_8a/branch1x1/conv/kernel" in msg
    assert "batch_stats/Conv2d_1a_3x3/bn/mean: got (31,), expected (32,)" in msg
    assert "convert_fid_inception_weights.py" in msg
    with pytest.raises(FileNotFoundError, match="convert_fid_inception_weights.py"):
        inception.load_inception_params(str(tmp_path / "absent.npz"))


def test_basic_conv_matches_pytorch_conv_bn_relu_in_numpy():
    """One converted BasicConv2d (1×3 kernel, padding (0, 1)) against a NumPy
    cross-correlation with PyTorch's OIHW layout, then BN(ε=1e-3) and ReLU."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 4, 1, 3)).astype(np.float32)         # OIHW
    gamma, beta = rng.uniform(0.5, 1.5, 5), rng.normal(size=5)
    mean, var = rng.normal(size=5), rng.uniform(0.5, 2, 5)
    sd = {"c.conv.weight": w, "c.bn.weight": gamma, "c.bn.bias": beta,
          "c.bn.running_mean": mean, "c.bn.running_var": var}
    flat, _ = inception.convert_pytorch_fid_state_dict(sd)
    variables = {"params": {"conv": {"kernel": flat["params/c/conv/kernel"]},
                            "bn": {"scale": flat["params/c/bn/scale"], "bias": flat["params/c/bn/bias"]}},
                 "batch_stats": {"bn": {"mean": flat["batch_stats/c/bn/mean"],
                                        "var": flat["batch_stats/c/bn/var"]}}}
    x = rng.normal(size=(2, 6, 7, 4)).astype(np.float32)
    got = inception.BasicConv2d(5, (1, 3), padding=((0, 0), (1, 1))).apply(variables, x)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0))).astype(np.float64)
    conv = np.zeros((2, 6, 7, 5))
    for kx in range(3):
        conv += np.einsum("bhwi,oi->bhwo", xp[:, :, kx:kx + 7], w[:, :, 0, kx])
    ref = np.maximum((conv - mean) / np.sqrt(var + 1e-3) * gamma + beta, 0)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-4)


def _torch_bilinear_numpy(img, size):
    """PyTorch F.interpolate(bilinear, align_corners=False) for (H, W) in NumPy."""
    def axis_weights(n_in):
        src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0
    r0, r1, fy = axis_weights(img.shape[0])
    c0, c1, fx = axis_weights(img.shape[1])
    top = img[r0][:, c0] * (1 - fx) + img[r0][:, c1] * fx
    bottom = img[r1][:, c0] * (1 - fx) + img[r1][:, c1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


@pytest.mark.parametrize("h,w,size", [(5, 5, 9), (32, 32, 299), (13, 11, 7)])
def test_resize_matches_pytorch_bilinear_without_antialias(h, w, size):
    img = np.random.default_rng(h).uniform(size=(h, w)).astype(np.float32)
    got = inception.resize_bilinear(jnp.asarray(img)[None, :, :, None], size)[0, :, :, 0]
    np.testing.assert_allclose(np.asarray(got), _torch_bilinear_numpy(img.astype(np.float64), size),
                               atol=1e-5)


def test_preprocessing_maps_unit_range_to_plus_minus_one_at_299():
    gray = jnp.stack([jnp.zeros((28, 28, 1)), jnp.full((28, 28, 1), 0.25), jnp.ones((28, 28, 1))])
    x = np.asarray(inception.preprocess(gray))
    assert x.shape == (3, 299, 299, 3)
    np.testing.assert_allclose(x[0], -1.0)
    np.testing.assert_allclose(x[1], -0.5, rtol=1e-6)
    np.testing.assert_allclose(x[2], 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        inception.preprocess(jnp.zeros((1, 8, 8, 2)))


def test_fid_variant_pooling_quirks():
    # count_include_pad=False: a constant image stays constant, corners included
    ones = jnp.ones((1, 5, 5, 2))
    np.testing.assert_allclose(np.asarray(inception._avg_pool_3x3_same(ones)), 1.0, rtol=1e-6)
    # max pools: 2 in the stem, 1 in Mixed_6a, 1 in Mixed_7a and the FID graph's
    # max-pool branch of Mixed_7c (torchvision's Inception would have 4)
    variables = inception.init_inception_params()
    jaxpr = jax.make_jaxpr(inception.InceptionV3(resize_to=None).apply)(
        variables, jnp.zeros((1, 75, 75, 3)))
    assert _count_primitives(jaxpr.jaxpr, "reduce_window_max") == 5


def _count_primitives(jaxpr, name):
    """Occurrences of primitive `name` in a jaxpr, nested (pjit, ...) jaxprs included."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == name
        for value in eqn.params.values():
            for sub in (value if isinstance(value, (tuple, list)) else (value,)):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr → Jaxpr
                if hasattr(inner, "eqns"):
                    count += _count_primitives(inner, name)
    return count


def test_inception_forward_gives_finite_2048_features(converted_weights):
    extractor = feature_nets.get_feature_fn("inception", weights_path=converted_weights[0])
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype(np.float32)
    feats = np.asarray(jax.jit(extractor.apply)(extractor.params, images))  # resized to 299
    assert feats.shape == (2, 2048) and extractor.dim == 2048
    assert np.all(np.isfinite(feats)) and np.all(feats >= 0)  # pool3 follows a ReLU
    assert np.abs(feats[0] - feats[1]).max() > 1e-3 * np.abs(feats).max()
    # grayscale input = the same image repeated on three channels
    rgb = np.asarray(jax.jit(extractor.apply)(extractor.params, np.repeat(images, 3, -1)))
    np.testing.assert_allclose(feats, rgb, rtol=1e-5, atol=1e-6)


def test_inception_without_weights_explains_how_to_get_them(monkeypatch):
    monkeypatch.delenv(feature_nets.INCEPTION_ENV_VAR, raising=False)
    with pytest.raises(ValueError, match="pt_inception-2015-12-05.*convert_fid_inception_weights"):
        feature_nets.get_feature_fn("inception")
    with pytest.raises(ValueError, match="unknown feature net 'vgg'"):
        feature_nets.get_feature_fn("vgg")


# ------------------------------------------------------ Fashion-MNIST classifier


def _fashion_mnist_test_set(n):
    try:
        fashion_mnist.find_data_dir()
    except FileNotFoundError as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    images, labels = fashion_mnist.load("test")
    return feature_nets.prepare_fashion_mnist(images[:n]), labels[:n]


def test_shipped_classifier_loads_and_gives_128d_features():
    extractor = feature_nets.get_feature_fn("fashion_mnist")
    assert (extractor.name, extractor.dim) == ("fashion_mnist", 128)
    images = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    feats = np.asarray(extractor(images))
    assert feats.shape == (3, 128) and np.all(np.isfinite(feats))
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))  # 28×28 input = pad_to_32
    np.testing.assert_allclose(np.asarray(extractor(padded)), feats, rtol=1e-6)
    with pytest.raises(ValueError, match="grayscale"):
        extractor(np.zeros((1, 32, 32, 3), np.float32))


def test_shipped_classifier_reaches_90_percent_on_the_test_set():
    images, labels = _fashion_mnist_test_set(2000)
    params = feature_nets.load_classifier_params()
    assert feature_nets.classifier_accuracy(params, images, labels) >= 0.90


def test_shipped_reference_statistics():
    stats = metrics.load_statistics(feature_nets.CLASSIFIER_TRAIN_STATS,
                                    feature_net="fashion_mnist", dim=128)
    assert stats.mean.shape == (128,) and stats.cov.shape == (128, 128)
    assert stats.count == 60_000 and stats.image_size == (32, 32, 1) and stats.features is None
    assert np.all(np.isfinite(stats.mean)) and np.all(np.isfinite(stats.cov))
    np.testing.assert_array_equal(stats.cov, stats.cov.T)
    assert np.linalg.eigvalsh(stats.cov).min() > -1e-9 and np.all(stats.mean >= 0)  # post-ReLU
    shipped = os.listdir(feature_nets.CLASSIFIER_DIR)
    size = sum(os.path.getsize(os.path.join(feature_nets.CLASSIFIER_DIR, f)) for f in shipped)
    assert size < 5 * 2 ** 20  # weights, 60k-image train statistics, 10k test features for KID


def test_fid_with_the_shipped_net_separates_real_from_corrupted_images():
    images, _ = _fashion_mnist_test_set(2000)
    extractor = feature_nets.get_feature_fn("fashion_mnist")
    reference = metrics.load_statistics(feature_nets.CLASSIFIER_TRAIN_STATS, "fashion_mnist", 128)
    noisy = np.clip(images + np.random.default_rng(0).normal(0, 0.2, images.shape), 0, 1)
    fid_real, fid_noisy = (metrics.fid_from_statistics(
        reference, metrics.compute_statistics(x.astype(np.float32), extractor, 500, progress=False))
        for x in (images, noisy))
    assert fid_real < 0.2 * fid_noisy


def test_training_learns_a_trivial_task():
    # bright vs dark images: a few steps must separate them (the training loop works)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 256)
    images = (rng.uniform(0, 0.5, (256, 32, 32, 1)) + 0.5 * labels[:, None, None, None]).astype(np.float32)
    params = feature_nets.train_classifier(images, labels, epochs=2, batch_size=32, progress=False)
    assert feature_nets.classifier_accuracy(params, images, labels) > 0.95


def test_classifier_weights_are_validated(tmp_path):
    params = feature_nets.init_classifier_params()
    params = dict(params)
    params.pop("logits")
    path = str(tmp_path / "p.msgpack")
    feature_nets.save_classifier_params(path, params)
    with pytest.raises(ValueError, match="missing logits/kernel"):
        feature_nets.load_classifier_params(path)
    with pytest.raises(FileNotFoundError, match="train_feature_net.py"):
        feature_nets.load_classifier_params(str(tmp_path / "absent.msgpack"))
