"""`main.py --mode=sample`: draw samples from a checkpoint with any configured sampler.

Outputs under `<workdir>/<folder>/` (a new folder per run; never overwritten):
  batches/batch_<k>.npz   one file per batch, written as it finishes (uint8 NHWC)
  samples.npz             all samples (uint8 NHWC) once the run completes
  images/sample_<i>.png   every sample, plus grid.png of the first 64
  run.json                config, NFE, steps, wall time per batch, compile time, device

A run that is interrupted (Ctrl-C, kill -9) resumes where it stopped when started
again with the same config and the same input files (the checkpoint file loaded and the
filter files, compared by SHA-256; run.json records their path, size, mtime and hash):
finished batches are kept, the rest are drawn with the same per-batch keys, so the result
equals an uninterrupted run. Changed inputs (e.g. a newer checkpoint_<n> in the checkpoint
folder) start a new folder instead, with a one-line notice. With several processes
(`pds_jax.distributed`) the batch is one array over all their devices and process 0
writes everything but the batch files.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from pds_jax import distributed
from pds_jax import images as image_io
from pds_jax.data import get_data_inverse_scaler
from pds_jax.io_utils import atomic_save_npz, atomic_write_json
from pds_jax.modes.common import (GRID_SIZE, build_sampler, discarded_if_empty, draw_batches, image_shape,
                                  load_batches, load_score_fn, output_dir, run_header, run_inputs,
                                  sampler_report, write_progress)


def run(config, workdir: str, folder: str = "samples") -> dict:
    sde, _model, _params, score_fn, ckpt = load_score_fn(config, workdir)
    batch = int(config.sampling.batch_size)
    num_samples = int(config.sampling.num_samples)
    if batch < 1 or num_samples < 1:
        raise ValueError("config.sampling.batch_size and config.sampling.num_samples must be >= 1")
    shape = (batch,) + image_shape(config)
    sampler, setup = build_sampler(config, sde, shape, get_data_inverse_scaler(config))

    inputs = run_inputs(ckpt, setup)
    out = output_dir(workdir, folder, config, inputs)
    key = jax.random.PRNGKey(config.sampling.seed)
    n_batches = math.ceil(num_samples / batch)
    with discarded_if_empty(out):
        drawn = draw_batches(sampler, score_fn, key, n_batches, os.path.join(out, "batches"),
                             desc=f"sampling {num_samples} images")
    timings = {b: d["seconds"] for b, d in drawn.items()}
    report = (_write_outputs(config, out, ckpt, inputs, sampler, setup, timings, n_batches)
              if distributed.is_main() else {})
    distributed.barrier(f"outputs written in {out}")  # process 0 is the last to read the batch files
    return report


def _write_outputs(config, out, ckpt, inputs, sampler, setup, timings, n_batches) -> dict:
    """Process 0: samples.npz, PNGs, grid and run.json from the batch files of all processes."""
    num_samples, batch = int(config.sampling.num_samples), int(config.sampling.batch_size)
    samples, nfes = load_batches(os.path.join(out, "batches"), num_samples)
    atomic_save_npz(os.path.join(out, "samples.npz"), {"images": samples}, overwrite=True)
    for i, img in enumerate(samples):
        image_io.save_png(os.path.join(out, "images", f"sample_{i:05d}.png"), img, overwrite=True)
    image_io.save_png(os.path.join(out, "grid.png"), image_io.make_grid(samples[:GRID_SIZE]), overwrite=True)

    times = [timings[b] for b in sorted(timings)]
    report = run_header(config, "sample")
    report.update({
        "checkpoint": ckpt, "inputs": inputs,
        "output_dir": out,
        "num_samples": int(samples.shape[0]),
        "batch_size": batch,
        **sampler_report(sampler, setup),  # method, num_steps, sampler, preconditioner, pds_alpha
        "nfe_per_batch": nfes,  # adaptive ODE solvers use a different count per batch
        "wall_time_per_batch_s": times,
        "first_batch_s_incl_compile": times[0] if times else None,
        "mean_batch_s_after_compile": float(np.mean(times[1:])) if len(times) > 1 else None,
        "resumed_batches": n_batches - len(timings),
        "num_processes": distributed.process_count(),
    })
    atomic_write_json(os.path.join(out, "run.json"), report, overwrite=True)
    write_progress(out, config, inputs, complete=True)
    print(f"wrote {samples.shape[0]} samples to {out} (grid.png, samples.npz, run.json)")
    return report
