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

import copy
import os
import time
from typing import Sequence

from pds_jax.io_utils import OutputExistsError, atomic_write_json
from pds_jax import resources
from pds_jax.modes.common import checkpoint_path, load_score_fn, run_header

STEPS = (3,)     # K of the timed samplers (the 0-step sampler is always added)
REPEATS = 3      # timed rounds


def _weights(config, workdir, sde):
    """(score_fn, description) from the checkpoint if there is one, else random weights."""
    from pds_jax import models, timing

    path = checkpoint_path(config, workdir)
    if os.path.exists(path):
        import jax

        _sde, model, params, _score_fn, ckpt = load_score_fn(config, workdir)
        params = jax.device_put(params)  # host arrays would be copied to the device at every call
        score_fn = models.get_score_fn(sde, model, params, continuous=config.training.continuous)
        return score_fn, params, {"source": "checkpoint", "path": ckpt}
    params = timing.random_params(config)
    score_fn = models.get_score_fn(sde, models.create_model(config), params, continuous=config.training.continuous)
    return score_fn, params, {"source": "random", "reason": f"no checkpoint at {path}",
                              "init": "N(0, 1/fan_in) kernels, zero biases"}


def _preconditioner(config, shape):
    """(Preconditioner, description) for the config's filters; see the module docstring."""
    from pds_jax import alpha_rule, timing
    from pds_jax.filters import preconditioner_from_config
    from pds_jax.precond import Preconditioner

    pds = config.sampling.pds
    named = {kind: str(pds.get(f"{kind}_filter", "") or "") for kind in ("freq", "space")}
    named = {kind: path for kind, path in named.items() if path}
    if not named:
        return Preconditioner.identity(shape), {"source": "none", "filters": [],
                                                "note": "no filters configured: PDS = vanilla"}
    resolved = {kind: resources.resolve(path, missing_ok=True) for kind, path in named.items()}
    missing = sorted(kind for kind, path in resolved.items() if not os.path.isfile(path))
    if missing:
        precond = timing.timing_preconditioner(shape, freq="freq" in named, space="space" in named,
                                               alpha=alpha_rule.config_alpha(config))
        return precond, {"source": "synthetic", "filters": sorted(named),
                         "missing_files": {k: named[k] for k in missing},
                         "note": "named filter files are missing; synthetic statistics of the same kinds "
                                 "(same cost per step) were used"}
    config = copy.deepcopy(config)
    for kind, path in resolved.items():
        config.sampling.pds[f"{kind}_filter"] = path
    return preconditioner_from_config(config), {"source": "files", "filters": sorted(named), "paths": resolved}


def output_path(workdir: str, name: str = "benchmark") -> str:
    """`<workdir>/benchmark.json`, or the first free `benchmark_<k>.json`."""
    k = 0
    while True:
        path = os.path.join(workdir, f"{name}.json" if k == 0 else f"{name}_{k}.json")
        if not os.path.exists(path):
            return path
        k += 1


def run(config, workdir: str, steps: Sequence[int] = STEPS, repeats: int = REPEATS) -> dict:
    from pds_jax import timing
    from pds_jax.samplers.pc import speed_up_schedule
    from pds_jax.sde import get_sde

    start = time.perf_counter()
    batch = int(config.sampling.batch_size)
    if batch < 1:
        raise ValueError(f"config.sampling.batch_size must be >= 1, got {batch}")
    image = (int(config.data.image_size), int(config.data.image_size), int(config.data.num_channels))
    shape = (batch,) + image
    sde = get_sde(config)
    score_fn, params, weights = _weights(config, workdir, sde)
    precond, filters = _preconditioner(config, image)
    kwargs = timing.pc_sampler_kwargs(config)
    programs = {
        "vanilla": timing.pc_programs(sde, shape, score_fn, steps, None, **kwargs),
        "pds": timing.pc_programs(sde, shape, score_fn, steps, precond, **kwargs),
    }
    measured = timing.measure_programs(programs, repeats, solo=["vanilla"])

    pds_sde, pds_eps = speed_up_schedule(sde, float(config.sampling.pds.speed_up))
    nfe_per_step = 1 + kwargs["n_steps"]
    samplers = {}
    for name, full_steps in (("vanilla", sde.N), ("pds", pds_sde.N)):
        m = measured[name]
        entry = timing.summary(m)
        entry.update(full_steps=full_steps, nfe=full_steps * nfe_per_step,
                     estimated_full_run_s=float(f"{m['fixed_s'].mean + full_steps * m['per_step_s'].mean:.5g}"))
        samplers[name] = entry
    samplers["pds"].update(speed_up=float(config.sampling.pds.speed_up), eps=pds_eps)
    ratio = timing.ratio_stats(measured["pds"]["per_step_s"], measured["vanilla"]["per_step_s"])

    report = run_header(config, "benchmark")
    report.update({
        "sampler": dict(kwargs, method="pc", configured_method=config.sampling.method),
        "batch_size": batch,
        "weights": weights,
        "num_params": timing.num_params(params),
        "filters": filters,
        "preconditioner": precond.describe(),
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
    os.makedirs(workdir, exist_ok=True)
    while True:  # never overwrite, also if another run takes the name meanwhile
        path = output_path(workdir)
        try:
            atomic_write_json(path, report)
            break
        except OutputExistsError:
            continue
    report["output"] = path
    print(format_report(report))
    print(f"wrote {path}")
    return report


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
