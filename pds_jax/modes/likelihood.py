"""`main.py --mode=likelihood`: bits/dim of a dataset split under a checkpoint (score_sde's bpd).

Reads config.eval.{bpd_dataset ('test' | 'train'), bpd_num_images, bpd_batch_size,
bpd_hutchinson, bpd_rtol, bpd_atol} and config.data (the pipeline of
`pds_jax.data.get_dataset`; the subset is the first bpd_num_images of a shuffle seeded
by config.seed). With config.data.uniform_dequantization each batch is dequantised as
score_sde does, x ← (255 x + u) / 256 with u ~ U[0, 1) in [0, 1] space, then scaled;
without it the bits/dim are those of the continuous density at the 8-bit values
(score_sde's bpd pipeline always dequantises, which makes bpd a bound on the discrete
negative log-likelihood). The likelihood itself is `pds_jax.likelihood.get_likelihood_fn`.

Outputs under `<workdir>/<folder>/` (a new folder per run, like --mode=sample):
  batches/batch_<k>.npz   bpd (B,), nfe and seconds of batch k, written as it finishes
  likelihood.json         mean ± standard error of bpd, NFE, wall time, checkpoint, config

An interrupted run started again with the same config resumes: finished batches are
kept, the others are recomputed with the same data, dequantisation noise and probes.
"""

from __future__ import annotations

import glob
import math
import os
import time

import jax
import numpy as np
from tqdm import tqdm

from pds_jax.data import get_data_inverse_scaler, get_data_scaler, get_dataset
from pds_jax.io_utils import atomic_save_npz, atomic_write_json
from pds_jax.likelihood import get_likelihood_fn, load_results, summarize
from pds_jax.modes.common import load_score_fn, output_dir, run_header, run_inputs, write_progress

SPLITS = ("test", "train")
LIKELIHOOD_EPS = 1e-5  # score_sde's get_likelihood_fn default, for every SDE


def settings(config) -> dict:
    """The validated config.eval bpd settings."""
    ev = config.eval
    split = str(ev.bpd_dataset).lower()
    if split not in SPLITS:
        raise ValueError(f"config.eval.bpd_dataset must be one of {SPLITS}, got {ev.bpd_dataset!r}")
    num_images, batch = int(ev.bpd_num_images), int(ev.bpd_batch_size)
    if num_images < 1 or batch < 1:
        raise ValueError(f"config.eval.bpd_num_images and config.eval.bpd_batch_size must be >= 1, got "
                         f"{num_images} and {batch}")
    return {"split": split, "num_images": num_images, "batch_size": batch,
            "hutchinson_type": str(ev.bpd_hutchinson), "rtol": float(ev.bpd_rtol),
            "atol": float(ev.bpd_atol), "eps": LIKELIHOOD_EPS,
            "uniform_dequantization": bool(config.data.uniform_dequantization)}


def dequantize(x: np.ndarray, config, seed: int, k: int) -> np.ndarray:
    """score_sde's uniform dequantisation of batch k in [0, 1] space, back in the model's space.

    The noise comes from `default_rng([seed, k])`, so a resumed batch gets the same noise.
    """
    unit = np.asarray(get_data_inverse_scaler(config)(x), np.float32)
    noise = np.random.default_rng([seed, k]).random(unit.shape, dtype=np.float32)
    return np.asarray(get_data_scaler(config)((unit * 255.0 + noise) / 256.0), np.float32)


def compute_batches(likelihood_fn, score_fn, batches, config, batch_dir: str, total: int) -> dict:
    """bpd of every batch not on disk yet, each written atomically; {k: seconds} of those computed."""
    key = jax.random.PRNGKey(int(config.seed))
    timings = {}
    for k, x in enumerate(tqdm(batches, total=total, desc="bits/dim", unit="batch")):
        path = os.path.join(batch_dir, f"batch_{k:05d}.npz")
        if os.path.exists(path):
            continue
        if config.data.uniform_dequantization:
            x = dequantize(x, config, int(config.seed), k)
        start = time.perf_counter()
        bpd, _, nfe = likelihood_fn(jax.random.fold_in(key, k), score_fn, x)
        bpd = np.asarray(jax.device_get(bpd), np.float64)
        timings[k] = time.perf_counter() - start
        if not np.all(np.isfinite(bpd)):
            raise ValueError(f"batch {k}: the likelihood ODE gave non-finite bits/dim (the solver ran out "
                             "of steps or the model diverged); nothing was saved for it. Loosen "
                             "--config.eval.bpd_rtol / bpd_atol or check the checkpoint.")
        atomic_save_npz(path, {"bpd": bpd, "nfe": np.int64(nfe), "seconds": np.float64(timings[k])})
    return timings


def run(config, workdir: str, folder: str = "likelihood") -> dict:
    s = settings(config)
    sde, _model, _params, score_fn, ckpt = load_score_fn(config, workdir)
    likelihood_fn = get_likelihood_fn(sde, get_data_inverse_scaler(config), s["hutchinson_type"],
                                      s["rtol"], s["atol"], s["eps"])
    batches = get_dataset(config, split=s["split"], batch_size=s["batch_size"], shuffle=True,
                          seed=int(config.seed), num_images=s["num_images"], train=False)
    files = run_inputs(ckpt)
    out = output_dir(workdir, folder, config, files)
    batch_dir = os.path.join(out, "batches")
    total = math.ceil(s["num_images"] / s["batch_size"])
    timings = compute_batches(likelihood_fn, score_fn, batches, config, batch_dir, total)

    report = run_header(config, "likelihood")
    report.update(s)
    report.update(summarize(*load_results(batch_dir)))
    report.update({"checkpoint": ckpt, "inputs": files, "output_dir": out, "offset": likelihood_fn.offset,
                   "resumed_batches": len(glob.glob(os.path.join(batch_dir, "batch_*.npz"))) - len(timings)})
    atomic_write_json(os.path.join(out, "likelihood.json"), report, overwrite=True)
    write_progress(out, config, files, complete=True)
    print(f"bits/dim of {report['num_images']} {config.data.dataset} {s['split']} images: "
          f"{report['bpd_mean']:.4f} ± {report['bpd_standard_error'] or float('nan'):.4f} (s.e.), "
          f"NFE {report['nfe_mean']:.0f} per batch; wrote {out}/likelihood.json")
    return report
