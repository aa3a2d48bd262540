"""What progress within a batch costs: the PC sampler in one program vs in jitted chunks.

The CLI reports progress between chunks of PC steps (`Sampler.call_with_progress`: one
program for every chunk, the next chunk dispatched before the host waits for the last).
This measures both ways side by side on the same model, batch and key, alternating the
two in every round so that load changes of a shared machine hit both alike, and reports
the ratio chunked / one program (median over rounds, with the range of the per-round
ratios). The samples are compared too (they must be bitwise equal).

    python benchmarks/progress_overhead.py                      # the embedded default job (CPU: ~3 min)
    python benchmarks/progress_overhead.py --steps 500 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402
import pil_plot  # noqa: E402
from pds_jax import config_loader, pds  # noqa: E402
from pds_jax.data import get_data_inverse_scaler  # noqa: E402
from pds_jax.resources import resolve  # noqa: E402
from pds_jax.samplers.pc import pc_sampler  # noqa: E402
from pds_jax.score_model import load_score_model  # noqa: E402


def _timed(fn):
    start = time.perf_counter()
    x = np.asarray(fn())
    return time.perf_counter() - start, x


def measure(sampler, score_fn, repeats: int, chunk_steps=None, log=print) -> dict:
    key = jax.random.PRNGKey(0)
    whole = lambda: sampler(key, score_fn)[0]  # noqa: E731
    reports = []
    chunked = lambda: sampler.call_with_progress(key, score_fn, reports.append, chunk_steps)[0]  # noqa: E731
    compile_whole, x_whole = _timed(whole)  # first calls compile
    compile_chunked, x_chunked = _timed(chunked)
    rounds = []
    for r in range(repeats):
        t_whole, _ = _timed(whole)
        reports.clear()
        t_chunked, _ = _timed(chunked)
        rounds.append({"one_program_s": t_whole, "chunked_s": t_chunked, "ratio": t_chunked / t_whole})
        log(f"round {r + 1}/{repeats}: one program {t_whole:.2f} s, chunked {t_chunked:.2f} s "
            f"({len(reports)} progress reports), ratio {t_chunked / t_whole:.4f}")
    ratios = np.array([r["ratio"] for r in rounds])
    return {"rounds": rounds, "ratio_median": float(np.median(ratios)), "ratio_min": float(ratios.min()),
            "ratio_max": float(ratios.max()), "progress_reports_per_call": len(reports),
            "first_call_s": {"one_program": compile_whole, "chunked": compile_chunked},
            "samples_bitwise_equal": bool(np.array_equal(x_whole, x_chunked))}


def plot(result: dict):
    rounds = result["rounds"]
    series = {name: [(k + 1, r[key], r[key], r[key]) for k, r in enumerate(rounds)]
              for name, key in (("one program", "one_program_s"), ("chunked (progress)", "chunked_s"))}
    s = result["settings"]
    return pil_plot.errorbar_panel(series, f"PC, {s['steps']} steps, batch {s['batch_size']}: "
                                           f"ratio {result['ratio_median']:.4f}", "round", "seconds", xlog=False)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="fashion_mnist_pds", help="a config file or shipped name")
    parser.add_argument("--steps", type=int, default=50, help="PC steps N (the default job runs 50)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-steps", type=int, default=None, help="default: the CLI's (N/20)")
    parser.add_argument("--out", default="")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    json_path, png_path = common.output_paths(args.out, "progress_overhead", args.overwrite)
    config = config_loader.load_config(args.config)
    sde, _, _, score_fn, checkpoint = load_score_model(config, resolve(config.sampling.checkpoint))
    setup = pds.from_config(config, sde, num_steps=args.steps)
    shape = (args.batch_size, config.data.image_size, config.data.image_size, config.data.num_channels)
    s = config.sampling
    sampler = pc_sampler(setup, shape, s.predictor, s.corrector, s.snr, s.n_steps_each, s.probability_flow,
                         s.noise_removal, get_data_inverse_scaler(config), check_finite=True)
    settings = {"config": args.config, "checkpoint": checkpoint, "steps": args.steps, "batch_size": args.batch_size,
                "chunk_steps": args.chunk_steps or -(-args.steps // 20), "alpha": setup.alpha, "repeats": args.repeats}
    result = dict(common.header("progress_overhead", sys.argv[1:] if argv is None else argv, settings))
    result.update(measure(sampler, score_fn, args.repeats, args.chunk_steps))
    result["complete"] = True
    common.ResultWriter(json_path, png_path).write(result, plot(result))
    print(f"chunked / one program: median {result['ratio_median']:.4f} (rounds {result['ratio_min']:.4f}"
          f"-{result['ratio_max']:.4f}); samples bitwise equal: {result['samples_bitwise_equal']}; "
          f"wrote {json_path} and {png_path}")
    return result


if __name__ == "__main__":
    main()
