"""`python main.py --mode=estimate`: estimate PDS filter statistics from a dataset.

Reads config.data (the pipeline, see `pds_jax.data.get_dataset`) and config.estimate:
num_images, batch_size, seed, output ('' = `<workdir>/filters.npz`, or `filters_<k>.npz`
when that exists). Writes, never over an existing file:

  filters.npz   raw statistics + metadata (`pds_jax.filters.FilterStats.save`)
  filters.png   row 1: log power spectrum R per channel (fftshifted, DC in the centre);
                row 2: second moment A per channel; each panel min–max normalised and captioned
  filters.json  the summary this function returns
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time

import jax
import numpy as np

from pds_jax import data, distributed, filters, images
from pds_jax.io_utils import OutputExistsError, atomic_write_json, free_stem
from pds_jax.precond import frequency_filter, space_filter

DISPLAY_ALPHA = 5.0
OUTPUT_SUFFIXES = (".npz", ".png", ".json")


def output_paths(config, workdir: str) -> dict:
    """The .npz, .png and .json paths that `run` writes.

    By default `<workdir>/filters.npz`, or the first free `filters_<k>.npz` (with its .png and
    .json) when an earlier estimate is there, as sample/compare pick `samples_<k>/`; a path set
    in config.estimate.output is the user's choice and is refused, never overwritten, if it exists
    (here, before the pass spends any time).
    """
    chosen = config.estimate.get("output", "")
    npz = chosen or os.path.join(workdir, "filters.npz")
    if not npz.endswith(".npz"):
        raise ValueError(f"config.estimate.output must end in '.npz', got {npz!r}")
    stem = npz[: -len(".npz")]
    if not chosen:
        stem = free_stem(stem, OUTPUT_SUFFIXES)
    paths = {kind.lstrip("."): stem + kind for kind in OUTPUT_SUFFIXES}
    taken = [p for p in paths.values() if os.path.exists(p)]
    if taken:
        raise OutputExistsError(f"{taken[0]} already exists (config.estimate.output={chosen}); refusing to "
                                "overwrite it: pass another --config.estimate.output=<path>.npz, or "
                                "leave it empty for a free name in --workdir")
    return paths


def _panel(plane: np.ndarray, min_size: int = 128, max_size: int = 512) -> np.ndarray:
    """One (H, W) statistic → a min–max normalised uint8 (h, w, 1) tile of a readable size."""
    step = max(1, plane.shape[0] // max_size)
    plane = plane[::step, ::step]
    lo, hi = float(plane.min()), float(plane.max())
    tile = images.to_uint8((plane - lo) / (hi - lo) if hi > lo else np.zeros_like(plane))
    zoom = max(1, min_size // tile.shape[0])
    return np.repeat(np.repeat(tile, zoom, axis=0), zoom, axis=1)[..., None]


def statistics_picture(stats: filters.FilterStats) -> np.ndarray:
    """uint8 HWC picture, captioned: log R (fftshifted) per channel above A per channel."""
    R = np.fft.fftshift(np.log(np.maximum(stats.freq, np.finfo(np.float64).tiny)), axes=(0, 1))
    A = stats.space
    rows = [images.side_by_side([_panel(s[..., c]) for c in range(s.shape[-1])]) for s in (R, A)]
    channels = "  |  ".join(f"channel {c}" for c in range(stats.shape[-1]))
    rows = [images.captioned(rows[0], f"log R: mean power spectrum (DC at the centre), {stats.count} images\n"
                                      f"{channels}; each panel scaled min-max"),
            images.captioned(rows[1], "A: mean second moment per pixel\n" + channels)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    gap = np.full((8, width, rows[0].shape[2]), 255, np.uint8)
    return np.concatenate([rows[0], gap, rows[1]], axis=0)


def _range(fn):
    try:
        arr = fn()
        return {"min": float(np.min(arr)), "max": float(np.max(arr))}
    except ValueError as e:  # e.g. A ≡ 0 on all-black images
        return {"error": str(e)}


def _pass(config, split: str, num_images):
    """The statistics of this process's share of the images, summed over all processes.

    With P processes process i reads only the i-th disjoint piece of the (seeded) image
    subset (`data.get_dataset(part=...)`); the float64 sums Σ|Fx|², Σx² and the counts are
    added over processes (`distributed.sum_over_processes`), so the result is the one
    process's up to float64 summation order.
    """
    est, d = config.estimate, config.data
    count = distributed.process_count()
    part = (distributed.process_index(), count) if count > 1 else None
    share = num_images if num_images is None or part is None else (
        (part[0] + 1) * num_images // count - part[0] * num_images // count)
    batches = data.get_dataset(config, split=split, batch_size=int(est.batch_size), shuffle=True,
                               seed=int(est.seed), num_images=num_images, train=False, part=part)
    metadata = dict(dataset=d.dataset, centered=bool(d.centered), seed=int(est.seed),
                    extra={"split": split, "folder": d.get("folder", "")})
    first = next(batches, None) if share != 0 else None
    if first is None and part is not None:  # this process's share is empty (fewer images than processes)
        stats = filters.FilterStats.zeros(d.image_size, d.num_channels, **metadata)
    else:
        stats = filters.estimate(itertools.chain([first], batches) if first is not None else batches,
                                 d.image_size, d.num_channels, share, progress=distributed.is_main(),
                                 **metadata)
    if part is None:
        return stats
    total = distributed.sum_over_processes({"power": stats.sum_power, "sq": stats.sum_sq,
                                            "count": np.float64(stats.count)})
    extra = dict(stats.extra, processes=count, devices=jax.device_count())
    return dataclasses.replace(stats, sum_power=total["power"], sum_sq=total["sq"],
                               count=int(round(float(total["count"]))), extra=extra)


def run(config, workdir: str) -> dict:
    """Estimate filter statistics as config says; write .npz, .png and .json; return the summary."""
    paths = output_paths(config, workdir)
    est, d = config.estimate, config.data
    split = d.get("split", "") or "train"
    num_images = int(est.num_images) if est.num_images else None
    start = time.perf_counter()
    stats = _pass(config, split, num_images)
    seconds = time.perf_counter() - start
    if not distributed.is_main():
        return {}
    stats.save(paths["npz"])
    images.save_png(paths["png"], statistics_picture(stats))
    R, A = stats.freq, stats.space
    summary = {
        "files": paths,
        "dataset": d.dataset, "split": split, "centered": bool(d.centered), "seed": int(est.seed),
        "count": stats.count, "shape": list(stats.shape), "devices": jax.device_count(),
        "processes": distributed.process_count(),
        "seconds": round(seconds, 3), "images_per_second": round(stats.count / max(seconds, 1e-9), 2),
        "R": {"min": float(R.min()), "max": float(R.max())},
        "A": {"min": float(A.min()), "max": float(A.max())},
        "D_alpha5_normalized": _range(lambda: frequency_filter(R, DISPLAY_ALPHA, "normalized")),
        "s_alpha5_normalized": _range(lambda: space_filter(A, DISPLAY_ALPHA, "normalized")),
    }
    atomic_write_json(paths["json"], summary)
    print(f"filter statistics of {stats.count} {d.dataset} images ({'×'.join(map(str, stats.shape))}, "
          f"{summary['images_per_second']} img/s on {summary['devices']} device(s))")
    for key in ("R", "A", "D_alpha5_normalized", "s_alpha5_normalized"):
        print(f"  {key:20s} {summary[key]}")
    for kind, path in paths.items():
        print(f"  wrote {kind:4s} {path}")
    return summary
