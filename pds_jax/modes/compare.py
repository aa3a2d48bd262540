"""`main.py --mode=compare`: what PDS does, in one picture.

Draws the same batch (same key) three times with the configured PC sampler:

  1. full schedule, vanilla            N = model.num_scales steps
  2. N / k steps, vanilla              k = sampling.pds.speed_up
  3. N / k steps, PDS                  the filters in sampling.pds

and writes `<workdir>/compare/comparison.png` (the three grids side by side, labelled),
`panel_<name>.png` for each, `samples.npz` and `run.json` (steps, NFE, wall time per
panel, device). A second run writes `compare_1/`, and so on.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from tqdm import tqdm

from pds_jax import images as image_io
from pds_jax.data import get_data_inverse_scaler
from pds_jax.io_utils import atomic_save_npz, atomic_write_json, fresh_dir
from pds_jax.modes.common import (build_sampler, check_finite, discarded_if_empty, image_shape, load_score_fn,
                                  run_header)


# Tiles of the comparison picture are enlarged to at least this many pixels (32-px samples
# are hard to judge at 1:1); the panel_<name>.png files keep the samples' own resolution.
TILE_PIXELS = 64


def run(config, workdir: str, folder: str = "compare") -> dict:
    k = float(config.sampling.pds.speed_up)
    if k <= 1:
        raise ValueError(f"compare needs sampling.pds.speed_up > 1 (got {k}): it compares the full "
                         "schedule with one k times shorter")
    if config.sampling.method != "pc":
        raise ValueError("compare shows the PC sampler with and without PDS (config.sampling.method='pc')")
    sde, _model, _params, score_fn, ckpt = load_score_fn(config, workdir)
    shape = (int(config.sampling.batch_size),) + image_shape(config)
    inverse = get_data_inverse_scaler(config)
    vanilla = config.copy_and_resolve_references()
    vanilla.sampling.pds.freq_filter = vanilla.sampling.pds.space_filter = ""
    full = vanilla.copy_and_resolve_references()
    full.sampling.pds.speed_up = 1.0
    panels = [("full_vanilla", full), ("fast_vanilla", vanilla), ("fast_pds", config)]

    out = fresh_dir(workdir, folder)
    key = jax.random.PRNGKey(config.sampling.seed)
    report = run_header(config, "compare")
    report.update({"checkpoint": ckpt, "output_dir": out, "speed_up": k, "panels": {}})
    grids, samples = [], {}
    with discarded_if_empty(out):  # a failed first panel leaves no empty folder
        for name, cfg in panels:
            sampler, setup = build_sampler(cfg, sde, shape, inverse)
            start = time.perf_counter()
            try:
                with tqdm(total=sampler.num_steps, desc=f"{name} ({sampler.num_steps} steps)", unit="step") as bar:
                    x, nfe = sampler.call_with_progress(key, score_fn, bar.update)
            except FloatingPointError as e:
                raise FloatingPointError(f"panel {name} ({sampler.num_steps} steps): {e}") from e
            x = np.asarray(jax.device_get(x))
            seconds = time.perf_counter() - start
            check_finite(x, f"panel {name} of {out}")
            samples[name] = image_io.to_uint8(x)
            alpha = setup.alpha  # None for the vanilla panels (no filters); 'auto' resolved
            caption = (("vanilla" if alpha is None else f"PDS  alpha {alpha:.3g}")
                       + f"\n{sampler.num_steps} steps  NFE {nfe}")
            grid = image_io.make_grid(samples[name])
            image_io.save_png(os.path.join(out, f"panel_{name}.png"), grid)
            big = image_io.make_grid(image_io.upscaled(samples[name], TILE_PIXELS))
            grids.append(image_io.captioned(big, caption))
            report["panels"][name] = {"num_steps": sampler.num_steps, "nfe": nfe, "eps": sampler.eps,
                                      "wall_time_s_incl_compile": seconds,
                                      "preconditioner": setup.precond.describe(),
                                      "pds_alpha": alpha}
            print(f"{name:13s} {sampler.num_steps:5d} steps  NFE {nfe:5d}  {seconds:7.1f} s")
    image_io.save_png(os.path.join(out, "comparison.png"), image_io.side_by_side(grids, gap=12))
    atomic_save_npz(os.path.join(out, "samples.npz"), samples)
    atomic_write_json(os.path.join(out, "run.json"), report)
    print(f"wrote {os.path.join(out, 'comparison.png')} and run.json")
    return report
