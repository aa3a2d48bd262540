"""Wall time per PC sampling step, vanilla vs PDS, with the real NCSN++ networks.

For each image size the same network (random weights; the values do not change the
cost) runs a vanilla and a PDS PC sampler (reverse-diffusion predictor + Langevin
corrector, both PDS filters), measured side by side in one process:

* per-step time: each sampler is compiled for K steps and for 0 steps of work (the
  same sampler with predictor = corrector = 'none': prior draw, M on it, output,
  dispatch); per round, step = (t(K) − t(0)) / K, or the least-squares slope when
  several K are given (--steps 1 10). Mean, std, min, median over the rounds;
* ratio PDS / vanilla per round;
* FFT-only: the work PDS adds to one PC step, alone (P on the corrector's gradient,
  M on its noise, P on the predictor's drift, M on its noise), same batch and size;
* trivial score (score = −x) at 3×256×256, batch 8: the sampler's own work, so
  PDS − vanilla there is the pure FFT overhead inside the sampler.

    python benchmarks/step_cost.py                    # CPU: batch 1, 32² and 256², a few minutes
    python benchmarks/step_cost.py --sizes 32 256 1024
    python benchmarks/step_cost.py --preset=paper     # GPU: batch 8, 32²/256²/1024², K = 10

JSON keys: benchmark, complete, device, precision, settings, method, sizes[] (per size:
image_size, config, batch, status ['ok' | 'skipped' | 'error'], reason, num_params,
vanilla/pds/fft_only {per_step_s, fixed_s, steps_timed, times_s, first_call_s},
ratio_pds_over_vanilla, pds_minus_vanilla_s, fft_only_over_vanilla), trivial_score
(the same fields at its shape), total_s. Times in seconds; `per_step_s` etc. are
{mean, std, min, median, n, values}.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from benchmarks import common, pil_plot  # noqa: E402
from pds_jax import timing  # noqa: E402
from pds_jax.sde import get_sde  # noqa: E402

NAME = "step_cost"
SIZE_CONFIGS = {
    32: "ve/cifar10_ncsnpp_deep_continuous",
    256: "ve/bedroom_ncsnpp_continuous",
    1024: "ve/ffhq_ncsnpp_continuous",
}
TRIVIAL_CONFIG = "ve/bedroom_ncsnpp_continuous"  # its SDE (σ_max 378) and snr for the trivial score
PRESETS = {
    "cpu": dict(sizes=[32, 256], batch=1, steps=[2], fft_steps=[4], trivial_shape=[8, 256, 256, 3],
                trivial_steps=[3], repeats=3, budget_s=0),
    "paper": dict(sizes=[32, 256, 1024], batch=8, steps=[10], fft_steps=[50], trivial_shape=[8, 256, 256, 3],
                  trivial_steps=[50], repeats=3, budget_s=0),
}
METHOD = ("per-step time = least-squares slope of wall time vs steps over the K-step samplers and the "
          "0-step one (predictor = corrector = 'none': prior draw, M, output, dispatch), fitted in each "
          "timed round after compilation; all variants of a size are timed in the same interleaved rounds")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--sizes", type=int, nargs="*", default=None,
                        help=f"image sizes, networks {SIZE_CONFIGS}")
    parser.add_argument("--configs", nargs="*", default=None,
                        help="config names to time instead of --sizes (e.g. ve/cifar10_ncsnpp_continuous)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="step counts K of the timed samplers")
    parser.add_argument("--fft-steps", type=int, nargs="+", default=None, help="repetitions of the FFT-only work")
    parser.add_argument("--trivial-shape", type=int, nargs=4, default=None, metavar=("B", "H", "W", "C"),
                        help="shape of the trivial-score run (0 0 0 0 skips it)")
    parser.add_argument("--trivial-steps", type=int, nargs="+", default=None)
    common.add_common_flags(parser, repeats=None, budget_s=None)
    return common.apply_preset(parser.parse_args(argv), PRESETS)


def case_result(families: dict) -> dict:
    """JSON fields of one side-by-side measurement of vanilla, pds and fft_only."""
    van, pds, fft = (families[k]["per_step_s"] for k in ("vanilla", "pds", "fft_only"))
    return {
        "vanilla": timing.summary(families["vanilla"]),
        "pds": timing.summary(families["pds"]),
        "fft_only": timing.summary(families["fft_only"]),
        "ratio_pds_over_vanilla": timing.ratio_stats(pds, van).to_dict(),
        "pds_minus_vanilla_s": timing.Stats.of(a - b for a, b in zip(pds.values, van.values)).to_dict(),
        "fft_only_over_vanilla": float(f"{fft.mean / van.mean:.6g}"),
    }


def build_network(name: str, args):
    """(programs, info) of one network: vanilla and PDS samplers, and the FFT-only work."""
    net = common.random_network(name, args.set, args.batch)
    config, shape, sde, params, score_fn = (net[k] for k in ("config", "shape", "sde", "params", "score_fn"))
    precond, kwargs = net["precond"], net["sampler_kwargs"]
    programs = {
        "vanilla": timing.pc_programs(sde, shape, score_fn, args.steps, None, **kwargs),
        "pds": timing.pc_programs(sde, shape, score_fn, args.steps, precond, **kwargs),
        "fft_only": timing.preconditioner_programs(precond, shape, args.fft_steps),
    }
    info = {"num_params": timing.num_params(params), "sampler": kwargs, "preconditioner": precond.describe()}
    return programs, info


def build_trivial(args):
    """(programs, info) with the score −x at --trivial-shape (the SDE and snr of LSUN bedroom)."""
    config = common.load_config(TRIVIAL_CONFIG)
    shape = tuple(args.trivial_shape)
    sde = get_sde(config)
    precond = timing.timing_preconditioner(shape[1:])
    kwargs = timing.pc_sampler_kwargs(config)
    programs = {
        "vanilla": timing.pc_programs(sde, shape, timing.linear_score, args.trivial_steps, None, **kwargs),
        "pds": timing.pc_programs(sde, shape, timing.linear_score, args.trivial_steps, precond, **kwargs),
        "fft_only": timing.preconditioner_programs(precond, shape, args.fft_steps),
    }
    info = {"sde_from": TRIVIAL_CONFIG, "sampler": kwargs, "preconditioner": precond.describe()}
    return programs, info


def plot(result: dict):
    rows = [r for r in result["sizes"] if r.get("status") == "ok"]
    per_step = {"vanilla": [], "PDS (freq + space)": [], "FFT-only (2P + 2M)": []}
    overhead = {"PDS / vanilla - 1": [], "FFT-only / vanilla": []}
    for r in rows:
        x = r["image_size"]
        per_step["vanilla"].append((x, 1e3 * r["vanilla"]["per_step_s"]["mean"]))
        per_step["PDS (freq + space)"].append((x, 1e3 * r["pds"]["per_step_s"]["mean"]))
        per_step["FFT-only (2P + 2M)"].append((x, 1e3 * r["fft_only"]["per_step_s"]["mean"]))
        overhead["PDS / vanilla - 1"].append((x, 100 * (r["ratio_pds_over_vanilla"]["mean"] - 1)))
        overhead["FFT-only / vanilla"].append((x, 100 * r["fft_only_over_vanilla"]))
    device = result["device"]
    batch = rows[0]["batch"] if rows else "?"
    panels = [
        pil_plot.loglog_panel(per_step, f"time per PC step, batch {batch}", "image size (pixels per side)",
                              "ms per step"),
        pil_plot.loglog_panel(overhead, "PDS overhead", "image size (pixels per side)", "% of a vanilla step"),
    ]
    title = f"step_cost on {device['device_kind']} ({device['platform']}), random NCSN++ weights"
    trivial = result.get("trivial_score") or {}
    if trivial.get("status") == "ok":
        title += (f"; score=-x at {'x'.join(map(str, trivial['shape']))}: PDS - vanilla = "
                  f"{1e3 * trivial['pds_minus_vanilla_s']['mean']:.3g} ms/step")
    return pil_plot.grid_of_panels(panels, 2, title)


def table(result: dict) -> str:
    rows = []
    entries = list(result["sizes"])
    if result.get("trivial_score"):
        entries.append(dict(result["trivial_score"], image_size="score=-x", config="trivial"))
    for r in entries:
        label = r["image_size"] if isinstance(r["image_size"], str) else f"{r['image_size']}²"
        if r.get("status") != "ok":
            rows.append([label, r.get("config", ""), r.get("batch", ""), r.get("status"), "", "", "", ""])
            continue
        v, p, f = (r[k]["per_step_s"] for k in ("vanilla", "pds", "fft_only"))
        ratio = r["ratio_pds_over_vanilla"]
        rows.append([label, r.get("config", ""), r["batch"],
                     f"{common.ms(v['mean'])} ± {common.ms(v['std'], 2)}",
                     f"{common.ms(p['mean'])} ± {common.ms(p['std'], 2)}",
                     f"{ratio['mean']:.3f} ± {ratio['std']:.3f}",
                     f"{common.ms(f['mean'])} ± {common.ms(f['std'], 2)}",
                     f"{100 * r['fft_only_over_vanilla']:.2g}%"])
    return common.format_table(["size", "config", "batch", "vanilla ms/step", "PDS ms/step", "PDS/vanilla",
                                "FFT-only ms/step", "FFT/vanilla"], rows)


def trivial_case(args, budget, entries: dict, cases: dict):
    """The score = −x case (FFT overhead alone), added to entries/cases; None if not asked for."""
    if not (args.trivial_shape and all(args.trivial_shape)):
        return None
    trivial = entries["trivial"] = {"shape": list(args.trivial_shape), "batch": args.trivial_shape[0],
                                    "status": "pending"}
    if budget.exhausted():
        trivial.update(status="skipped", reason=budget.reason())
        return trivial
    try:
        cases["trivial"], info = build_trivial(args)
        trivial.update(info)
    except Exception as e:  # noqa: BLE001
        trivial.update(status="error", reason=common.error_text(e))
    return trivial


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    common.setup_jax(args)
    budget = common.Budget(args.budget_s)
    json_path, png_path = common.output_paths(args.out, NAME, args.overwrite)
    writer = common.ResultWriter(json_path, png_path)
    names = args.configs if args.configs else [SIZE_CONFIGS[s] for s in args.sizes]
    unknown = [s for s in (args.sizes or []) if s not in SIZE_CONFIGS]
    if unknown and not args.configs:
        raise SystemExit(f"--sizes {unknown}: known sizes are {sorted(SIZE_CONFIGS)} (or give --configs)")
    settings = {k: getattr(args, k) for k in ("preset", "batch", "steps", "fft_steps", "trivial_shape",
                                                "trivial_steps", "repeats", "budget_s", "workers", "set")}
    settings["configs"] = names
    result = common.header(NAME, argv, settings)
    result.update(method=METHOD, sizes=[], trivial_score=None, weights="random N(0, 1/fan_in)")
    print(f"{NAME}: writing {json_path}", flush=True)

    # Build every case, compile them all (overlapping), then time case by case.
    entries, cases = {}, {}
    for name in names:
        entry = entries[name] = {"config": name, "batch": args.batch, "image_size": None, "status": "pending"}
        try:
            entry["image_size"] = common.load_config(name, args.set).data.image_size
            if budget.exhausted():
                entry.update(status="skipped", reason=budget.reason())
                continue
            cases[name], info = build_network(name, args)
            entry.update(info)
        except Exception as e:  # noqa: BLE001 - one failing size must not lose the others
            entry.update(status="error", reason=common.error_text(e))
    trivial = trivial_case(args, budget, entries, cases)
    result["sizes"] = [entries[name] for name in names]
    result["trivial_score"] = trivial
    writer.write(result)

    def record(case, m):
        entry = entries[case]
        if m["status"] == "ok":
            entry.update(case_result(m["families"]))
        else:
            entry["reason"] = m["reason"]
        entry["status"] = m["status"]
        writer.write(result)

    skip = lambda case: budget.reason() if budget.exhausted() else None
    timing.measure_cases(cases, args.repeats, solo_family="vanilla", workers=args.workers, skip=skip,
                         on_result=record)
    for entry in result["sizes"] + ([trivial] if trivial else []):
        print(f"  {entry.get('image_size') or entry.get('shape')}: {entry['status']} {entry.get('reason', '')}",
              flush=True)

    return common.finish(result, writer, budget, plot(result), table(result), json_path, png_path)


if __name__ == "__main__":
    main()
