"""The picture of `quality_intervals.py --report` (Pillow, as every benchmark picture): each
metric vs N with its 95% intervals and the band of real test images, and the radial
power-spectrum error of every setting at one N."""

from __future__ import annotations

import io

import numpy as np

import pil_plot

TITLES = {"fid": "domain FID (vs 60k train)", "kid": "KID (vs 10k test)",
          "spectrum_db": "power-spectrum error (RMS dB)"}


def _label(setting: str) -> str:
    return "vanilla" if setting == "vanilla" else ("PDS alpha auto" if setting == "auto" else f"PDS alpha={setting}")


def plot(report: dict) -> bytes:
    rows = report["results"]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    floor = report["floor"]
    panels = []
    for metric, title in TITLES.items():
        series = {_label(s): [(r["steps"], r["metrics"][metric]["value"], r["metrics"][metric]["lo"],
                               r["metrics"][metric]["hi"]) for r in rows if r["setting"] == s] for s in settings}
        f = floor["metrics"][metric]
        panels.append(pil_plot.errorbar_panel(series, title, "PC steps N (NFE = 2N)", metric,
                                              band=(f["lo"], f["hi"], f"{floor['num_samples']} test images")))
    steps = sorted({r["steps"] for r in rows})
    pick = 50 if 50 in steps else steps[0]
    series = {_label(r["setting"]): [(i + 1, db, db, db) for i, db in enumerate(r["spectrum_db_per_radius"])]
              for r in rows if r["steps"] == pick}
    series["test images"] = [(i + 1, db, db, db) for i, db in enumerate(floor["spectrum_db_per_radius"])]
    panels.append(pil_plot.errorbar_panel(series, f"10 log10(P / P_train) per radius, N = {pick}",
                                          "radius (cycles per image)", "dB", xlog=False))
    panels.append(alpha_panel(rows))
    model = report["model"]
    title = (f"embedded Fashion-MNIST VE model, PC snr {model['snr']}, num_scales {model['num_scales']}; "
             f"bootstrap 95% intervals ({report['bootstrap']['draws']} draws); sampled on "
             f"{report['sampled_on'].get('device_kind')}")
    buf = io.BytesIO()
    pil_plot.grid_of_panels(panels, 4, title).save(buf, format="PNG")
    return buf.getvalue()


def alpha_panel(rows) -> "pil_plot.Image.Image":
    """FID against α at each N (the PDS settings, auto at its α): where the measured optimum lies."""
    series = {}
    for n in sorted({r["steps"] for r in rows}):
        points = sorted((r["alpha"], r["metrics"]["fid"]["value"], r["metrics"]["fid"]["lo"], r["metrics"]["fid"]["hi"])
                        for r in rows if r["steps"] == n and r["alpha"] is not None)
        if len(points) > 1:
            series[f"N = {n}"] = points
    return pil_plot.errorbar_panel(series, "domain FID vs PDS alpha", "alpha", "fid")


def _cell(m: dict, digits: int) -> str:
    return f"{m['value']:.{digits}f} ± {1.96 * m['se']:.{digits}f}"


def table(report: dict) -> str:
    """Markdown tables: every setting's metrics (value ± 95% half-width), then the paired differences."""
    lines = ["| N | setting | α | n | FID | KID | spectrum error (dB) | Gaussian prediction (dB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(report["results"], key=_order):
        m = r["metrics"]
        alpha = "" if r["alpha"] is None else f"{r['alpha']:.3g}"
        lines.append(f"| {r['steps']} | {_label(r['setting'])} | {alpha} | {r['num_samples']} | {_cell(m['fid'], 1)} "
                     f"| {_cell(m['kid'], 2)} | {_cell(m['spectrum_db'], 2)} | {r.get('surrogate_spectrum_db', float('nan')):.2f} |")
    f = report["floor"]["metrics"]
    lines.append(f"| | {report['floor']['num_samples']} test images (floor) | | | {_cell(f['fid'], 1)} | "
                 f"{_cell(f['kid'], 2)} | {_cell(f['spectrum_db'], 2)} | |")
    lines += ["", "| N | difference (paired) | n | ΔFID | ΔKID | Δspectrum (dB) |", "|---|---|---|---|---|---|"]
    for r in sorted(report["results"], key=_order):
        for other, d in r.get("minus", {}).items():
            lines.append(f"| {r['steps']} | {_label(r['setting'])} − {_label(other)} | {d['num_samples']} | "
                         f"{_cell(d['fid'], 1)} | {_cell(d['kid'], 2)} | {_cell(d['spectrum_db'], 2)} |")
    lines += ["", "| N | auto's regret vs the best of | n | best (FID) | ΔFID | Δspectrum (dB) | auto best in |",
              "|---|---|---|---|---|---|---|"]
    for r in sorted(report["results"], key=lambda r: r["steps"]):
        g = r.get("regret")
        if g:
            compared = ", ".join(_label(s) for s in g["compared"])
            lines.append(f"| {r['steps']} | {compared} | {g['num_samples']} | {_label(g['best']['fid'])} | "
                         f"{_cell(g['fid'], 1)} | {_cell(g['spectrum_db'], 2)} | "
                         f"{100 * g['auto_best_share']['fid']:.0f}% of resamples |")
    lines += ["", f"| N | setting | FID of each block of {_block_size(report)} samples | mean ± sd |", "|---|---|---|---|"]
    for r in sorted(report["results"], key=_order):
        if "blocks" in r and len(r["blocks"]["fid"]) > 1:
            f = r["blocks"]["fid"]
            lines.append(f"| {r['steps']} | {_label(r['setting'])} | {', '.join(f'{v:.1f}' for v in f)} | "
                         f"{np.mean(f):.1f} ± {np.std(f, ddof=1):.1f} |")
    f = report["floor"].get("blocks", {}).get("fid", [])
    if len(f) > 1:
        lines.append(f"| | test images (floor) | {', '.join(f'{v:.1f}' for v in f)} | {np.mean(f):.1f} ± {np.std(f, ddof=1):.1f} |")
    return "\n".join(lines)


def _order(row: dict):
    """Rows of one N by α (vanilla last, as α = ∞)."""
    return row["steps"], float("inf") if row["alpha"] is None else row["alpha"]


def _block_size(report: dict) -> int:
    return next((r["blocks"]["size"] for r in report["results"] if "blocks" in r), report["model"]["batch_size"])
