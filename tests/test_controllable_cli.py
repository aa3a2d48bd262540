"""`main.py --mode=inpaint` and `--mode=colorize` end to end, plus the mask builders.

Inpainting runs the shipped Fashion-MNIST model (configs/fashion_mnist_pds.py) on a few
random images written as an 'arrays' dataset (no Debian package needed), with N = 20
and speed_up 10 (2 PC steps). Colorization needs an RGB model, which the project does
not ship: it runs a tiny randomly initialised 3-channel NCSN++ (16×16, nf = 8), so it
checks the plumbing only (the gray-channel constraint is tested on a Gaussian oracle in
tests/test_controllable.py; nothing here measures colour quality).
"""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from pds_jax import masks
from tests.cli_helpers import ROOT, read_json, run_cli

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "fashion_mnist_pds.py")
FAST = ["--config.model.num_scales=20", "--speed_up=10"]

RGB_CONFIG = '''"""A tiny random RGB NCSN++ for the colorize CLI test."""
from configs.fashion_mnist_pds import get_config as base


def get_config():
    config = base()
    config.data.dataset = 'arrays'
    config.data.folder = {images!r}
    config.data.image_size = 16
    config.data.num_channels = 3
    config.model.update(dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), fir=False,
                             num_scales=20))
    config.sampling.checkpoint = {checkpoint!r}
    config.sampling.pds.freq_filter = ''
    config.sampling.pds.space_filter = ''
    config.sampling.pds.speed_up = 10.0
    config.sampling.pds.alpha = 5.0
    return config
'''


def _images(path, shape, seed=0):
    np.save(path, np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))
    return str(path)


# --------------------------------------------------------------------------- masks


def test_masks(tmp_path):
    shape = (8, 6, 3)
    box = masks.make_mask("box", shape)
    assert box.shape == shape and box.sum() == (48 - 4 * 3) * 3 and box[2:6, 1:4].max() == 0
    left = masks.make_mask("left", shape)
    assert left[:, :3].max() == 0 and left[:, 3:].min() == 1
    r0, r1 = (masks.make_mask("random", (64, 64, 2), 0.3, seed=1, index=i) for i in (0, 1))
    assert abs(1 - r0.mean() - 0.3) < 0.03 and np.array_equal(r0[..., 0], r0[..., 1])
    assert not np.array_equal(r0, r1)
    np.testing.assert_array_equal(r0, masks.make_mask("random", (64, 64, 2), 0.3, seed=1, index=0))
    png = tmp_path / "mask.png"
    Image.fromarray(np.kron(np.array([[255, 0], [0, 255]], np.uint8), np.ones((4, 4), np.uint8))).save(png)
    m = masks.make_mask(str(png), (4, 4, 1))
    np.testing.assert_array_equal(m[..., 0], [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    with pytest.raises(FileNotFoundError, match="config.inpaint.mask"):
        masks.make_mask("centre", shape)
    with pytest.raises(ValueError, match="mask_fraction"):
        masks.make_mask("random", shape, 1.5)


# --------------------------------------------------------------------------- inpaint


@pytest.fixture(scope="module")
def inpainted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inpaint")
    images = _images(folder / "test.npy", (3, 28, 28))
    args = [f"--config={DEFAULT_CONFIG}", f"--workdir={folder / 'w'}", "--mode=inpaint", *FAST,
            "--config.data.dataset=arrays", f"--config.data.folder={images}",
            "--config.inpaint.num_images=3", "--config.inpaint.batch_size=2",
            "--config.inpaint.samples_per_image=2", "--config.inpaint.mask=random",
            "--config.inpaint.mask_fraction=0.3", "--config.inpaint.seed=4"]
    run_cli(tmp_path_factory, args)
    return str(folder / "w"), args


def test_inpaint_writes_rows_samples_and_run_json(inpainted):
    workdir, _ = inpainted
    out = os.path.join(workdir, "inpaint")
    with np.load(os.path.join(out, "samples.npz")) as f:
        samples, originals, inputs, mask = f["samples"], f["originals"], f["inputs"], f["masks"]
    assert samples.shape == (3, 2, 32, 32, 1) and samples.dtype == np.uint8
    assert originals.shape == inputs.shape == mask.shape == (3, 32, 32, 1)
    expected = np.stack([masks.make_mask("random", (32, 32, 1), 0.3, 4, i) for i in range(3)])
    np.testing.assert_array_equal(mask, (expected * 255).astype(np.uint8))
    known = np.broadcast_to(expected[:, None] > 0.5, samples.shape)
    # Known pixels are the data exactly (x_mean = m(eps) data, m = 1 for VE); the rest is generated.
    np.testing.assert_array_equal(samples[known], np.broadcast_to(originals[:, None], samples.shape)[known])
    assert not np.array_equal(samples[:, 0], samples[:, 1])  # two different completions per image
    np.testing.assert_array_equal(inputs[expected < 0.5], 128)  # missing pixels drawn mid-gray
    with Image.open(os.path.join(out, "rows.png")) as png:  # rows: input | 2 samples | original
        assert png.size == (2 + 4 * 34, 2 + 3 * 34)

    run = read_json(os.path.join(out, "run.json"))
    assert run["mode"] == "inpaint" and run["num_images"] == 3 and run["samples_per_image"] == 2
    assert run["num_steps"] == 2 and run["nfe_per_batch"] == 4 and run["eps"] == pytest.approx(1e-4)
    assert run["preconditioner"]["freq"] is not None and run["pds_alpha"] > 1
    assert run["checkpoint"].endswith("checkpoint_43000")
    s, o = samples.astype(float) / 255, originals.astype(float)[:, None] / 255
    w = 1.0 - expected[:, None]
    mse = (((s - o) ** 2 * w).sum((2, 3, 4)) / w.sum((2, 3, 4))).mean(1)
    np.testing.assert_allclose(run["region_mse_per_image"], mse, rtol=1e-6)
    assert read_json(os.path.join(out, "progress.json"))["complete"] is True


def test_interrupted_inpaint_resumes(tmp_path_factory, inpainted):
    workdir, args = inpainted
    out = os.path.join(workdir, "inpaint")
    reference = np.load(os.path.join(out, "samples.npz"))["samples"]
    for name in ("samples.npz", "run.json", "rows.png", "batches/batch_00001.npz"):
        os.remove(os.path.join(out, name))
    progress = read_json(os.path.join(out, "progress.json"))
    with open(os.path.join(out, "progress.json"), "w") as f:
        json.dump(dict(progress, complete=False), f)
    run_cli(tmp_path_factory, args)
    assert sorted(os.listdir(workdir)) == ["inpaint"]  # resumed in place
    assert read_json(os.path.join(out, "run.json"))["resumed_batches"] == 1
    np.testing.assert_array_equal(np.load(os.path.join(out, "samples.npz"))["samples"], reference)


def test_user_errors_exit_2(tmp_path_factory, tmp_path):
    images = _images(tmp_path / "test.npy", (2, 28, 28))
    base = [f"--config={DEFAULT_CONFIG}", f"--workdir={tmp_path / 'w'}", *FAST,
            "--config.data.dataset=arrays", f"--config.data.folder={images}", "--config.colorize.num_images=2"]
    out = run_cli(tmp_path_factory, base + ["--mode=colorize"], expect=2)
    assert "num_channels = 3" in out.stderr and "Traceback" not in out.stderr
    out = run_cli(tmp_path_factory, base + ["--mode=inpaint", "--config.inpaint.num_images=2",
                                            "--config.sampling.method=ode"], expect=2)
    assert "--config.sampling.method=pc" in out.stderr
    out = run_cli(tmp_path_factory, base + ["--mode=inpaint", "--config.inpaint.num_images=5"], expect=2)
    assert "only 2" in out.stderr


# --------------------------------------------------------------------------- colorize


def test_colorize_keeps_the_gray_image(tmp_path_factory, tmp_path):
    from configs.fashion_mnist_pds import get_config
    from pds_jax import checkpoints, models

    images = _images(tmp_path / "rgb.npy", (3, 16, 16, 3))
    ckpt = tmp_path / "ckpt"
    config_file = tmp_path / "rgb_config.py"
    config_file.write_text(RGB_CONFIG.format(images=images, checkpoint=str(ckpt)))
    config = get_config()
    config.data.image_size, config.data.num_channels = 16, 3
    config.model.update(dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), fir=False))
    # Random weights drawn with NumPy on the model's parameter shapes (eval_shape: no
    # compile of the initialiser, which would cost ~10 s of CPU).
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.05 * rng.standard_normal(s.shape)).astype(np.float32),
                          models.param_shapes(config))
    checkpoints.save_checkpoint(str(ckpt), {"step": 0, "optimizer": {"target": params, "state": {}},
                                            "params_ema": params, "model_state": {}, "lr": 0.0,
                                            "ema_rate": 0.999, "rng": np.zeros(2, np.uint32)}, step=1)
    run_cli(tmp_path_factory, [f"--config={config_file}", f"--workdir={tmp_path / 'w'}", "--mode=colorize",
                               "--config.colorize.num_images=3", "--config.colorize.batch_size=3"])
    out = tmp_path / "w" / "colorize"
    with np.load(out / "samples.npz") as f:
        samples, inputs, originals = f["samples"], f["inputs"], f["originals"]
    assert samples.shape == (3, 1, 16, 16, 3) and inputs.shape == originals.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(inputs[..., 0], inputs[..., 2])  # the gray input
    # The gray input is the originals' channel mean (up to uint8 rounding of each).
    assert np.max(np.abs(inputs[..., 0].astype(float) - originals.astype(float).mean(-1))) <= 1.0
    # A random network's samples saturate at 0 or 255 (no pixel stays inside [0, 1]), so
    # "channel mean = gray" is checked on the oracle (tests/test_controllable.py), not here.
    assert len({img.tobytes() for img in samples[:, 0]}) == 3
    run = read_json(out / "run.json")
    assert run["mode"] == "colorize" and run["num_steps"] == 2 and run["preconditioner"]["freq"] is None
