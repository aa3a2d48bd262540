"""`main.py --mode=likelihood` end to end on the embedded Fashion-MNIST model.

The data are an 'arrays' file of 2 black and 2 uniform-noise 32×32 images (Fashion-MNIST
backgrounds are black, so the model must find black images far more likely than noise),
dequantised as score_sde does, in 2 batches with loose RK45 tolerances. The second run
resumes an interrupted one and must reproduce its bits/dim exactly.
"""

import json
import os

import numpy as np
import pytest

from tests.cli_helpers import ROOT, read_json, run_cli

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "fashion_mnist_pds.py")


def likelihood_args(images, workdir):
    return [f"--config={DEFAULT_CONFIG}", f"--workdir={workdir}", "--mode=likelihood",
            "--config.data.dataset=arrays", f"--config.data.folder={images}",
            "--config.data.uniform_dequantization=True", "--config.eval.bpd_num_images=4",
            "--config.eval.bpd_batch_size=2", "--config.eval.bpd_rtol=1e-3", "--config.eval.bpd_atol=1e-3"]


def test_likelihood_mode_ranks_black_below_noise_and_resumes(tmp_path_factory, tmp_path):
    rng = np.random.default_rng(0)
    images = np.concatenate([np.zeros((2, 32, 32), np.uint8), rng.integers(0, 256, (2, 32, 32), np.uint8)])
    path = str(tmp_path / "images.npz")
    np.savez(path, images=images)
    workdir = tmp_path / "w"
    args = likelihood_args(path, workdir)
    run_cli(tmp_path_factory, args)
    out = workdir / "likelihood"
    report = read_json(out / "likelihood.json")
    bpd = np.concatenate([np.load(out / "batches" / f"batch_{k:05d}.npz")["bpd"] for k in (0, 1)])
    assert report["num_images"] == 4 and report["offset"] == 8.0 and report["split"] == "test"
    assert report["bpd_mean"] == np.mean(bpd) and report["bpd_standard_error"] > 0
    assert all(n % 6 == 2 and n > 8 for n in report["nfe_per_batch"])
    low, high = np.sort(bpd)[:2], np.sort(bpd)[2:]
    assert np.all(np.isfinite(bpd)) and high.min() - low.max() > 2.0, bpd  # black ≪ noise
    assert 6.0 < high.min() < 16.0, bpd  # noise: ~8 bits/dim is what uniform 8-bit noise costs at best

    # What a kill during batch 1 leaves: batch 0 on disk, progress not complete.
    os.remove(out / "likelihood.json")
    os.remove(out / "batches" / "batch_00001.npz")
    progress = read_json(out / "progress.json")
    with open(out / "progress.json", "w") as f:
        json.dump(dict(progress, complete=False), f)
    run_cli(tmp_path_factory, args)
    assert sorted(os.listdir(workdir)) == ["likelihood"]
    resumed = read_json(out / "likelihood.json")
    assert resumed["resumed_batches"] == 1 and len(resumed["seconds_per_batch"]) == 2
    again = np.concatenate([np.load(out / "batches" / f"batch_{k:05d}.npz")["bpd"] for k in (0, 1)])
    np.testing.assert_array_equal(again, bpd)


def test_settings_and_dequantization():
    """Bad splits are refused by name; dequantisation adds U[0, 1)/256 in [0, 1] space, per batch."""
    from configs.fashion_mnist_pds import get_config
    from pds_jax.modes import likelihood as mode

    config = get_config()
    assert mode.settings(config)["split"] == "test" and mode.settings(config)["num_images"] == 256
    config.eval.bpd_dataset = "validation"
    with pytest.raises(ValueError, match="config.eval.bpd_dataset"):
        mode.settings(config)
    x = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 1)).astype(np.float32) / 255.0
    for centered in (False, True):
        config.data.centered = centered
        scaled = 2 * x - 1 if centered else x
        out = mode.dequantize(scaled, config, seed=0, k=1)
        unit = (out + 1) / 2 if centered else out
        noise = unit * 256.0 - x * 255.0  # = u ∈ [0, 1)
        assert np.all(noise >= -1e-4) and np.all(noise < 1 + 1e-4) and noise.std() > 0.2
        np.testing.assert_array_equal(out, mode.dequantize(scaled, config, seed=0, k=1))
        assert not np.array_equal(out, mode.dequantize(scaled, config, seed=0, k=2))
