"""`main.py --mode=benchmark`: wall time per PC step of the configured model, vanilla vs PDS.

    python main.py --config=configs/fashion_mnist_pds.py --workdir=runs/fm --mode=benchmark

Both samplers use the config's predictor, corrector, snr and corrector steps at
`config.sampling.batch_size`, the same network and the same device, and are timed
side by side after compilation (`pds_jax.timing`): each is compiled for K steps and
for 0 steps of work, and the per-step time is the slope of time vs steps in every
timed round. PDS uses the config's filters (`config.sampling.pds.freq_filter` /
`space_filter`); a filter file that is named but missing is replaced by synthetic
statistics of the same kind (the cost is the same), and no filters means the identity
(then PDS is the vanilla sampler). Weights: the checkpoint (`config.sampling.checkpoint`,
or `<workdir>/checkpoints`) if it exists, else random — `benchmark.json` says which.

Writes `<workdir>/benchmark.json` (never overwritten: `benchmark_1.json`, ... if it
exists) and prints a table with the per-step times, their ratio, and the estimated
wall time of a full run: vanilla N = config.model.num_scales steps, PDS
N / sampling.pds.speed_up steps.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import jax

from pds_jax import models, pds, resources, timing
from pds_jax.io_utils import OutputExistsError, atomic_write_json
from pds_jax.modes.common import checkpoint_path, load_score_fn, run_header
from pds_jax.sde import get_sde

STEPS = (3,)     # K of the timed samplers (the 0-step sampler is always added)
REPEATS = 3      # timed rounds


def _weights(config, workdir, sde):
    """(score_fn, description) from the checkpoint if there is one, else random weights."""
    path = checkpoint_path(config, workdir)
    if os.path.exists(path):
        _sde, model, params, _score_fn, ckpt = load_score_fn(config, workdir)
        params = jax.device_put(params)  # host arrays would be copied to the device at every call
        score_fn = models.get_score_fn(sde, model, params, continuous=config.training.continuous)
        return score_fn, params, {"source": "checkpoint", "path": ckpt}
    params = timing.random_params(config)
    score_fn = models.get_score_fn(sde, models.create_model(config), params, continuous=config.training.continuous)
    return score_fn, params, {"source": "random", "reason": f"no checkpoint at {path}",
                              "init": "N(0, 1/fan_in) kernels, zero biases"}


def _setup(config, sde):
    """(the PDS `PDSSetup`, description of its filters); see the module docstring."""
    p = config.sampling.pds
    named = {kind: str(p.get(f"{kind}_filter", "") or "") for kind in ("freq", "space")}
    named = {kind: path for kind, path in named.items() if path}
    if not named:
        return pds.from_config(config, sde), {"source": "none", "filters": [],
                                              "note": "no filters configured: PDS = vanilla"}
    missing = sorted(kind for kind, path in named.items() if not os.path.isfile(resources.resolve(path, missing_ok=True)))
    if missing:
        image = (int(config.data.image_size),) * 2 + (int(config.data.num_channels),)
        stats = timing.synthetic_statistics(image, freq="freq" in named, space="space" in named)
        return pds.from_config(config, sde, statistics=(stats, {})), {
            "source": "synthetic", "filters": sorted(named), "missing_files": {k: named[k] for k in missing},
            "note": "named filter files are missing; synthetic statistics of the same kinds "
                    "(same cost per step) were used"}
    setup = pds.from_config(config, sde)
    return setup, {"source": "files", "filters": sorted(named), "paths": dict(setup.filter_files)}


def output_path(workdir: str, name: str = "benchmark") -> str:
    """`<workdir>/benchmark.json`, or the first free `benchmark_<k>.json`."""
    k = 0
    while True:
        path = os.path.join(workdir, f"{name}.json" if k == 0 else f"{name}_{k}.json")
        if not os.path.exists(path):
            return path
        k += 1


def _full_runs(sde, setup, measured, kwargs) -> dict:
    """Per-sampler summaries with the estimated wall time of a whole run."""
    nfe_per_step = 1 + kwargs["n_steps"]
    samplers = {}
    for name, full_steps in (("vanilla", sde.N), ("pds", setup.num_steps)):
        m = measured[name]
        entry = timing.summary(m)
        entry.update(full_steps=full_steps, nfe=full_steps * nfe_per_step,
                     estimated_full_run_s=float(f"{m['fixed_s'].mean + full_steps * m['per_step_s'].mean:.5g}"))
        samplers[name] = entry
    samplers["pds"].update(speed_up=setup.speed_up, eps=setup.eps, alpha=setup.alpha)
    return samplers


def run(config, workdir: str, steps: Sequence[int] = STEPS, repeats: int = REPEATS) -> dict:
    start = time.perf_counter()
    batch = int(config.sampling.batch_size)
    if batch < 1:
        raise ValueError(f"config.sampling.batch_size must be >= 1, got {batch}")
    image = (int(config.data.image_size), int(config.data.image_size), int(config.data.num_channels))
    shape = (batch,) + image
    sde = get_sde(config)
    score_fn, params, weights = _weights(config, workdir, sde)
    setup, filters = _setup(config, sde)
    kwargs = timing.pc_sampler_kwargs(config)
    programs = {
        "vanilla": timing.pc_programs(sde, shape, score_fn, steps, None, **kwargs),
        "pds": timing.pc_programs(sde, shape, score_fn, steps, setup.precond, **kwargs),
    }
    measured = timing.measure_programs(programs, repeats, solo=["vanilla"])
    samplers = _full_runs(sde, setup, measured, kwargs)
    ratio = timing.ratio_stats(measured["pds"]["per_step_s"], measured["vanilla"]["per_step_s"])

    report = run_header(config, "benchmark")
    report.update({
        "sampler": dict(kwargs, method="pc", configured_method=config.sampling.method),
        "batch_size": batch,
        "weights": weights,
        "num_params": timing.num_params(params),
        "filters": filters,
        "preconditioner": setup.precond.describe(),
        "method": "per-step time = slope of wall time vs steps over the K-step and 0-step samplers, per "
                  "timed round, after compilation; vanilla and PDS timed in the same interleaved rounds",
        "steps_timed": sorted(set(int(s) for s in steps)),
        "repeats": repeats,
        "vanilla": samplers["vanilla"],
        "pds": samplers["pds"],
        "ratio_pds_over_vanilla_per_step": ratio.to_dict(),
        "estimated_speedup_full_run": _ratio(samplers["vanilla"]["estimated_full_run_s"],
                                             samplers["pds"]["estimated_full_run_s"]),
        "seconds": round(time.perf_counter() - start, 1),
    })
    path = _write_new(workdir, report)
    report["output"] = path
    print(format_report(report))
    print(f"wrote {path}")
    return report


def _write_new(workdir: str, report: dict) -> str:
    os.makedirs(workdir, exist_ok=True)
    while True:  # never overwrite, also if another run takes the name meanwhile
        path = output_path(workdir)
        try:
            return atomic_write_json(path, report)
        except OutputExistsError:
            continue


def _ratio(a: float, b: float):
    return float(f"{a / b:.4g}") if b > 0 else None


def format_report(report: dict) -> str:
    w = report["weights"]
    lines = [f"benchmark: {report['config']['model']['name']} {report['batch_size']}x"
             f"{report['config']['data']['image_size']}² on {report['device']['device_kind']}, weights: "
             f"{w['source']}, filters: {report['filters']['source']} {report['filters']['filters']}"]
    header = f"{'sampler':8s} {'ms/step':>16s} {'full steps':>10s} {'NFE':>6s} {'est. full run s':>16s}"
    lines += [header, "-" * len(header)]
    for name in ("vanilla", "pds"):
        s = report[name]
        step = s["per_step_s"]
        lines.append(f"{name:8s} {1e3 * step['mean']:9.4g} ± {1e3 * step['std']:<5.2g}"
                     f" {s['full_steps']:>10d} {s['nfe']:>6d} {s['estimated_full_run_s']:>16.4g}")
    r = report["ratio_pds_over_vanilla_per_step"]
    speedup = report["estimated_speedup_full_run"]
    lines.append(f"PDS/vanilla per step: {r['mean']:.3f} ± {r['std']:.3f}; estimated full-run speed-up: "
                 + ("-" if speedup is None else f"{speedup:.3g}x"))
    return "\n".join(lines)
