"""The paper's wall-time comparison (PDS, ECCV 2022, Table 5 / docs/design.md §7), extrapolated.

Batch 8, NCSN++ (random weights: the values do not change the cost):
  LSUN bedroom 256²: vanilla PC 2000 steps vs PDS 166 steps (speed_up 12, frequency filter);
  FFHQ 1024²:        vanilla PC 2000 steps vs PDS  66 steps (speed_up 30, both filters).
Paper (RTX 3090, PyTorch): 1173 s → 90 s and 2030 s → 71 s.

Full runs do not fit in a few minutes even on an H100, so each sampler is compiled for
K steps (--preset=paper: 10) and for 0 steps of work, timed after compilation in interleaved
rounds, and the total is extrapolated linearly: fixed + N_full × per-step (every PC
step costs the same: one corrector and one predictor network evaluation; the cost does
not depend on the σ schedule). The JSON says so: "extrapolated": true, "steps_timed".

    python benchmarks/paper_timing.py                     # CPU: scaled down (batch 1, bedroom only)
    python benchmarks/paper_timing.py --preset=paper      # GPU: batch 8, both cases, K = 10

JSON keys: benchmark, complete, extrapolated, scaled_down, note, device, precision,
settings, cases[] (name, config, image_size, batch, status ['ok' | 'skipped' | 'error'],
reason, paper {vanilla_s, pds_s, speedup, device, batch}, vanilla/pds {full_steps, nfe,
speed_up, filters, per_step_s, fixed_s, steps_timed, times_s, measured_s,
extrapolated_total_s, extrapolated_total_range_s}, extrapolated_speedup,
ratio_to_paper {vanilla, pds}), total_s.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from benchmarks import common, pil_plot  # noqa: E402
from pds_jax import models, timing  # noqa: E402
from pds_jax.pds import pc_schedule  # noqa: E402
from pds_jax.sde import get_sde  # noqa: E402

NAME = "paper_timing"
PAPER_DEVICE = "NVIDIA RTX 3090 (PyTorch, official PDS code)"
CASES = {
    "lsun_bedroom_256": dict(config="ve/bedroom_ncsnpp_continuous", speed_up=12.0, filters=("freq",),
                             paper_vanilla_s=1173.0, paper_pds_s=90.0),
    "ffhq_1024": dict(config="ve/ffhq_ncsnpp_continuous", speed_up=30.0, filters=("freq", "space"),
                      paper_vanilla_s=2030.0, paper_pds_s=71.0),
}
PAPER_BATCH = 8
PAPER_STEPS = 2000
PRESETS = {
    "cpu": dict(cases=["lsun_bedroom_256"], batch=1, steps=[2], repeats=2, budget_s=0),
    # K = 10 as in step_cost's paper preset: the same programs, so a persistent compilation
    # cache (JAX_COMPILATION_CACHE_DIR) lets the second script load instead of compiling.
    "paper": dict(cases=["lsun_bedroom_256", "ffhq_1024"], batch=8, steps=[10], repeats=2, budget_s=0),
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--cases", nargs="*", choices=sorted(CASES), default=None)
    parser.add_argument("--batch", type=int, default=None, help=f"the paper's is {PAPER_BATCH}")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="step counts K actually timed")
    parser.add_argument("--config-override", action="append", default=[], metavar="CASE=CONFIG",
                        help="time another config for a case (e.g. a small one for tests)")
    common.add_common_flags(parser, repeats=None, budget_s=None)
    return common.apply_preset(parser.parse_args(argv), PRESETS)


def sampler_result(measured: dict, full_steps: int, nfe_per_step: int) -> dict:
    out = timing.summary(measured)
    step, fixed = measured["per_step_s"], measured["fixed_s"]
    out["full_steps"] = full_steps
    out["nfe"] = full_steps * nfe_per_step
    out["measured_s"] = {str(n): round(sum(v) / len(v), 4) for n, v in sorted(measured["times_s"].items())}
    totals = [f + full_steps * s for f, s in zip(fixed.values, step.values)]
    out["extrapolated_total_s"] = _sig(fixed.mean + full_steps * step.mean)
    out["extrapolated_total_range_s"] = [_sig(min(totals)), _sig(max(totals))]
    return out


def _sig(x: float, digits: int = 5) -> float:
    return float(f"{x:.{digits}g}")


def _ratio(a: float, b: float):
    return _sig(a / b, 4) if b > 0 else None


def build_case(spec: dict, config_name: str, args):
    """(programs, context) of one case: vanilla and PDS samplers of the same network."""
    config = common.load_config(config_name, args.set)
    shape = (args.batch, config.data.image_size, config.data.image_size, config.data.num_channels)
    sde = get_sde(config)
    params = timing.random_params(config)
    score_fn = models.get_score_fn(sde, models.create_model(config), params, continuous=config.training.continuous)
    precond = timing.timing_preconditioner(shape[1:], freq="freq" in spec["filters"], space="space" in spec["filters"])
    kwargs = timing.pc_sampler_kwargs(config)
    programs = {
        "vanilla": timing.pc_programs(sde, shape, score_fn, args.steps, None, **kwargs),
        "pds": timing.pc_programs(sde, shape, score_fn, args.steps, precond, **kwargs),
    }
    context = {"sde": sde, "kwargs": kwargs, "precond": precond, "num_params": timing.num_params(params),
               "image_size": config.data.image_size}
    return programs, context


def case_result(spec: dict, context: dict, families: dict) -> dict:
    sde, kwargs = context["sde"], context["kwargs"]
    nfe_per_step = 1 + kwargs["n_steps"]
    pds_sde, pds_eps = pc_schedule(sde, spec["speed_up"])
    vanilla = sampler_result(families["vanilla"], sde.N, nfe_per_step)
    pds = sampler_result(families["pds"], pds_sde.N, nfe_per_step)
    vanilla.update(speed_up=1.0, filters=[], eps=sde.default_eps)
    pds.update(speed_up=spec["speed_up"], filters=list(spec["filters"]), eps=pds_eps,
               preconditioner=context["precond"].describe())
    paper_v, paper_p = spec["paper_vanilla_s"], spec["paper_pds_s"]
    return {
        "num_params": context["num_params"],
        "image_size": context["image_size"],
        "sampler": kwargs,
        "vanilla": vanilla,
        "pds": pds,
        "extrapolated_speedup": _ratio(vanilla["extrapolated_total_s"], pds["extrapolated_total_s"]),
        "ratio_pds_over_vanilla_per_step": timing.ratio_stats(families["pds"]["per_step_s"],
                                                              families["vanilla"]["per_step_s"]).to_dict(),
        "ratio_to_paper": {"vanilla": _ratio(vanilla["extrapolated_total_s"], paper_v),
                           "pds": _ratio(pds["extrapolated_total_s"], paper_p)},
    }


def plot(result: dict):
    panels = []
    for case in result["cases"]:
        series = {}
        if case.get("status") == "ok":
            for key, label in (("vanilla", "vanilla PC"), ("pds", "PDS")):
                r = case[key]
                pts = [(int(n), t) for n, t in r["measured_s"].items() if int(n) > 0]
                series[f"{label}: timed"] = pts
                series[f"{label}: extrapolated"] = [pts[-1], (r["full_steps"], r["extrapolated_total_s"])]
        p = case["paper"]
        series["paper (RTX 3090)"] = [(2000, p["vanilla_s"]), (p["pds_steps"], p["pds_s"])]
        title = f"{case['name']}, batch {case['batch']}"
        panels.append(pil_plot.loglog_panel(series, title, "PC steps", "wall time (s)", size=(720, 480)))
    device = result["device"]
    return pil_plot.grid_of_panels(panels, len(panels),
                                   f"paper_timing (extrapolated from K timed steps) on {device['device_kind']}")


def table(result: dict) -> str:
    rows = []
    for case in result["cases"]:
        p = case["paper"]
        if case.get("status") != "ok":
            rows.append([case["name"], case.get("status"), "", "", "", "", "", "", case.get("reason", "")[:60]])
            continue
        for key, paper_s in (("vanilla", p["vanilla_s"]), ("pds", p["pds_s"])):
            r = case[key]
            k = max(int(n) for n in r["measured_s"])
            rows.append([case["name"], key, r["full_steps"], k, f"{r['measured_s'][str(k)]:.3g}",
                         common.ms(r["per_step_s"]["mean"], 4), f"{r['extrapolated_total_s']:.4g}", f"{paper_s:g}",
                         ""])
        speedup = case["extrapolated_speedup"]
        rows.append([case["name"], "speed-up", "", "", "", "", "-" if speedup is None else f"{speedup:.3g}x",
                     f"{p['speedup']:.3g}x", ""])
    return common.format_table(["case", "sampler", "full steps", "K timed", "K-step s", "ms/step",
                                "extrapolated s", "paper s", "note"], rows)


def build_cases(args, overrides: dict, budget) -> tuple:
    """({name: result entry}, {name: programs}, {name: context}) of every case (errors recorded)."""
    entries, cases, contexts = {}, {}, {}
    for name, spec in CASES.items():
        config_name = overrides.get(name, spec["config"])
        entry = entries[name] = {
            "name": name, "config": config_name, "batch": args.batch, "status": "pending",
            "paper": {"vanilla_s": spec["paper_vanilla_s"], "pds_s": spec["paper_pds_s"],
                      "speedup": round(spec["paper_vanilla_s"] / spec["paper_pds_s"], 2),
                      "vanilla_steps": PAPER_STEPS, "pds_steps": int(PAPER_STEPS / spec["speed_up"]),
                      "device": PAPER_DEVICE, "batch": PAPER_BATCH}}
        if name not in args.cases:
            entry.update(status="skipped", reason=f"not in --cases {args.cases} (preset {args.preset})")
        elif budget.exhausted():
            entry.update(status="skipped", reason=budget.reason())
        else:
            try:
                cases[name], contexts[name] = build_case(spec, config_name, args)
            except Exception as e:  # noqa: BLE001 - one failing case must not lose the other
                entry.update(status="error", reason=common.error_text(e))
    return entries, cases, contexts


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    common.setup_jax(args)
    budget = common.Budget(args.budget_s)
    overrides = dict(item.split("=", 1) for item in args.config_override)
    json_path, png_path = common.output_paths(args.out, NAME, args.overwrite)
    writer = common.ResultWriter(json_path, png_path)
    scaled_down = args.batch != PAPER_BATCH or sorted(args.cases) != sorted(CASES)
    settings = {k: getattr(args, k) for k in ("preset", "cases", "batch", "steps", "repeats", "budget_s",
                                                "workers", "set", "config_override")}
    result = common.header(NAME, argv, settings)
    result.update(
        extrapolated=True, steps_timed=sorted(set(args.steps)), scaled_down=scaled_down,
        weights="random N(0, 1/fan_in)",
        note=("Each sampler was compiled for K (= steps_timed) steps and for 0 steps of work and timed after "
              "compilation; totals are extrapolated linearly to the full step counts: fixed + full_steps x "
              "per-step. Nothing ran the full 2000 steps."
              + (f" Scaled down from the paper's setting (batch {args.batch}, cases {args.cases}); compare "
                 "per-step ratios, not absolute totals, with the paper." if scaled_down else "")),
        cases=[])
    print(f"{NAME}: writing {json_path}", flush=True)

    # Build every case, compile them all (overlapping), then time case by case.
    entries, cases, contexts = build_cases(args, overrides, budget)
    result["cases"] = list(entries.values())
    writer.write(result)

    def record(name, m):
        entry = entries[name]
        if m["status"] == "ok":
            try:
                entry.update(case_result(CASES[name], contexts[name], m["families"]))
            except Exception as e:  # noqa: BLE001
                m = {"status": "error", "reason": common.error_text(e)}
        entry["status"] = m["status"]
        if m["status"] != "ok":
            entry["reason"] = m["reason"]
        print(f"  {name}: {entry['status']} {entry.get('reason', '')}", flush=True)
        writer.write(result)

    skip = lambda case: budget.reason() if budget.exhausted() else None
    timing.measure_cases(cases, args.repeats, solo_family="vanilla", workers=args.workers, skip=skip,
                         on_result=record)

    result["complete"] = True
    result["total_s"] = round(budget.elapsed(), 1)
    writer.write(result, plot(result))
    print(table(result))
    print(result["note"])
    print(f"wrote {json_path} and {png_path}")
    return result


if __name__ == "__main__":
    main()
