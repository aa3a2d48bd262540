"""`main.py --mode=sample`: draw samples from a checkpoint with any configured sampler.

Outputs under `<workdir>/<folder>/` (a new folder per run; never overwritten):
  batches/batch_<k>.npz   one file per batch, written as it finishes (uint8 NHWC)
  samples.npz             all samples (uint8 NHWC) once the run completes
  images/sample_<i>.png   every sample, plus grid.png of the first 64
  run.json                config, NFE, steps, wall time per batch, compile time, device

A run that is interrupted (Ctrl-C, kill -9) resumes where it stopped when started
again with the same config: finished batches are kept, the rest are drawn with the
same per-batch keys, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import glob
import json
import math
import os
import time

import jax
import numpy as np
from tqdm import tqdm

from pds_jax import alpha_rule
from pds_jax import images as image_io
from pds_jax.io_utils import atomic_save_npz, atomic_write_json
from pds_jax.modes.common import (check_finite, config_hash, load_score_fn, run_header,
                                  with_resolved_filter_paths)

GRID_SIZE = 64


def output_dir(workdir: str, name: str, config) -> str:
    """`<workdir>/<name>` to resume (same config, unfinished), else the next free name."""
    os.makedirs(workdir, exist_ok=True)
    k = 0
    while True:
        candidate = os.path.join(workdir, name if k == 0 else f"{name}_{k}")
        if not os.path.exists(candidate):
            os.makedirs(os.path.join(candidate, "batches"))
            return candidate
        progress = os.path.join(candidate, "progress.json")
        if os.path.exists(progress):
            with open(progress) as f:
                state = json.load(f)
            if state.get("config_hash") == config_hash(config) and not state.get("complete"):
                return candidate
        k += 1


def build_sampler(config, sde, shape, inverse_scaler):
    """The configured sampler with its preconditioner (data-parallel over local devices)."""
    from pds_jax.filters import preconditioner_from_config
    from pds_jax.samplers import get_sampler
    from pds_jax.sharding import batch_sharding

    config = with_resolved_filter_paths(config)
    precond = preconditioner_from_config(config)
    sharding = batch_sharding() if jax.device_count() > 1 and shape[0] % jax.device_count() == 0 else None
    return get_sampler(config, sde, shape, precond, inverse_scaler, sharding), precond


def image_shape(config):
    return (config.data.image_size, config.data.image_size, config.data.num_channels)


def draw_batches(sampler, score_fn, key, num_batches: int, batch_dir: str, desc: str = "sampling") -> dict:
    """Draw the batches of a resumable run that are not on disk yet.

    Batch k uses the key `fold_in(key, k)` and is written atomically, as soon as it is
    done, to `<batch_dir>/batch_<k>.npz` (uint8 NHWC `images` and its `nfe`), so an
    interrupted run redrawn with the same key gives the same images. Returns
    {k: {'seconds', 'nfe'}} for the batches drawn by this call (the first includes
    the compile).
    """
    drawn = {}
    for b in tqdm(range(num_batches), desc=desc, unit="batch"):
        path = os.path.join(batch_dir, f"batch_{b:05d}.npz")
        if os.path.exists(path):
            continue
        start = time.perf_counter()
        x, nfe = sampler(jax.random.fold_in(key, b), score_fn)
        x = np.asarray(jax.device_get(x))
        drawn[b] = {"seconds": time.perf_counter() - start, "nfe": int(nfe)}
        check_finite(x, f"batch {b} in {batch_dir}")
        atomic_save_npz(path, {"images": image_io.to_uint8(x), "nfe": np.int64(nfe)})
    return drawn


def load_batches(batch_dir: str, num_samples: int):
    """(images uint8 NHWC [:num_samples], per-batch NFE or None where unknown) of a run's batches."""
    files = sorted(glob.glob(os.path.join(batch_dir, "batch_*.npz")))
    images, nfes = [], []
    for f in files:
        with np.load(f) as data:
            images.append(data["images"])
            nfes.append(int(data["nfe"]) if "nfe" in data.files else None)
    return np.concatenate(images)[:num_samples], nfes


def run(config, workdir: str, folder: str = "samples") -> dict:
    from pds_jax.data import get_data_inverse_scaler

    sde, _model, _params, score_fn, ckpt = load_score_fn(config, workdir)
    batch = int(config.sampling.batch_size)
    num_samples = int(config.sampling.num_samples)
    if batch < 1 or num_samples < 1:
        raise ValueError("config.sampling.batch_size and config.sampling.num_samples must be >= 1")
    shape = (batch,) + image_shape(config)
    sampler, precond = build_sampler(config, sde, shape, get_data_inverse_scaler(config))

    out = output_dir(workdir, folder, config)
    atomic_write_json(os.path.join(out, "progress.json"),
                      {"config_hash": config_hash(config), "complete": False}, overwrite=True)
    key = jax.random.PRNGKey(config.sampling.seed)
    n_batches = math.ceil(num_samples / batch)
    drawn = draw_batches(sampler, score_fn, key, n_batches, os.path.join(out, "batches"),
                         desc=f"sampling {num_samples} images")
    timings = {b: d["seconds"] for b, d in drawn.items()}

    samples, nfes = load_batches(os.path.join(out, "batches"), num_samples)
    atomic_save_npz(os.path.join(out, "samples.npz"), {"images": samples}, overwrite=True)
    for i, img in enumerate(samples):
        image_io.save_png(os.path.join(out, "images", f"sample_{i:05d}.png"), img, overwrite=True)
    image_io.save_png(os.path.join(out, "grid.png"), image_io.make_grid(samples[:GRID_SIZE]), overwrite=True)

    times = [timings[b] for b in sorted(timings)]
    report = run_header(config, "sample")
    report.update({
        "checkpoint": ckpt,
        "output_dir": out,
        "num_samples": int(samples.shape[0]),
        "batch_size": batch,
        "method": config.sampling.method,
        "num_steps": getattr(sampler, "num_steps", None),
        "nfe_per_batch": nfes,  # adaptive ODE solvers use a different count per batch
        "preconditioner": precond.describe() if precond is not None else None,
        "pds_alpha": alpha_rule.used_alpha(config),  # None without filters; 'auto' resolved
        "wall_time_per_batch_s": times,
        "first_batch_s_incl_compile": times[0] if times else None,
        "mean_batch_s_after_compile": float(np.mean(times[1:])) if len(times) > 1 else None,
        "resumed_batches": n_batches - len(timings),
    })
    atomic_write_json(os.path.join(out, "run.json"), report, overwrite=True)
    atomic_write_json(os.path.join(out, "progress.json"),
                      {"config_hash": config_hash(config), "complete": True}, overwrite=True)
    print(f"wrote {samples.shape[0]} samples to {out} (grid.png, samples.npz, run.json)")
    return report
