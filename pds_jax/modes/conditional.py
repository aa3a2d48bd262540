"""What `--mode=inpaint` and `--mode=colorize` share: inputs, the resumable batch loop, outputs.

Both complete test images from partial information with `pds_jax.controllable`
(score_sde's replacement rule, vanilla or PDS from config.sampling.pds). A `Task`
says what is known (a mask, or the gray image), how to show it, and over which
pixels the error is measured. Outputs under `<workdir>/<folder>/` (a new folder per
run, resumed in place when started again with the same config, like sample mode):

  batches/batch_<k>.npz   uint8 samples of batch k (written as it finishes) and its NFE
  samples.npz             samples (N, K, H, W, C), inputs, originals, condition (uint8)
  rows.png                one row per image: input | K samples | original (first 32)
  run.json                config, NFE, steps, preconditioner, per-image region MSE, times
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable

import jax
import numpy as np
from tqdm import tqdm

from pds_jax import images as image_io
from pds_jax import pds
from pds_jax.data import get_data_inverse_scaler, get_dataset
from pds_jax.io_utils import atomic_save_npz, atomic_write_json
from pds_jax.modes.common import (check_finite, image_shape, load_batches, load_score_fn, output_dir,
                                  run_header, run_inputs, write_progress)

ROWS_SHOWN = 32


@dataclasses.dataclass(frozen=True)
class Task:
    """One conditional-generation task.

    name: the mode and config section ('inpaint' | 'colorize').
    builder: `get_pc_inpainter` / `get_pc_colorizer`.
    condition(config, images) -> cond: what is known, per image (model data space).
    call(fn, key, score_fn, data, cond) -> samples: runs the built sampler on a batch.
    shown(images01, cond) -> the input as displayed, [0, 1].
    region(cond) -> (N, H, W, C) weights of the pixels the MSE is measured on.
    saved(cond) -> {name: uint8 array} of the condition for samples.npz.
    """

    name: str
    builder: Callable
    condition: Callable
    call: Callable
    shown: Callable
    region: Callable
    saved: Callable


def settings(config, name: str) -> dict:
    """config.<name>: num_images, batch_size, samples_per_image, seed, split, images (checked)."""
    s = config[name]
    out = {k: int(s[k]) for k in ("num_images", "batch_size", "samples_per_image", "seed")}
    for key in ("num_images", "batch_size", "samples_per_image"):
        if out[key] < 1:
            raise ValueError(f"config.{name}.{key} must be >= 1, got {out[key]}")
    out.update(split=str(s.split), images=str(s.images or ""))
    return out


def load_inputs(config, split: str, images: str, num_images: int) -> np.ndarray:
    """The first `num_images` images of the dataset's `split` (or of the file/folder `images`),
    float32 NHWC in the model's data space."""
    if images:
        config = config.copy_and_resolve_references()
        with config.unlocked():
            config.data.dataset = "arrays" if images.endswith((".npy", ".npz")) else "folder"
            config.data.folder = images
    x = np.concatenate(list(get_dataset(config, split=split, batch_size=num_images, num_images=num_images)))
    if x.shape[0] < num_images:
        raise ValueError(f"asked for {num_images} images but the input holds only {x.shape[0]}; lower "
                         "the num_images of the mode's config section")
    return x


def build(task: Task, config, sde, shape):
    """The task's sampler for `shape` (config.sampling; schedule and filters: `pds.from_config`)."""
    s = config.sampling
    if str(s.method).lower() != "pc":
        raise ValueError(f"--mode={task.name} uses the predictor-corrector sampler (score_sde's replacement "
                         f"rule); config.sampling.method={s.method!r}: set --config.sampling.method=pc")
    setup = pds.from_config(config, sde)
    return task.builder(sde, shape, predictor=s.predictor.lower(), corrector=s.corrector.lower(), snr=s.snr,
                        n_steps=s.n_steps_each, probability_flow=s.probability_flow, denoise=s.noise_removal,
                        precond=setup.precond, speed_up=s.pds.speed_up), setup


def draw(task, fn, score_fn, key, images, cond, batch: int, k: int, batch_dir: str, to01) -> dict:
    """The missing batches of a run; batch b uses fold_in(key, b) and is saved as it finishes.

    A short last batch is padded with its last image (static shapes, one compile);
    every image is repeated k times in place (its samples are contiguous). `to01` maps
    the model's data space to [0, 1] for the uint8 files.
    """
    drawn = {}
    for b in tqdm(range(math.ceil(len(images) / batch)), desc=f"{task.name} batches", unit="batch"):
        path = os.path.join(batch_dir, f"batch_{b:05d}.npz")
        if os.path.exists(path):
            continue
        idx = np.minimum(np.arange(b * batch, (b + 1) * batch), len(images) - 1)
        real = min(batch, len(images) - b * batch)
        start = time.perf_counter()
        x = task.call(fn, jax.random.fold_in(key, b), score_fn, np.repeat(images[idx], k, axis=0),
                      np.repeat(cond[idx], k, axis=0))
        x = np.asarray(jax.device_get(x))[: real * k]
        drawn[b] = time.perf_counter() - start
        check_finite(x, f"batch {b} in {batch_dir}")
        atomic_save_npz(path, {"images": image_io.to_uint8(to01(x)), "nfe": np.int64(fn.nfe)})
    return drawn


def region_mse(samples, originals, weights) -> np.ndarray:
    """Per-image mean over samples of the MSE ([0, 1] units) on the weighted pixels.

    samples (N, K, H, W, C) and originals (N, H, W, C) uint8; weights (N, H, W, C) ≥ 0.
    """
    s = samples.astype(np.float64) / 255.0
    o = originals.astype(np.float64)[:, None] / 255.0
    w = weights.astype(np.float64)[:, None]
    sq = ((s - o) ** 2 * w).sum(axis=(2, 3, 4)) / np.maximum(w.sum(axis=(2, 3, 4)), 1.0)
    return sq.mean(axis=1)


def save_outputs(out, inputs, samples, originals, condition: dict) -> None:
    arrays = {"samples": samples, "inputs": inputs, "originals": originals, **condition}
    atomic_save_npz(os.path.join(out, "samples.npz"), arrays, overwrite=True)
    n, k = samples.shape[:2]
    shown = min(n, ROWS_SHOWN)
    rows = np.concatenate([inputs[:shown, None], samples[:shown], originals[:shown, None]], axis=1)
    grid = image_io.make_grid(rows.reshape((-1,) + rows.shape[2:]), nrow=k + 2)
    image_io.save_png(os.path.join(out, "rows.png"), grid, overwrite=True)


def run(task: Task, config, workdir: str, folder: str) -> dict:
    s = settings(config, task.name)
    sde, _model, _params, score_fn, ckpt = load_score_fn(config, workdir)
    images = load_inputs(config, s["split"], s["images"], s["num_images"])
    cond = task.condition(config, images)
    batch, k = s["batch_size"], s["samples_per_image"]
    fn, setup = build(task, config, sde, (batch * k,) + image_shape(config))
    to01 = get_data_inverse_scaler(config)

    files = run_inputs(ckpt, setup)
    out = output_dir(workdir, folder, config, files)
    drawn = draw(task, fn, score_fn, jax.random.PRNGKey(s["seed"]), images, cond, batch, k,
                 os.path.join(out, "batches"), to01)
    samples, _ = load_batches(os.path.join(out, "batches"), len(images) * k)
    samples = samples.reshape((len(images), k) + samples.shape[1:])
    originals = image_io.to_uint8(to01(images))
    inputs = image_io.to_uint8(task.shown(to01(images), cond))
    mse = region_mse(samples, originals, task.region(cond))
    save_outputs(out, inputs, samples, originals, task.saved(cond))

    times = [drawn[b] for b in sorted(drawn)]
    report = run_header(config, task.name)
    report.update({
        "checkpoint": ckpt, "inputs": files, "output_dir": out, "num_images": len(images), "samples_per_image": k,
        "batch_size": batch, "num_steps": fn.num_steps, "eps": fn.eps, "nfe_per_batch": fn.nfe,
        "preconditioner": setup.precond.describe(), "pds_alpha": setup.alpha, "sampler": fn.describe(),
        "region_mse": float(mse.mean()), "region_mse_per_image": mse.tolist(),
        "region_mse_note": "mean squared error in [0, 1] units to the original, on the generated "
                           "pixels (inpaint: the missing ones; colorize: all), averaged over samples",
        "wall_time_per_batch_s": times, "first_batch_s_incl_compile": times[0] if times else None,
        "resumed_batches": math.ceil(len(images) / batch) - len(times),
    })
    atomic_write_json(os.path.join(out, "run.json"), report, overwrite=True)
    write_progress(out, config, files, complete=True)
    print(f"wrote {len(images)} x {k} {task.name} samples to {out} (rows.png, samples.npz, run.json); "
          f"region MSE {mse.mean():.4g}")
    return report
