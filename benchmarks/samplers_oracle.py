"""Error vs NFE of the samplers on the Gaussian oracle (exact score, exact ODE solution).

For every problem (an SDE, a Gaussian data law, an end time eps) and every method in
`make_methods()`, the script draws one batch from the same key at several budgets and
records

* rmse_vs_exact_ode: RMSE of the final samples against the exact probability-flow ODE
  solution from the *same* x_T (deterministic samplers only; the ODE is deterministic, so
  this is the pure discretisation error);
* spectrum_log_rmse: RMS over frequencies of log(v̂_k / λ_k), v̂ the per-frequency variance
  of the samples in the orthonormal Fourier basis and λ the oracle spectrum; the same number
  for the exact ODE samples (`spectrum_log_rmse_floor`) is the finite-batch noise floor;
* nfe (the evaluations actually used) and the wall time of a second, compiled call.

Results go to JSON (default benchmarks/results/samplers_oracle.json) and a PNG of the
curves drawn with Pillow (`pil_plot`). Adding a sampler = adding one entry to
`make_methods()`: a `Method(build, knobs, deterministic)` whose `build(sde, shape, eps, knob)`
returns a `sampler(rng, score_fn) -> (samples, nfe)` (the shared sampler interface).

    python benchmarks/samplers_oracle.py                      # everything, CPU: a few minutes
    python benchmarks/samplers_oracle.py --methods deis_tab3 ode_heun --nfe 10 20 --overwrite
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Sequence

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from pds_jax import io_utils  # noqa: E402
from pds_jax.oracles import GaussianOracle  # noqa: E402
from pds_jax.precond import Preconditioner  # noqa: E402
from pds_jax.samplers import deis, ode, pc  # noqa: E402
from pds_jax.sde import VESDE, VPSDE  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import pil_plot  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "samplers_oracle.json")


@dataclasses.dataclass(frozen=True)
class Method:
    """A sampler family at adjustable cost.

    build(sde, shape, eps, knob, oracle) -> sampler(rng, score_fn) -> (samples, nfe);
    knobs(nfe_targets) -> the knob values to run (steps, tolerances, ...);
    deterministic: whether comparing with the exact ODE solution from x_T is meaningful
    (False for stochastic samplers such as PC, which are judged by the spectrum only).
    """

    build: Callable
    knobs: Callable[[Sequence[int]], List]
    deterministic: bool = True


def per_step(build: Callable, nfe_per_step: int, deterministic: bool = True) -> Method:
    """A fixed-grid method whose knob is the number of steps: steps = target NFE // nfe_per_step."""
    return Method(build, lambda targets: sorted({t // nfe_per_step for t in targets if t >= nfe_per_step}),
                  deterministic)


def make_methods(grid: str = "rho", rho: float = 7.0) -> Dict[str, Method]:
    """name → Method (a new sampler is one more entry)."""

    def deis_method(method, order, cost):
        return per_step(lambda sde, shape, eps, n, oracle: deis.get_deis_sampler(
            sde, shape, n, method, order, grid=grid, rho=rho, eps=eps), cost)

    def ode_method(method, cost):
        return per_step(lambda sde, shape, eps, n, oracle: ode.get_ode_sampler(
            sde, shape, method, n, grid=grid, rho=rho, eps=eps), cost)

    def pc_method(use_pds):
        # Stochastic: judged by the spectrum only. PDS uses α = 5 normalised filters built
        # from the oracle's own expected statistics (docs/design.md §3). N steps of the
        # model's N₀-step schedule run as the official `--speed_up N₀/N`: eps = eps₀ · N₀/N
        # (`pds.pc_schedule`). A fixed eps (the problem's ODE end time) made every N end at
        # t = 1e-3 on VP, where vanilla is already accurate and PDS only adds error: that
        # reversed the VP ranking of the exact analysis (docs/alpha_law.md, "VP").
        def build(sde, shape, eps, n, oracle):
            precond = Preconditioner.from_arrays(*oracle.filter_statistics()) if use_pds else None
            return pc.get_pc_sampler(sde, shape, snr=0.16, precond=precond, num_steps=n)
        return per_step(build, 2, deterministic=False)

    adaptive = Method(
        lambda sde, shape, eps, tol, oracle: ode.get_ode_sampler(sde, shape, "adaptive", rtol=tol, atol=tol,
                                                                eps=eps),
        lambda targets: [1e-1, 1e-2, 1e-3, 1e-4, 1e-5])
    return {
        "ode_euler": ode_method("euler", 1),
        "ode_heun": ode_method("heun", 2),
        "ode_adaptive_rk45": adaptive,
        "deis_tab1": deis_method("tab", 1, 1),
        "deis_tab2": deis_method("tab", 2, 1),
        "deis_tab3": deis_method("tab", 3, 1),
        "deis_rhoab3": deis_method("rhoab", 3, 1),
        "deis_ipndm": deis_method("ipndm", 3, 1),
        "deis_rhork2_heun": deis_method("rhork", 2, 2),
        "deis_rhork3_kutta": deis_method("rhork", 3, 3),
        "deis_rhork4": deis_method("rhork", 4, 4),
        "pc_vanilla": pc_method(False),
        "pc_pds": pc_method(True),
    }


@dataclasses.dataclass(frozen=True)
class Problem:
    sde: object
    oracle: GaussianOracle
    eps: float
    note: str


def make_problems() -> Dict[str, Problem]:
    natural = GaussianOracle.natural_image((16, 16, 1))
    return {
        "ve_isotropic": Problem(VESDE(sigma_min=0.01, sigma_max=50.0), GaussianOracle.isotropic((16, 16, 1), 0.5),
                                0.0, "N(0, 0.5² I), σ ∈ [0.01, 50] (docs/design.md §5 toy problem)"),
        "ve_natural_image": Problem(VESDE(sigma_min=0.01, sigma_max=50.0), natural, 0.0,
                                    "natural_image((16,16,1)), σ ∈ [0.01, 50]"),
        "vp_natural_image": Problem(VPSDE(), natural, 1e-3, "natural_image((16,16,1)), VP β ∈ [0.1, 20], eps 1e-3"),
    }


def spectrum_log_rmse(oracle: GaussianOracle, samples) -> float:
    ratio = oracle.frequency_variance(samples) / np.asarray(oracle.spectrum, np.float64)
    return float(np.sqrt(np.mean(np.log(ratio) ** 2)))


def run_problem(name: str, problem: Problem, methods: Dict[str, Method], targets: Sequence[int], batch: int,
                seed: int) -> dict:
    sde, oracle, eps = problem.sde, problem.oracle, problem.eps
    shape = (batch,) + oracle.shape
    rng = jax.random.PRNGKey(seed)
    x_T = sde.prior_sampling(jax.random.split(rng)[1], shape)  # the samplers' own key discipline
    exact = np.asarray(oracle.ode_solution(x_T, sde.T, eps, sde), np.float64)
    score_fn = oracle.score_fn(sde)
    out = {"note": problem.note, "sde": repr(sde), "eps": eps, "shape": list(oracle.shape),
           "exact_rms": float(np.sqrt(np.mean(exact**2))),
           "spectrum_log_rmse_floor": spectrum_log_rmse(oracle, exact), "results": {}}
    for method_name, method in methods.items():
        rows = []
        for knob in method.knobs(targets):
            sampler = method.build(sde, shape, eps, knob, oracle)
            x, nfe = sampler(rng, score_fn)
            jax.block_until_ready(x)
            start = time.perf_counter()
            jax.block_until_ready(sampler(rng, score_fn)[0])
            seconds = time.perf_counter() - start
            x = np.asarray(x, np.float64)
            row = {"knob": knob, "nfe": int(nfe), "seconds": seconds,
                   "rmse_vs_exact_ode": float(np.sqrt(np.mean((x - exact) ** 2))) if method.deterministic else None,
                   "spectrum_log_rmse": spectrum_log_rmse(oracle, x) if np.all(np.isfinite(x)) else None}
            rows.append(row)
            print(f"  {name:18s} {method_name:20s} knob={knob!s:8s} nfe={row['nfe']:4d} "
                  f"rmse={row['rmse_vs_exact_ode']!s:.10s} spec={row['spectrum_log_rmse']!s:.6s}", flush=True)
        out["results"][method_name] = rows
    return out


def summary_table(report: dict, targets: Sequence[int]) -> str:
    """Markdown: RMSE vs exact ODE at the largest NFE ≤ each target (actual NFE in brackets)."""
    lines = []
    for name, problem in report["problems"].items():
        lines.append(f"\n### {name}: {problem['note']}\n")
        lines.append("| method | " + " | ".join(f"NFE ≤ {t}" for t in targets) + " |")
        lines.append("|---|" + "---|" * len(targets))
        for method, rows in problem["results"].items():
            cells = []
            for t in targets:
                ok = [r for r in rows if r["nfe"] <= t and r["rmse_vs_exact_ode"] is not None]
                best = max(ok, key=lambda r: r["nfe"]) if ok else None
                cells.append(f"{best['rmse_vs_exact_ode']:.2e} ({best['nfe']})" if best else "–")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: dict) -> bytes:
    panels = []
    for metric, label in (("rmse_vs_exact_ode", "RMSE vs exact ODE solution"),
                          ("spectrum_log_rmse", "spectrum log-RMSE")):
        for name, problem in report["problems"].items():
            series = {m: [(r["nfe"], r[metric]) for r in rows if r[metric] is not None]
                      for m, rows in problem["results"].items()}
            floor = problem["spectrum_log_rmse_floor"] if metric == "spectrum_log_rmse" else None
            panels.append(pil_plot.loglog_panel(series, name, "NFE", label, reference=floor))
    image = pil_plot.grid_of_panels(panels, columns=len(report["problems"]),
                                    title="Samplers on the Gaussian oracle (floor: exact ODE samples, finite batch)")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON path; the PNG goes next to it (.png); "
                        "if either exists, the first free <name>_<k>.json is taken (unless --overwrite)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50, 100, 200])
    parser.add_argument("--methods", nargs="+", default=None, help="subset of method names")
    parser.add_argument("--problems", nargs="+", default=None, help="subset of problem names")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default="rho", choices=["rho", "t", "quad"])
    parser.add_argument("--rho", type=float, default=7.0, help="exponent κ of the EDM ρ grid")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    methods, problems = make_methods(args.grid, args.rho), make_problems()
    for chosen, table, what in ((args.methods, methods, "method"), (args.problems, problems, "problem")):
        unknown = set(chosen or ()) - set(table)
        if unknown:
            parser.error(f"unknown {what}(s) {sorted(unknown)}; choose from {sorted(table)}")
    methods = {k: v for k, v in methods.items() if args.methods is None or k in args.methods}
    problems = {k: v for k, v in problems.items() if args.problems is None or k in args.problems}
    args.out, png_path = common.output_paths(args.out, "samplers_oracle", args.overwrite)

    report = {
        "meta": {"script": "benchmarks/samplers_oracle.py", "argv": sys.argv[1:] if argv is None else list(argv),
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "jax": jax.__version__, "backend": jax.default_backend(),
                 "device": str(jax.devices()[0]), "python": platform.python_version(),
                 "batch": args.batch, "seed": args.seed, "grid": args.grid, "rho": args.rho,
                 "nfe_targets": args.nfe},
        "problems": {name: run_problem(name, p, methods, args.nfe, args.batch, args.seed)
                     for name, p in problems.items()},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    io_utils.atomic_write_json(args.out, report, overwrite=args.overwrite)
    io_utils.atomic_write_bytes(png_path, plot(report), overwrite=args.overwrite)
    print(summary_table(report, args.nfe))
    print(f"\nwrote {args.out} and {png_path}")
    return report


if __name__ == "__main__":
    main()
