"""Tables and Pillow plots of benchmarks/quality_vs_steps.py results (see that script).

Everything here reads the raw results JSON (as a dict), so plots can be redrawn from a
finished or interrupted run with `quality_vs_steps.py --fit-only RESULTS.json`.
"""

from __future__ import annotations

import io
import math
import os
import sys
from typing import Dict, Optional

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pil_plot  # noqa: E402

LABELS = {"pc_vanilla": "PC vanilla", "pc_pds_5": "PDS alpha=5", "pc_pds_best": "PDS best alpha (sweep)",
          "ode_euler": "ODE Euler", "ode_heun": "ODE Heun", "ode_rk45": "ODE RK45 (adaptive)",
          "deis_tab3": "DEIS tAB3", "deis_ipndm": "DEIS iPNDM"}


def sweeps_from(report: dict) -> Dict[int, tuple]:
    """{N: (alphas, fids)} of the PDS rows (at least 2 α values per N)."""
    by_steps: Dict[int, Dict[float, float]] = {}
    for row in report["results"]:
        if row["method"] == "pc_pds" and row.get("fid") is not None and math.isfinite(row["fid"]):
            by_steps.setdefault(int(row["steps"]), {})[float(row["alpha"])] = float(row["fid"])
    return {n: (sorted(v), [v[a] for a in sorted(v)]) for n, v in sorted(by_steps.items()) if len(v) >= 2}


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def method_series(report: dict, metric: str) -> Dict[str, list]:
    series: Dict[str, list] = {}
    best: Dict[int, dict] = {}
    for row in report["results"]:
        if row.get(metric) is None:
            continue
        point = (row["nfe"], row[metric])
        m = row["method"]
        if m == "pc_pds":
            if row["alpha"] == 5:
                series.setdefault(LABELS["pc_pds_5"], []).append(point)
            if row["steps"] not in best or row["fid"] < best[row["steps"]]["fid"]:
                best[row["steps"]] = row
        else:
            series.setdefault(LABELS.get(m, m), []).append(point)
    if best:
        series[LABELS["pc_pds_best"]] = [(r["nfe"], r[metric]) for r in best.values() if r.get(metric) is not None]
    return series


def summary_table(report: dict) -> str:
    """Markdown: FID (KID × 1e3) of every method at every NFE it ran."""
    lines = ["| method | NFE | FID | KID×1e3 |", "|---|---|---|---|"]
    for row in report["results"]:
        name = row["method"] + (f" alpha={row['alpha']:g}" if row.get("alpha") else "") + \
            (f" tol={row['tol']:g}" if row.get("tol") else "")
        kid = f"{1e3 * row['kid']:.3f}" if row.get("kid") is not None else "-"
        lines.append(f"| {name} | {row['nfe']:g} | {row['fid']:.4f} | {kid} |")
    floor = report["reference"].get("floor") or {}
    if floor:
        lines.append(f"| real test images (floor, n={floor['n']}) | - | {floor['fid']:.4f} | "
                     f"{1e3 * floor['kid']:.3f} |")
    return "\n".join(lines)


def nfe_table(report: dict, metric: str = "fid") -> str:
    """Markdown: one row per NFE budget, one column per method (`method_series`). A method
    whose NFE sits just under a budget (Heun's 2 per step + 1 denoising) joins that row with
    its NFE in brackets; the best-α column names its α."""
    series = method_series(report, metric)
    budgets = sorted({int(round(row["nfe"])) for row in report["results"]
                      if row["method"].startswith(("pc", "deis"))})
    best_alpha: Dict[float, tuple] = {}  # NFE -> (FID, α) of the best PDS setting
    for row in report["results"]:
        if row["method"] == "pc_pds" and row.get("fid") is not None:
            best_alpha[row["nfe"]] = min(best_alpha.get(row["nfe"], (math.inf, None)), (row["fid"], row["alpha"]))
    cells: Dict[int, Dict[str, str]] = {}
    for name, points in series.items():
        for nfe, value in points:
            home = next((b for b in budgets if 0.9 * b <= nfe <= b), int(round(nfe)))
            note = "" if home == nfe else f" ({nfe:g})"
            if name == LABELS["pc_pds_best"]:
                note = f" (alpha={best_alpha[nfe][1]:g})"
            cells.setdefault(home, {})[name] = f"{value:.1f}{note}"
    names = [n for n in LABELS.values() if n in series]
    lines = ["| NFE | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for nfe in sorted(cells):
        lines.append(f"| {nfe} | " + " | ".join(cells[nfe].get(n, "") for n in names) + " |")
    return "\n".join(lines)


def plot_quality(report: dict) -> bytes:
    floor = report["reference"].get("floor") or {}
    panels = [pil_plot.loglog_panel(method_series(report, "fid"), "FID vs NFE", "NFE (network evaluations)",
                                    "FID (fashion_mnist features)", reference=floor.get("fid"))]
    if any("kid" in r for r in report["results"]):
        panels.append(pil_plot.loglog_panel(method_series(report, "kid"), "KID vs NFE (values <= 0 dropped)",
                                            "NFE", "KID", reference=floor.get("kid")))
    n = report["meta"]["settings"]["num_samples"]
    return _png(pil_plot.grid_of_panels(panels, columns=len(panels), title=(
        f"Embedded Fashion-MNIST NCSN++: {n} samples per point, {report['meta']['device'].get('device_kind')} "
        "(floor: real test images)")))


def plot_alpha(report: dict, rule) -> bytes:
    """FID vs α per N, and the best α vs N with `rule` (a `pds_jax.alpha_rule.AlphaRule` or None)."""
    sweeps = sweeps_from(report)
    curves = {f"N={n}": list(zip(a, f)) for n, (a, f) in sweeps.items()}
    panels = [pil_plot.loglog_panel(curves, "PDS: FID vs alpha at N steps", "alpha", "FID")]
    best = {}
    if rule is not None:
        optima = rule.quality.get("optima", {})
        best["best alpha (sweep)"] = [(float(n), o["alpha"]) for n, o in optima.items() if o["edge"] is None]
        best["best alpha at grid edge"] = [(float(n), o["alpha"]) for n, o in optima.items() if o["edge"] is not None]
        lo, hi = min(rule.knots_steps), max(rule.knots_steps)
        grid = np.geomspace(max(lo / 2, 1), hi * 2, 12)
        best[f"rule ({rule.form})"] = [(float(n), rule(n)) for n in grid]
        best["alpha = 5 (paper)"] = [(float(n), 5.0) for n in (grid[0], grid[-1])]
    panels.append(pil_plot.loglog_panel(best, "best alpha vs PC steps N", "N (PC steps)", "alpha"))
    return _png(pil_plot.grid_of_panels(panels, columns=2, title="PDS filter parameter alpha vs number of PC steps"))


def plot_samples(report: dict) -> Optional[bytes]:
    thumbs = report.get("_thumbs") or {}
    if not thumbs:
        return None
    rows = []
    for label, images in thumbs.items():
        if not (label.endswith(" alpha=5") or label.startswith(("pc_vanilla", "deis_tab3", "ode_heun"))):
            continue
        strip = np.concatenate([np.pad(im, ((1, 1), (1, 1), (0, 0)), constant_values=255) for im in images], axis=1)
        caption = Image.new("L", (200, strip.shape[0]), 255)
        ImageDraw.Draw(caption).text((4, strip.shape[0] // 2 - 6), label, fill=0)
        rows.append(np.concatenate([np.asarray(caption)[..., None], strip[..., :1]], axis=1))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return _png(Image.fromarray(np.concatenate(rows)[..., 0]))
