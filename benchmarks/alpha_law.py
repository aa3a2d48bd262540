"""KL(α, N) of the PDS PC sampler on Gaussian image models, computed exactly.

For data N(μ, Σ) with Σ diagonal in the Fourier basis (`GaussianOracle.natural_image`:
λ ∝ 1/(1 + |f|)^γ, pixel std 0.25, mean 0.5, one channel) and normalised PDS filters from
the oracle's own statistics (`GaussianOracle.filter_statistics`: exact R and A), the PC
sampler (reverse diffusion + Langevin, snr 0.16, official PDS semantics) is a linear
Gaussian recursion per coefficient; `pds_jax.analysis` evaluates its output law and the
KL per dimension to the data without sampling. This script maps

* VE: KL over α ∈ a log grid (1.05 … 1000) plus vanilla, for γ ∈ {1, 2, 3}, sizes 16², 64²,
  256², the σ_max of score_sde's CIFAR-10 (50, N₀ = 1000), LSUN (378, N₀ = 2000) and FFHQ
  (1348, N₀ = 2000) configs (σ_min 0.01), N = N₀ / k PC steps with eps = 1e-5 · k (the
  official `--speed_up k`); per (problem, N) α*, the stability boundary (the smallest α above
  which no α of the grid blows up: KL > max(10 × vanilla's, 1 nat/dim) or not finite), both refined on a
  finer grid, and the analytic boundaries of docs/alpha_law.md;
* VP (`--part vp`): PDS α = 5 vs vanilla at N = 50, 100 (β ∈ [0.1, 20], data scaled to
  [−1, 1], filters from the [0, 1] statistics, eps = 1e-3 · k), with `precondition='drift'`
  (official) and 'score', and the setting of benchmarks/samplers_oracle.py; with
  `--vp-samples B` also the real sampler's KL from B samples.

    nice -n 10 python benchmarks/alpha_law.py                 # VE map, ~10 min on 1 CPU core
    python benchmarks/alpha_law.py --part vp --vp-samples 4000
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (puts the repository root on sys.path)
import pil_plot  # noqa: E402

from pds_jax import analysis  # noqa: E402
from pds_jax.oracles import GaussianOracle  # noqa: E402
from pds_jax.pds import pc_schedule  # noqa: E402
from pds_jax.precond import Preconditioner  # noqa: E402
from pds_jax.samplers.pc import get_pc_sampler  # noqa: E402
from pds_jax.sde import VESDE, VPSDE  # noqa: E402

CONFIGS = {"cifar10": (50.0, 1000), "lsun": (378.0, 2000), "ffhq": (1348.0, 2000)}
SIGMA_MIN, SNR = 0.01, 0.16
BLOWUP, BLOWUP_ABS = 10.0, 1.0  # blow-up: KL > max(10 × vanilla's, 1 nat per dimension) or not finite
STEPS = (10, 20, 50, 100, 200, 500, 1000)
ALPHAS = tuple(float(a) for a in np.geomspace(1.05, 1000.0, 25))


def problem(size: int, gamma: float):
    oracle = GaussianOracle.natural_image((size, size, 1), gamma=gamma)
    R, A = oracle.filter_statistics()
    return np.asarray(oracle.spectrum, np.float64), np.asarray(oracle.mean, np.float64), R, A


def analytic_boundaries(R, sigma_max: float, n: int) -> dict:
    """α where the largest gain D_max² reaches the per-step bounds (docs/alpha_law.md):
    'absolute' P (1 − ρ²) = 2 and 'relative' P (1 − ρ) = 1, ρ = (σ_min/σ_max)^(1/(N−1))."""
    r = float(R.min() / R.max())
    rho = (SIGMA_MIN / sigma_max) ** (1.0 / max(n - 1, 1))
    out = {}
    for name, p_max in (("absolute", 2.0 / (1.0 - rho**2)), ("relative", 1.0 / (1.0 - rho))):
        g = math.sqrt(p_max)  # D_max = α / (r + α − 1) = g  ⇔  α = g (1 − r) / (g − 1)
        out[name] = max(g * (1.0 - r) / (g - 1.0), 1.0)
    return out


def _boundary_bracket(alphas, kl, vanilla):
    bad = ~np.isfinite(kl) | (kl > max(BLOWUP * vanilla, BLOWUP_ABS))
    if not bad.any():
        return None
    last = int(np.max(np.nonzero(bad)[0]))
    return (alphas[last], alphas[last + 1]) if last + 1 < len(alphas) else (alphas[last], math.inf)


def sweep(lam, mu, R, A, sde, eps):
    """KL on the coarse grid, then on a fine grid around α* and the stability boundary."""
    run = lambda alphas: analysis.pc_kl_batch(  # noqa: E731
        lam, mu, sde, sde.N, eps, SNR, analysis.alpha_gains(R, A, list(alphas) + [math.inf]))
    alphas = np.asarray(ALPHAS)
    kl_all = run(alphas)
    vanilla, kl = float(kl_all[-1]), kl_all[:-1]
    fine = []
    k = int(np.argmin(kl))
    lo, hi = alphas[max(k - 1, 0)], alphas[min(k + 1, len(alphas) - 1)]
    fine += list(1.0 + np.geomspace(lo - 1.0, hi - 1.0, 10))
    bracket = _boundary_bracket(alphas, kl, vanilla)
    if bracket is not None and math.isfinite(bracket[1]):
        fine += list(1.0 + np.geomspace(bracket[0] - 1.0, bracket[1] - 1.0, 10))
    fine.append(5.0)
    kl_fine = run(fine)[:-1]
    kl5 = float(kl_fine[-1])
    order = np.argsort(np.concatenate([alphas, fine]))
    a_all = np.concatenate([alphas, fine])[order]
    k_all = np.concatenate([kl, kl_fine])[order]
    best = int(np.argmin(k_all))
    b = _boundary_bracket(a_all, k_all, vanilla)
    return {"alphas": alphas.tolist(), "kl": kl.tolist(), "vanilla": vanilla,
            "fine_alphas": [float(a) for a in fine], "fine_kl": kl_fine.tolist(),
            "alpha_star": float(a_all[best]), "kl_star": float(k_all[best]),
            "kl_alpha5": kl5,
            "boundary": None if b is None else b[1], "boundary_last_bad": None if b is None else b[0]}


def ve_map(args, writer, result):
    for gamma in args.gammas:
        for size in args.sizes:
            lam, mu, R, A = problem(size, gamma)
            for cfg in args.configs:
                sigma_max, n0 = CONFIGS[cfg]
                key = f"g{gamma:g}_s{size}_{cfg}"
                rows, start = {}, time.perf_counter()
                for n in args.steps:
                    k = n0 / n
                    sde, eps = pc_schedule(VESDE(SIGMA_MIN, sigma_max, n0), k)
                    row = sweep(lam, mu, R, A, sde, eps)
                    row.update({"speed_up": k, "eps": eps, "analytic": analytic_boundaries(R, sigma_max, n)})
                    rows[str(n)] = row
                    print(f"{key:22s} N={n:5d} vanilla={row['vanilla']:.3e} α*={row['alpha_star']:.3g} "
                          f"KL*={row['kl_star']:.3e} KL(5)={row['kl_alpha5']:.3e} boundary={row['boundary']} "
                          f"analytic={row['analytic']}", flush=True)
                result["ve"][key] = {"gamma": gamma, "size": size, "config": cfg, "sigma_max": sigma_max,
                                     "N0": n0, "r_min": float(R.min() / R.max()), "rows": rows,
                                     "seconds": time.perf_counter() - start}
                writer.write(result, ve_plot(result))


def ve_plot(result):
    panels = []
    for key, prob in result["ve"].items():
        if prob["gamma"] != 2:
            continue
        # blown-up values (up to 1e60) would squash the axis: draw KL <= 10 only
        series = {f"N={n}": [(a, k) for a, k in zip(r["alphas"], r["kl"]) if math.isfinite(k) and k <= 10]
                  for n, r in prob["rows"].items()}
        panels.append(pil_plot.loglog_panel(series, f"{key}: KL vs alpha (KL <= 10 shown)", "alpha",
                                            "KL per dim"))
    law = {}
    for key, prob in result["ve"].items():
        law[f"a*-1 {key}"] = [(int(n), r["alpha_star"] - 1) for n, r in prob["rows"].items()]
    panels.append(pil_plot.loglog_panel(law, "alpha*(N) - 1, all problems", "N", "alpha* - 1", legend=False))
    bnd = {f"{key}": [(int(n), r["boundary"] - 1) for n, r in prob["rows"].items() if r["boundary"]]
           for key, prob in result["ve"].items()}
    panels.append(pil_plot.loglog_panel(bnd, "stability boundary alpha_b(N) - 1", "N", "alpha_b - 1", legend=False))
    return pil_plot.grid_of_panels(panels, columns=3, title="PDS PC sampler on Gaussian data, exact KL")


def vp_part(args, result):
    """PDS vs vanilla on VP (see the module docstring), analysis and optionally the sampler."""
    base = GaussianOracle.natural_image((16, 16, 1), gamma=2.0)
    R, A = base.filter_statistics()  # [0, 1]-space statistics, as the official code uses
    lam01, mu01 = np.asarray(base.spectrum, np.float64), np.asarray(base.mean, np.float64)
    # The official setting, the setting of benchmarks/samplers_oracle.py (its VP problem: the
    # [0, 1] oracle itself, eps = 1e-3 at every N), and the two mixed ones that tell the causes apart.
    settings = {"official: [-1,1] data, eps=1e-3·k": (4.0 * lam01, 2.0 * mu01 - 1.0, True),
                "samplers_oracle.py: [0,1] data, eps=1e-3": (lam01, mu01, False),
                "[-1,1] data, eps=1e-3": (4.0 * lam01, 2.0 * mu01 - 1.0, False),
                "[0,1] data, eps=1e-3·k": (lam01, mu01, True)}
    out = {}
    for name, (lam, mu, speed_eps) in settings.items():
        for n in (20, 50, 100, 200):
            k = 1000 / n
            sde, eps = pc_schedule(VPSDE(0.1, 20.0, 1000), k)
            eps = eps if speed_eps else 1e-3
            gains = analysis.alpha_gains(R, A, [5.0, math.inf])
            row = {"eps": eps}
            for prec in analysis.PRECONDITION:
                moments = analysis.pc_moments_batch(lam, mu, sde, n, eps, SNR, gains, precondition=prec)
                kl = analysis.kl_per_dim(moments, lam, mu)
                row[f"kl_pds5_{prec}"], row["kl_vanilla"] = float(kl[0]), float(kl[1])
                # samplers_oracle.py's metric: RMS of log(E|x̂ − μ̂|² / λ)
                mse = moments.var + np.abs(moments.mean - analysis._unitary_mean(mu)) ** 2
                logr = np.sqrt(np.mean(np.log(mse / lam) ** 2, axis=(1, 2, 3)))
                row[f"spec_log_rmse_pds5_{prec}"], row["spec_log_rmse_vanilla"] = float(logr[0]), float(logr[1])
            if args.vp_samples and n in (50, 100):
                row.update(vp_sampled(lam, mu, R, A, n, eps, args.vp_samples))
            out[f"{name} N={n}"] = row
            print(f"VP {name:40s} N={n:4d} " + " ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)
    result["vp"] = out


def vp_sampled(lam, mu, R, A, n, eps, batch):
    oracle = GaussianOracle(np.float32(mu), np.float32(lam))
    sde = VPSDE(0.1, 20.0, n)
    row = {}
    for name, precond in (("pds5", Preconditioner.from_arrays(R, A, alpha=5.0)), ("vanilla", None)):
        sampler = get_pc_sampler(sde, (batch,) + lam.shape, snr=SNR, eps=eps, precond=precond)
        x, _ = sampler(jax.random.PRNGKey(0), oracle.score_fn(sde))
        row[f"sampled_kl_{name}"] = float(analysis.kl_per_dim(analysis.sample_moments(np.asarray(x)), lam, mu))
    return row


def report(path: str) -> str:
    """Markdown tables of a VE map: α*(N), KL, and numeric vs analytic stability boundaries."""
    with open(path) as f:
        ve = json.load(f)["ve"]
    steps = sorted({int(n) for p in ve.values() for n in p["rows"]})
    fmt = lambda x: "–" if x is None else f"{x:.3g}"  # noqa: E731
    head = "| problem | " + " | ".join(f"N={n}" for n in steps) + " |\n|---|" + "---|" * len(steps)
    lines = ["α* (KL at α* / α=5 / vanilla):", head]
    for key, p in ve.items():
        cells = [f"{fmt(r['alpha_star'])} ({r['kl_star']:.1e}/{r['kl_alpha5']:.1e}/{r['vanilla']:.1e})"
                 for r in (p["rows"].get(str(n)) for n in steps)]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "stability boundary α_b: computed [analytic absolute, relative]:", head]
    ratios = []
    for key, p in ve.items():
        cells = []
        for n in steps:
            r = p["rows"][str(n)]
            a = r["analytic"]
            cells.append(f"{fmt(r['boundary'])} [{a['absolute']:.3g}, {a['relative']:.3g}]")
            if r["boundary"] is not None and a["relative"] > 1.05:
                ratios.append((r["boundary"] - 1.0) / (a["relative"] - 1.0))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if ratios:
        q = np.percentile(ratios, [10, 50, 90])
        lines.append(f"\n(α_b − 1) / (α_relative − 1) over the {len(ratios)} cases with α_relative > 1.05: "
                     f"10/50/90 % = {q[0]:.2f}/{q[1]:.2f}/{q[2]:.2f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["ve", "vp"], default="ve")
    parser.add_argument("--out", default="")
    parser.add_argument("--gammas", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--vp-samples", type=int, default=0)
    parser.add_argument("--replot", default="", help="redraw the PNG of an existing VE result JSON")
    parser.add_argument("--report", default="", help="print markdown tables of an existing VE result JSON")
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.report))
        return
    if args.replot:  # redraw the PNG of an existing VE result (a free name next to it)
        with open(args.replot) as f:
            old = json.load(f)
        png = common.output_paths(os.path.splitext(args.replot)[0] + "_plot.json", "")[1]
        ve_plot(old).save(png)
        print(f"wrote {png}")
        return
    json_path, png_path = common.output_paths(args.out, f"alpha_law_{args.part}")
    writer = common.ResultWriter(json_path, png_path)
    result = {"benchmark": "alpha_law", "part": args.part, "argv": sys.argv[1:] if argv is None else list(argv),
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "snr": SNR,
              "blowup": f"KL > max({BLOWUP:g} x vanilla, {BLOWUP_ABS:g}) or not finite",
              "settings": vars(args), "ve": {}, "complete": False}
    start = time.perf_counter()
    if args.part == "ve":
        ve_map(args, writer, result)
    else:
        vp_part(args, result)
    result.update({"complete": True, "seconds": time.perf_counter() - start})
    writer.write(result, ve_plot(result) if result["ve"] else None)
    print(f"wrote {json_path}" + (f" and {png_path}" if result["ve"] else ""))


if __name__ == "__main__":
    main()
