"""Overhead of the jitted PC loop, and compile time vs number of steps.

1. The full jitted PC sampler (vanilla and PDS) at N steps vs NFE × the bare jitted
   network forward (the same score function; a Python loop of jitted calls, each on
   the previous output): their ratio is what the loop adds (noise, norms, the update;
   for PDS the FFTs) minus what it saves (one dispatch for the whole run instead of one
   per evaluation). The forward is also timed inside one jitted `fori_loop` (no
   dispatch per evaluation), which isolates the sampler's own arithmetic. All are timed
   side by side in the same rounds; per-evaluation times are slopes over call counts.
2. Lowering and compile time, and the size of the lowered program text, for
   N ∈ {10, 100, 1000} steps: the loop is a `lax.fori_loop`, so they must be flat in N
   (docs/design.md §1). The persistent compilation cache is switched off for this script so
   every compile is real.

    python benchmarks/loop_overhead.py                  # CPU: the Fashion-MNIST model, batch 4
    python benchmarks/loop_overhead.py --preset=gpu     # GPU: the same model, batch 36, N = 200

JSON keys: benchmark, complete, device, precision, settings, config, batch, num_params,
forward {call_s, in_loop_s}, samplers {vanilla, pds: {steps, nfe, total_s, per_step_s,
fixed_s, nfe_x_forward_call_s, ratio_to_nfe_x_forward_call, ratio_to_nfe_x_forward_in_loop}},
compile {steps, vanilla/pds: [{steps, lower_s, compile_s, lowered_chars, compiled_chars}]},
compile_flat {compile_s_max_over_min, lowered_chars_max_over_min, flat}, total_s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import common, pil_plot  # noqa: E402
from pds_jax import timing  # noqa: E402
from pds_jax.samplers.pc import get_pc_sampler  # noqa: E402

NAME = "loop_overhead"
PRESETS = {
    "cpu": dict(config="fashion_mnist_pds", batch=4, steps=100, compile_steps=[10, 100, 1000], repeats=3,
                forward_calls=50, budget_s=0),
    "gpu": dict(config="fashion_mnist_pds", batch=36, steps=200, compile_steps=[10, 100, 1000], repeats=3,
                forward_calls=200, budget_s=0),
}
FLAT_COMPILE = 2.0   # max/min compile time allowed across N (noise on a shared machine)
FLAT_TEXT = 1.05     # max/min lowered text size (only constants' digits may change)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--config", default=None, help="config name or file (default: the Fashion-MNIST model)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="N of the timed samplers")
    parser.add_argument("--compile-steps", type=int, nargs="+", default=None)
    parser.add_argument("--forward-calls", type=int, default=None, help="jitted forward calls per timed round")
    common.add_common_flags(parser, repeats=None, budget_s=None)
    return common.apply_preset(parser.parse_args(argv), PRESETS)


def compile_sweep(sde, shape, score_fn, precond, steps, kwargs) -> list:
    rows = []
    rng = jax.random.PRNGKey(0)
    for n in steps:
        sampler = get_pc_sampler(sde.with_steps(n), shape, precond=precond, **kwargs)
        t0 = time.perf_counter()
        lowered = sampler.lower(rng, score_fn)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        try:
            compiled_chars = len(compiled.as_text())
        except Exception:  # noqa: BLE001 - not every backend prints its executable
            compiled_chars = None
        rows.append({"steps": n, "lower_s": round(t1 - t0, 4), "compile_s": round(t2 - t1, 4),
                     "lowered_chars": len(lowered.as_text()), "compiled_chars": compiled_chars})
        print(f"  compile {'pds' if precond is not None else 'vanilla'} N={n}: lower {t1 - t0:.2f} s, "
              f"compile {t2 - t1:.2f} s, {rows[-1]['lowered_chars']} chars", flush=True)
    return rows


def forward_programs(score_fn, shape, calls: int):
    """Two baselines of `calls` network evaluations, each chained on the previous output:
    a Python loop of jitted calls (one dispatch each; what a sampler written as a Python
    loop would do) and one jitted `fori_loop` (no dispatch per evaluation). Step count
    0 runs no evaluation."""
    x0 = jax.random.normal(jax.random.PRNGKey(2), shape) * 10.0
    t = jnp.full((shape[0],), 0.5, jnp.float32)
    forward = jax.jit(lambda s, x: x + 1e-3 * s(x, t))

    def python_loop(n):
        def run():
            x = x0
            for _ in range(n):
                x = forward(score_fn, x)
            return x
        return run

    def fused(n):
        run = jax.jit(lambda s, x: jax.lax.fori_loop(0, n, lambda i, x: x + 1e-3 * s(x, t), x))
        return lambda: run(score_fn, x0)

    return {0: python_loop(0), calls: python_loop(calls)}, {0: fused(0), calls: fused(calls)}


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    common.setup_jax(args)
    jax.config.update("jax_enable_compilation_cache", False)  # every compile below must be real
    budget = common.Budget(args.budget_s)
    json_path, png_path = common.output_paths(args.out, NAME, args.overwrite)
    writer = common.ResultWriter(json_path, png_path)
    settings = {k: getattr(args, k) for k in ("preset", "config", "batch", "steps", "compile_steps", "repeats",
                                                "forward_calls", "budget_s", "set")}
    result = common.header(NAME, argv, settings)
    result.update(config=args.config, batch=args.batch, weights="random N(0, 1/fan_in)",
                  compilation_cache_dir=None)
    print(f"{NAME}: writing {json_path}", flush=True)

    net = common.random_network(args.config, args.set, args.batch)
    config, shape, sde, params, score_fn = (net[k] for k in ("config", "shape", "sde", "params", "score_fn"))
    precond, kwargs = net["precond"], net["sampler_kwargs"]
    result.update(num_params=timing.num_params(params), sampler=kwargs, shape=list(shape),
                  preconditioner=precond.describe())

    # 1. Compile time vs N, first (nothing compiled yet that could be reused).
    result["compile"] = {"steps": list(args.compile_steps)}
    for variant, p in (("vanilla", None), ("pds", precond)):
        if budget.exhausted():
            result["compile"][variant] = {"status": "skipped", "reason": budget.reason()}
            continue
        try:
            result["compile"][variant] = compile_sweep(sde, shape, score_fn, p, args.compile_steps, kwargs)
        except Exception as e:  # noqa: BLE001 - reported in the JSON
            result["compile"][variant] = {"status": "error", "reason": common.error_text(e)}
        writer.write(result)
    rows = [r for v in ("vanilla", "pds") if isinstance(result["compile"][v], list) for r in result["compile"][v]]
    if rows:
        by_variant = [result["compile"][v] for v in ("vanilla", "pds") if isinstance(result["compile"][v], list)]
        c_ratio = max(max(r["compile_s"] for r in rs) / min(r["compile_s"] for r in rs) for rs in by_variant)
        t_ratio = max(max(r["lowered_chars"] for r in rs) / min(r["lowered_chars"] for r in rs) for rs in by_variant)
        result["compile_flat"] = {"compile_s_max_over_min": round(c_ratio, 3),
                                  "lowered_chars_max_over_min": round(t_ratio, 4),
                                  "flat": bool(c_ratio < FLAT_COMPILE and t_ratio < FLAT_TEXT),
                                  "thresholds": {"compile": FLAT_COMPILE, "text": FLAT_TEXT}}

    # 2. Sampler vs NFE × forward, side by side.
    if budget.exhausted():
        result["samplers"] = {"status": "skipped", "reason": budget.reason()}
    else:
        try:
            time_samplers(result, sde, shape, score_fn, precond, kwargs, args)
        except Exception as e:  # noqa: BLE001 - reported in the JSON
            result["samplers"] = {"status": "error", "reason": common.error_text(e)}

    return common.finish(result, writer, budget, plot(result), table(result), json_path, png_path)


def time_samplers(result, sde, shape, score_fn, precond, kwargs, args) -> None:
    """Sampler time vs NFE × forward time, side by side (fills result['forward'], ['samplers'])."""
    call, chained = forward_programs(score_fn, shape, args.forward_calls)
    programs = {
        "vanilla": timing.pc_programs(sde, shape, score_fn, [args.steps], None, **kwargs),
        "pds": timing.pc_programs(sde, shape, score_fn, [args.steps], precond, **kwargs),
        "forward_call": call,
        "forward_in_loop": chained,
    }
    measured = timing.measure_programs(programs, args.repeats, solo=["vanilla"], workers=args.workers)
    forward_call = measured["forward_call"]["per_step_s"]
    in_loop = measured["forward_in_loop"]["per_step_s"]
    result["forward"] = {"call_s": forward_call.to_dict(), "in_loop_s": in_loop.to_dict(),
                         "calls_per_round": args.forward_calls}
    result["samplers"] = {}
    nfe_per_step = 1 + kwargs["n_steps"]
    for variant in ("vanilla", "pds"):
        m = measured[variant]
        total = timing.Stats.of(m["times_s"][args.steps])
        nfe = args.steps * nfe_per_step
        entry = timing.summary(m)
        entry.update(steps=args.steps, nfe=nfe, total_s=total.to_dict(),
                     nfe_x_forward_call_s=round(nfe * forward_call.mean, 6),
                     nfe_x_forward_in_loop_s=round(nfe * in_loop.mean, 6),
                     ratio_to_nfe_x_forward_call=round(total.mean / (nfe * forward_call.mean), 4),
                     ratio_to_nfe_x_forward_in_loop=round(total.mean / (nfe * in_loop.mean), 4))
        result["samplers"][variant] = entry


def plot(result: dict):
    compile_series, size_series = {}, {}
    for variant in ("vanilla", "pds"):
        rows = result["compile"].get(variant)
        if not isinstance(rows, list):
            continue
        compile_series[f"{variant}: compile"] = [(r["steps"], r["compile_s"]) for r in rows]
        compile_series[f"{variant}: lower"] = [(r["steps"], r["lower_s"]) for r in rows]
        size_series[f"{variant}: lowered text"] = [(r["steps"], r["lowered_chars"] / 1e3) for r in rows]
    panels = [pil_plot.loglog_panel(compile_series, "compile time vs steps (must be flat)", "PC steps N", "seconds"),
              pil_plot.loglog_panel(size_series, "lowered program size vs steps", "PC steps N", "kchars")]
    title = f"loop_overhead, {result['config']}, batch {result['batch']}, {result['device']['device_kind']}"
    samplers = result.get("samplers") or {}
    if "vanilla" in samplers:
        title += "; sampler / (NFE x forward call): " + ", ".join(
            f"{v} {samplers[v]['ratio_to_nfe_x_forward_call']:.3g}" for v in ("vanilla", "pds") if v in samplers)
    return pil_plot.grid_of_panels(panels, 2, title)


def table(result: dict) -> str:
    lines = []
    samplers = result.get("samplers") or {}
    if "vanilla" in samplers:
        fwd = result["forward"]
        rows = [[v, s["steps"], s["nfe"], f"{s['total_s']['mean']:.4g}", f"{s['nfe_x_forward_call_s']:.4g}",
                 f"{s['ratio_to_nfe_x_forward_call']:.3f}", f"{s['nfe_x_forward_in_loop_s']:.4g}",
                 f"{s['ratio_to_nfe_x_forward_in_loop']:.3f}"] for v, s in samplers.items()]
        lines.append(f"forward: {common.ms(fwd['call_s']['mean'], 4)} ms per jitted call, "
                     f"{common.ms(fwd['in_loop_s']['mean'], 4)} ms inside a loop")
        lines.append(common.format_table(["sampler", "N", "NFE", "sampler s", "NFE x call s", "ratio",
                                          "NFE x in-loop s", "ratio"], rows))
    rows = []
    for variant in ("vanilla", "pds"):
        for r in result["compile"].get(variant) or []:
            if isinstance(r, dict) and "steps" in r:
                rows.append([variant, r["steps"], f"{r['lower_s']:.3g}", f"{r['compile_s']:.3g}", r["lowered_chars"]])
    if rows:
        lines.append(common.format_table(["sampler", "N", "lower s", "compile s", "lowered chars"], rows))
        lines.append(f"flat in N: {result['compile_flat']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
