"""PDS filter statistics (pds_jax.filters) and the estimate mode (pds_jax.modes.estimate).

The reference is docs/design.md §3–§4 written out in NumPy float64:
R = log(1 + mean_i |fft2(x_i)|²) (full, unshifted, unnormalised, natural log), A = mean_i x_i².
"""

import json
import os
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest
from PIL import Image

from pds_jax import filters, pds
from pds_jax.filters import FilterMismatchError, FilterStats
from pds_jax.io_utils import OutputExistsError
from pds_jax.precond import Preconditioner, frequency_filter, space_filter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference(x):
    x = np.asarray(x, np.float64)
    power = np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2
    return np.log1p(power.mean(axis=0)), (x ** 2).mean(axis=0)


def images(n=20, size=8, channels=3, seed=0, centered=False):
    x = np.random.default_rng(seed).random((n, size, size, channels)).astype(np.float32)
    return 2 * x - 1 if centered else x


def batched(x, batch_size):
    return (x[i:i + batch_size] for i in range(0, len(x), batch_size))


def make_config(image_size=8, num_channels=3, centered=False, **pds):
    cfg = ml_collections.ConfigDict()
    cfg.data = ml_collections.ConfigDict(dict(
        dataset="folder", folder="", image_size=image_size, num_channels=num_channels,
        centered=centered, random_flip=False, uniform_dequantization=False, tfds_data_dir="",
        split="train"))
    cfg.estimate = ml_collections.ConfigDict(dict(num_images=200, batch_size=50, seed=0, output=""))
    cfg.sampling = ml_collections.ConfigDict(dict(snr=0.16, n_steps_each=1))
    cfg.sampling.pds = ml_collections.ConfigDict(dict(
        alpha=5.0, normalization="normalized", freq_filter="", space_filter="", solenoidal_omega=0.0,
        speed_up=1.0))
    cfg.training = ml_collections.ConfigDict(dict(sde="vesde"))
    cfg.model = ml_collections.ConfigDict(dict(sigma_min=0.01, sigma_max=50.0, num_scales=100))
    cfg.sampling.pds.update(pds)
    return cfg


def assert_stats_close(stats, R, A, rtol=1e-5):
    np.testing.assert_allclose(stats.freq, R, rtol=rtol, atol=1e-5)
    np.testing.assert_allclose(stats.space, A, rtol=rtol, atol=1e-7)


# --------------------------------------------------------------------------- the formulas
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_statistics_equal_numpy_reference(batch_size):
    x = images(20)
    stats = filters.estimate(batched(x, batch_size), 8, 3, num_images=None, progress=False)
    assert stats.count == 20  # 20 = 2·7 + 6: the final partial batch is counted
    R, A = reference(x)
    assert_stats_close(stats, R, A)


def test_centered_data_odd_size_and_one_channel():
    x = images(9, size=7, channels=1, centered=True)
    stats = filters.estimate(batched(x, 4), 7, 1, num_images=None, progress=False, centered=True)
    assert_stats_close(stats, *reference(x))
    assert stats.freq.shape == (7, 7, 1) and stats.centered


def test_num_images_cuts_exactly_inside_a_batch():
    x = images(30)
    stats = filters.estimate(batched(x, 7), 8, 3, num_images=10, progress=False)
    assert stats.count == 10
    assert_stats_close(stats, *reference(x[:10]))


def test_running_out_of_images_warns_and_counts_what_was_seen():
    x = images(5)
    with pytest.warns(RuntimeWarning, match="ran out after 5"):
        stats = filters.estimate(batched(x, 2), 8, 3, num_images=200, progress=False)
    assert stats.count == 5


def test_bad_batches_are_refused():
    with pytest.raises(ValueError, match=r"\(B, 8, 8, 3\)"):
        filters.estimate([images(2, size=16)], 8, 3, progress=False)
    with pytest.raises(TypeError, match="float"):
        filters.estimate([(images(2) * 255).astype(np.uint8)], 8, 3, progress=False)
    with pytest.raises(ValueError, match="no images"):
        filters.estimate([], 8, 3, progress=False)
    bad = images(2)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        filters.estimate([bad], 8, 3, num_images=None, progress=False)


_DEVICE_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    from pds_jax import filters
    n_dev, out = int(sys.argv[1]), sys.argv[2]
    assert jax.local_device_count() == n_dev, jax.devices()
    x = np.random.default_rng(0).random((37, 16, 16, 3)).astype(np.float32)
    res = {}
    for bs in (1, 7, 64):
        s = filters.estimate((x[i:i + bs] for i in range(0, 37, bs)), 16, 3, num_images=None,
                             progress=False)
        assert s.count == 37 and s.extra["devices"] == n_dev
        res[f"freq{bs}"], res[f"space{bs}"] = s.freq, s.space
    np.savez(out, **res)
""")


def _run_on_host_devices(counts, tmp_path):
    """Run _DEVICE_SCRIPT in one subprocess per host-device count (concurrently)."""
    procs = {}
    for n_dev in counts:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_dev}",
                   JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = str(tmp_path / f"stats_{n_dev}.npz")
        procs[n_dev] = (out, subprocess.Popen([sys.executable, "-c", _DEVICE_SCRIPT, str(n_dev), out], env=env,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = {}
    for n_dev, (out, proc) in procs.items():
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        with np.load(out) as z:
            results[n_dev] = dict(z)
    return results


def test_one_and_eight_host_devices_agree(tmp_path):
    runs = _run_on_host_devices((1, 8), tmp_path)
    one, eight = runs[1], runs[8]
    x = np.random.default_rng(0).random((37, 16, 16, 3)).astype(np.float32)
    R, A = reference(x)
    for bs in (1, 7, 64):
        for res in (one, eight):
            np.testing.assert_allclose(res[f"freq{bs}"], R, rtol=1e-5)
            np.testing.assert_allclose(res[f"space{bs}"], A, rtol=1e-5)
        np.testing.assert_allclose(eight[f"freq{bs}"], one[f"freq{bs}"], rtol=1e-6)
        np.testing.assert_allclose(eight[f"space{bs}"], one[f"space{bs}"], rtol=1e-6)
        np.testing.assert_allclose(one[f"freq{bs}"], one["freq1"], rtol=1e-6)
        np.testing.assert_allclose(eight[f"space{bs}"], one["space1"], rtol=1e-6)


# --------------------------------------------------------------------------- files
def test_npz_round_trip_keeps_statistics_and_metadata(tmp_path):
    x = images(6)
    stats = filters.estimate([x], 8, 3, num_images=None, dataset="toy", seed=7, progress=False,
                             extra={"split": "train"})
    path = stats.save(str(tmp_path / "f.npz"))
    back = FilterStats.load(path)
    np.testing.assert_array_equal(back.freq, stats.freq)
    np.testing.assert_array_equal(back.space, stats.space)
    assert (back.count, back.image_size, back.channels, back.centered) == (6, 8, 3, False)
    assert (back.dataset, back.seed, back.date, back.extra["split"]) == ("toy", 7, stats.date, "train")
    assert back.extra["devices"] >= 1 and back.date.startswith("20")
    with np.load(path) as z:  # plain NumPy readers get R and A directly
        np.testing.assert_allclose(z["freq"], stats.freq)
        assert json.loads(str(z["metadata"]))["num_images"] == 6
    with pytest.raises(OutputExistsError):
        stats.save(path)
    stats.save(path, overwrite=True)


def test_official_npy_round_trip_in_both_layouts(tmp_path):
    R, _ = reference(images(4))
    chw = np.moveaxis(R, -1, 0).astype(np.float32)  # what mask_gen_demo.py saves
    np.save(tmp_path / "chw.npy", chw)
    np.save(tmp_path / "nchw.npy", chw[None])
    for name in ("chw.npy", "nchw.npy"):
        np.testing.assert_allclose(filters.load_official_npy(str(tmp_path / name)), R, rtol=1e-6)
    np.save(tmp_path / "hwc.npy", R)
    with pytest.raises(ValueError, match="channel-first"):
        filters.load_official_npy(str(tmp_path / "hwc.npy"))
    np.save(tmp_path / "flat.npy", R.ravel())
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        filters.load_official_npy(str(tmp_path / "flat.npy"))


def test_mismatches_are_explained():
    stats = filters.estimate([images(3)], 8, 3, num_images=None, progress=False)
    filters.check_compatible(stats, make_config())
    with pytest.raises(FilterMismatchError, match="image_size=16"):
        filters.check_compatible(stats, make_config(image_size=16))
    with pytest.raises(FilterMismatchError, match="num_channels=1"):
        filters.check_compatible(stats, make_config(num_channels=1))
    with pytest.raises(FilterMismatchError, match="centered"):
        filters.check_compatible(stats, make_config(centered=True))
    with pytest.raises(FilterMismatchError, match="8×8×1"):
        filters.check_compatible(stats.freq[..., :1], make_config())


# --------------------------------------------------------------------------- config → preconditioner
def test_preconditioner_from_config(tmp_path):
    x = images(5)
    stats = filters.estimate([x], 8, 3, num_images=None, progress=False)
    npz = stats.save(str(tmp_path / "f.npz"))
    np.save(tmp_path / "space.npy", np.moveaxis(stats.space, -1, 0)[None])

    pre = pds.from_config(make_config(freq_filter=npz, space_filter=str(tmp_path / "space.npy"))).precond
    np.testing.assert_allclose(pre.freq, frequency_filter(stats.freq, 5.0), rtol=1e-6)
    np.testing.assert_allclose(pre.space, space_filter(stats.space, 5.0), rtol=1e-6)

    only_space = pds.from_config(make_config(space_filter=npz, alpha=3.0)).precond
    assert only_space.freq is None
    np.testing.assert_allclose(only_space.space, space_filter(stats.space, 3.0), rtol=1e-6)

    ident = pds.from_config(make_config()).precond
    assert isinstance(ident, Preconditioner) and ident.is_identity and ident.shape == (8, 8, 3)
    omega = pds.from_config(make_config(solenoidal_omega=10.0)).precond
    assert omega.solenoidal and float(omega.omega) == 10.0

    with pytest.raises(FilterMismatchError, match="freq_filter"):
        pds.from_config(make_config(image_size=16, freq_filter=npz)).precond
    with pytest.raises(FileNotFoundError, match="space_filter"):
        pds.from_config(make_config(space_filter=str(tmp_path / "missing.npz"))).precond


# --------------------------------------------------------------------------- the estimate mode
def test_estimate_mode_writes_files_and_never_overwrites(tmp_path, capsys):
    from pds_jax.modes import estimate

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    for k, img in enumerate(pixels):
        Image.fromarray(img).save(folder / f"{k}.png")
    cfg = make_config()
    cfg.data.folder = str(folder)
    cfg.estimate.update(num_images=5, batch_size=2, seed=1)
    workdir = str(tmp_path / "work")

    summary = estimate.run(cfg, workdir)
    files = summary["files"]
    assert files["npz"] == os.path.join(workdir, "filters.npz")
    assert all(os.path.isfile(p) for p in files.values())
    assert summary["count"] == 5 and summary["shape"] == [8, 8, 3]
    assert 1.0 <= summary["D_alpha5_normalized"]["min"] <= summary["D_alpha5_normalized"]["max"] <= 1.25
    assert 1.0 <= summary["s_alpha5_normalized"]["min"] <= summary["s_alpha5_normalized"]["max"] <= 1.25
    with open(files["json"]) as f:
        assert json.load(f)["count"] == 5
    assert "D_alpha5_normalized" in capsys.readouterr().out

    stats = FilterStats.load(files["npz"])
    assert stats.count == 5 and stats.dataset == "folder" and stats.seed == 1
    # the 5 images are a seeded subset of the 7 files: the statistics match one 5-subset
    chosen = np.random.default_rng(1).permutation(7)[:5]
    assert_stats_close(stats, *reference(pixels[sorted(chosen)] / 255.0))
    with Image.open(files["png"]) as im:
        assert im.size[0] > 3 * 128 and im.size[1] > 2 * 128

    again = estimate.run(cfg, workdir)["files"]  # never over the first: a free name
    assert again["npz"] == os.path.join(workdir, "filters_1.npz") and os.path.isfile(again["png"])
    assert FilterStats.load(files["npz"]).count == 5
    cfg.estimate.output = str(tmp_path / "other" / "mine.npz")
    assert estimate.run(cfg, workdir)["files"]["json"] == str(tmp_path / "other" / "mine.json")
    with pytest.raises(OutputExistsError, match="config.estimate.output"):  # a chosen path: refused
        estimate.run(cfg, workdir)
