"""Input pipelines (pds_jax.data): local folders, array files, offline Fashion-MNIST, tfds.

Every dataset here is generated in a tmp dir; nothing touches the network.
"""

import gzip
import os
import struct
import time

import ml_collections
import numpy as np
import pytest
from PIL import Image

from pds_jax import data, fashion_mnist
from pds_jax.data import DatasetError


def make_config(dataset="folder", folder="", image_size=16, num_channels=3, centered=False, **extra):
    cfg = ml_collections.ConfigDict()
    cfg.data = ml_collections.ConfigDict(dict(
        dataset=dataset, folder=folder, image_size=image_size, num_channels=num_channels,
        centered=centered, random_flip=False, uniform_dequantization=False, tfds_data_dir="",
        split="train"))
    cfg.data.update(extra)
    return cfg


def random_images(n, h, w, c=3, seed=0):
    shape = (n, h, w) if c is None else (n, h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_folder(root, imgs, nested=False, ext="png"):
    for k, img in enumerate(imgs):
        sub = os.path.join(root, f"class_{k % 2}") if nested else root
        os.makedirs(sub, exist_ok=True)
        Image.fromarray(img).save(os.path.join(sub, f"img_{k:03d}.{ext}"))
    return root


def collect(cfg, **kwargs):
    return np.concatenate(list(data.get_dataset(cfg, **kwargs)), axis=0)


# --------------------------------------------------------------------------- folders
@pytest.mark.parametrize("nested", [False, True])
def test_folder_rgb_round_trip(tmp_path, nested):
    imgs = random_images(5, 16, 16)
    write_folder(str(tmp_path), imgs, nested=nested)
    out = collect(make_config(folder=str(tmp_path)), batch_size=2)
    # files are read in sorted-path order; with class folders that regroups them
    paths = sorted(os.path.relpath(p, tmp_path) for p in data.open_local_source(
        make_config(folder=str(tmp_path))).paths)
    order = [int(p.split("img_")[1][:3]) for p in paths]
    assert out.shape == (5, 16, 16, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, imgs[order] / 255.0, atol=1e-6)


def test_folder_grayscale_to_rgb_and_back(tmp_path):
    grey = random_images(3, 16, 16, c=None)
    write_folder(str(tmp_path), grey)
    rgb = collect(make_config(folder=str(tmp_path), num_channels=3))
    np.testing.assert_allclose(rgb, np.repeat(grey[..., None], 3, -1) / 255.0, atol=1e-6)
    one = collect(make_config(folder=str(tmp_path), num_channels=1))
    np.testing.assert_allclose(one[..., 0], grey / 255.0, atol=1e-6)


def test_rgb_to_grayscale_uses_bt601_luma(tmp_path):
    imgs = random_images(2, 16, 16)
    write_folder(str(tmp_path), imgs)
    one = collect(make_config(folder=str(tmp_path), num_channels=1))
    want = (imgs / 255.0) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(one[..., 0], want, atol=1e-5)


def test_folder_crop_resize_and_centering(tmp_path):
    # 40×24 JPEGs: central 24×24 crop, bicubic resize to 16×16; centered data in [-1, 1]
    imgs = random_images(3, 40, 24)
    write_folder(str(tmp_path), imgs, ext="jpg")
    x01 = collect(make_config(folder=str(tmp_path)))
    xc = collect(make_config(folder=str(tmp_path), centered=True))
    assert x01.shape == (3, 16, 16, 3)
    assert 0.0 <= x01.min() and x01.max() <= 1.0
    np.testing.assert_allclose(xc, 2 * x01 - 1, atol=1e-6)
    np.testing.assert_allclose(data.get_data_inverse_scaler(make_config(centered=True))(xc), x01, atol=1e-6)


def test_corrupt_image_error_names_the_file(tmp_path):
    write_folder(str(tmp_path), random_images(3, 16, 16))
    bad = tmp_path / "img_001.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    with pytest.raises(DatasetError, match="img_001.png"):
        collect(make_config(folder=str(tmp_path)))


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        data.get_dataset(make_config(folder=str(tmp_path / "nope")))
    with pytest.raises(DatasetError, match="no image files"):
        data.get_dataset(make_config(folder=str(tmp_path)))
    with pytest.raises(DatasetError, match="config.data.folder"):
        data.get_dataset(make_config(folder=""))


# --------------------------------------------------------------------------- arrays
def test_npy_nhw_uint8(tmp_path):
    grey = random_images(7, 16, 16, c=None)
    np.save(tmp_path / "x.npy", grey)
    out = collect(make_config("arrays", str(tmp_path / "x.npy"), num_channels=1), batch_size=3)
    np.testing.assert_allclose(out[..., 0], grey / 255.0, atol=1e-6)


def test_npz_nhwc_float_and_resize(tmp_path):
    x = np.random.default_rng(1).random((4, 32, 32, 3)).astype(np.float32)
    np.savez(tmp_path / "x.npz", images=x, labels=np.arange(4))
    same = collect(make_config("arrays", str(tmp_path / "x.npz"), image_size=32))
    np.testing.assert_array_equal(same, x)
    small = collect(make_config("arrays", str(tmp_path / "x.npz"), image_size=16))
    assert small.shape == (4, 16, 16, 3)
    # antialiased downsampling ≈ a 2×2 box mean on smooth statistics
    assert abs(small.mean() - x.mean()) < 1e-2


def test_bad_arrays_are_explained(tmp_path):
    np.save(tmp_path / "f.npy", np.full((2, 8, 8, 3), 255.0, np.float32))
    with pytest.raises(DatasetError, match=r"\[0, 1\]"):
        collect(make_config("arrays", str(tmp_path / "f.npy"), image_size=8))
    np.save(tmp_path / "nchw.npy", np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(DatasetError, match="NCHW"):
        data.get_dataset(make_config("arrays", str(tmp_path / "nchw.npy"), image_size=8))
    with pytest.raises(DatasetError, match="folder"):
        data.get_dataset(make_config("arrays", str(tmp_path)))


def test_seeded_shuffle_subset_and_remainder(tmp_path):
    x = random_images(20, 8, 8)
    np.save(tmp_path / "x.npy", x)
    cfg = make_config("arrays", str(tmp_path / "x.npy"), image_size=8)
    a = collect(cfg, shuffle=True, seed=3, num_images=9, batch_size=4)
    b = collect(cfg, shuffle=True, seed=3, num_images=9, batch_size=2)
    c = collect(cfg, shuffle=True, seed=4, num_images=9, batch_size=4)
    assert a.shape[0] == 9
    np.testing.assert_array_equal(a, b)  # same seed, same images whatever the batch size
    assert not np.array_equal(a, c)
    plain = collect(cfg, num_images=9)
    np.testing.assert_allclose(plain, x[:9] / 255.0, atol=1e-6)
    sizes = [len(batch) for batch in data.get_dataset(cfg, batch_size=6, drop_remainder=True)]
    assert sizes == [6, 6, 6]
    sizes = [len(batch) for batch in data.get_dataset(cfg, batch_size=6, num_epochs=2)]
    assert sizes == [6, 6, 6, 2] * 2


def test_flip_only_when_training(tmp_path):
    x = random_images(16, 8, 8)
    np.save(tmp_path / "x.npy", x)
    cfg = make_config("arrays", str(tmp_path / "x.npy"), image_size=8, random_flip=True)
    plain = collect(cfg)
    np.testing.assert_allclose(plain, x / 255.0, atol=1e-6)  # statistics: never flipped
    aug = collect(cfg, train=True, seed=0)
    flipped = [not np.array_equal(aug[k], plain[k]) for k in range(16)]
    assert 0 < sum(flipped) < 16
    for k in np.flatnonzero(flipped):
        np.testing.assert_array_equal(aug[k], plain[k][:, ::-1])
    np.testing.assert_array_equal(aug, collect(cfg, train=True, seed=0))


# --------------------------------------------------------------------------- Fashion-MNIST
def _write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def write_fashion_mnist(folder, n_train=6, n_test=3):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        img_name, lbl_name = fashion_mnist.FILES[split]
        _write_idx(os.path.join(folder, img_name), imgs)
        _write_idx(os.path.join(folder, lbl_name), np.arange(n) % 10)
        out[split] = imgs
    return out


def test_fashion_mnist_local_from_idx_files(tmp_path):
    truth = write_fashion_mnist(str(tmp_path))
    cfg = make_config("fashion_mnist_local", str(tmp_path), image_size=32, num_channels=1)
    out = collect(cfg, batch_size=4)
    assert out.shape == (6, 32, 32, 1)
    np.testing.assert_allclose(out[:, 2:30, 2:30, 0], truth["train"] / 255.0, atol=1e-6)
    assert np.all(out[:, :2] == 0) and np.all(out[:, :, 30:] == 0)  # zero padding, not resizing
    test = collect(cfg, split="test")
    np.testing.assert_allclose(test[:, 2:30, 2:30, 0], truth["test"] / 255.0, atol=1e-6)
    big = collect(make_config("fashion_mnist_local", str(tmp_path), image_size=56, num_channels=3))
    assert big.shape == (6, 56, 56, 3)


def test_fashion_mnist_local_missing_files_say_what_to_do(tmp_path):
    cfg = make_config("fashion_mnist_local", str(tmp_path), image_size=32, num_channels=1)
    with pytest.raises(DatasetError, match="dataset-fashion-mnist|folder"):
        list(data.get_dataset(cfg))


def test_real_fashion_mnist_if_installed():
    try:
        fashion_mnist.find_data_dir()
    except FileNotFoundError:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    cfg = make_config("fashion_mnist_local", "", image_size=32, num_channels=1)
    x = collect(cfg, shuffle=True, seed=0, num_images=20, batch_size=8)
    assert x.shape == (20, 32, 32, 1) and 0.2 < x.max() <= 1.0


# --------------------------------------------------------------------------- tfds
def test_unknown_tfds_name_fails_fast():
    start = time.perf_counter()
    with pytest.raises(DatasetError, match="config.data.dataset=folder"):
        data.get_dataset(make_config("no_such_dataset_pds_jax"))
    assert time.perf_counter() - start < 20


def test_unprepared_tfds_dataset_fails_fast(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DatasetError, match="tfds_data_dir"):
        data.get_dataset(make_config("cifar10", tfds_data_dir=str(tmp_path)))
    assert time.perf_counter() - start < 20


_TINY = {}


def tiny_tfds_dataset(data_dir):
    """A 12-image tfds builder, defined once per process and prepared offline in data_dir."""
    import tensorflow_datasets as tfds

    if "cls" not in _TINY:
        class PdsJaxTinyImages(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                    {"image": tfds.features.Image(shape=(None, None, 3)),
                     "label": tfds.features.ClassLabel(num_classes=2)}))

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples()}

            def _generate_examples(self):
                for k, img in enumerate(random_images(12, 24, 20, seed=5)):
                    yield k, {"image": img, "label": k % 2}

        _TINY["cls"] = PdsJaxTinyImages
    _TINY["cls"](data_dir=data_dir).download_and_prepare()
    return "pds_jax_tiny_images", random_images(12, 24, 20, seed=5)


def test_prepared_tfds_dataset_matches_local_preprocessing(tmp_path):
    name, imgs = tiny_tfds_dataset(str(tmp_path / "tfds"))
    cfg = make_config(name, image_size=16, tfds_data_dir=str(tmp_path / "tfds"))
    out = collect(cfg, batch_size=5)
    assert out.shape == (12, 16, 16, 3)
    np.save(tmp_path / "x.npy", imgs)
    local = collect(make_config("arrays", str(tmp_path / "x.npy"), image_size=16))
    # tfds may store examples in another order: compare as sets of images
    key = lambda a: sorted(map(bytes, np.round(a * 255).astype(np.uint8).reshape(len(a), -1)))
    assert key(out) == key(local)
    a = collect(cfg, shuffle=True, seed=1, num_images=7, batch_size=3)
    b = collect(cfg, shuffle=True, seed=1, num_images=7, batch_size=7)
    assert a.shape[0] == 7
    np.testing.assert_array_equal(a, b)
    with pytest.raises(DatasetError, match="split"):
        data.get_dataset(cfg, split="validation")


def test_tfds_process_parts_together_are_the_one_process_subset(tmp_path):
    """P processes of a tfds pass (`part=(i, P)`) read exactly the images one process reads: with
    num_images, the same seeded subset in the same order (before: each took the first images of
    its own file split, another subset); without, the whole split, each image once."""
    name, _ = tiny_tfds_dataset(str(tmp_path / "tfds"))
    cfg = make_config(name, image_size=16, tfds_data_dir=str(tmp_path / "tfds"))
    as_rows = lambda a: [bytes(r) for r in np.round(a * 255).astype(np.uint8).reshape(len(a), -1)]  # noqa: E731
    one = collect(cfg, shuffle=True, seed=3, num_images=7, batch_size=4)
    parts = [list(data.get_dataset(cfg, shuffle=True, seed=3, num_images=7, batch_size=4, part=(i, 3)))
             for i in range(3)]
    joined = np.concatenate([b for part in parts for b in part])
    assert [sum(len(b) for b in part) for part in parts] == [2, 2, 3]
    assert as_rows(joined) == as_rows(one)
    whole = collect(cfg, batch_size=5)
    split = np.concatenate([b for i in range(3) for b in data.get_dataset(cfg, batch_size=5, part=(i, 3))])
    assert sorted(as_rows(split)) == sorted(as_rows(whole)) and len(split) == 12
