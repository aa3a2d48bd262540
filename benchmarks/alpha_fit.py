"""Fitting the α(N) rule of `alpha='auto'` to the α sweeps of a quality study.

Used by `benchmarks/quality_vs_steps.py --fit-only RESULTS.json [--install]`; the library
only reads the result (`pds_jax.alpha_rule.AlphaRule`, `load_rule`).

For each step count the FID-vs-α curve of the sweep gives α* (the grid minimum, refined
by a parabola through it and its two neighbours in u = log(α − 1)); optima at the edge of
the α grid are censored (the true optimum lies beyond the grid) and kept out of the
power-law fit. The quality of a rule is its *regret*: the FID at the rule's α (read off
the measured curve, piecewise linear in u) minus the best FID of the sweep, per step
count; `α = 5` gets the same number for comparison. form='auto' takes the power law when
at least 3 uncensored optima exist and, at every step count, its regret is at most
`REGRET_TOLERANCE` × the best FID or half the regret of α = 5 (it keeps at least half of
what tuning α gains there); else the table.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pds_jax.alpha_rule import DEFAULT_ALPHA, FORMS, N_REF, RULE_PATH, AlphaRule
from pds_jax.io_utils import atomic_write_json

REGRET_TOLERANCE = 0.05  # relative to the best FID at that step count


def _u(alpha) -> np.ndarray:
    return np.log(np.asarray(alpha, np.float64) - 1.0)


def _sorted_curve(alphas: Sequence[float], fids: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    pairs = sorted((float(a), float(f)) for a, f in zip(alphas, fids) if math.isfinite(f))
    if not pairs:
        raise ValueError("an α sweep needs at least one finite FID")
    a, f = map(np.asarray, zip(*pairs))
    if np.any(a <= 1):
        raise ValueError(f"α values of a sweep must be > 1, got {a.tolist()}")
    return a, f


def fid_at(alpha: float, alphas: Sequence[float], fids: Sequence[float]) -> float:
    """FID of a sweep at any α: piecewise linear in log(α − 1), constant beyond the grid."""
    a, f = _sorted_curve(alphas, fids)
    return float(np.interp(_u(alpha), _u(a), f))


def best_alpha(alphas: Sequence[float], fids: Sequence[float]) -> dict:
    """α* of one sweep: the grid minimum refined by a parabola in u = log(α − 1).

    Returns {'alpha', 'alpha_grid', 'fid', 'edge'}: edge is 'low'/'high' when the minimum
    sits at the smallest/largest α of the grid (censored), else None.
    """
    a, f = _sorted_curve(alphas, fids)
    k = int(np.argmin(f))
    out = {"alpha": float(a[k]), "alpha_grid": float(a[k]), "fid": float(f[k]), "edge": None}
    if len(a) > 1 and k == 0:
        out["edge"] = "low"
    elif len(a) > 1 and k == len(a) - 1:
        out["edge"] = "high"
    elif len(a) >= 3:
        u = _u(a[k - 1:k + 2])
        c2, c1, _ = np.polyfit(u, f[k - 1:k + 2], 2)
        if c2 > 0:
            vertex = float(np.clip(-c1 / (2 * c2), u[0], u[2]))
            out["alpha"] = 1.0 + math.exp(vertex)
    return out


def _regrets(rule_alpha, sweeps, optima) -> Dict[str, float]:
    return {str(n): fid_at(rule_alpha(n), *sweeps[n]) - optima[n]["fid"] for n in sweeps}


def fit_rule(sweeps: Mapping[int, Tuple[Sequence[float], Sequence[float]]], form: str = "auto",
             provenance: Optional[dict] = None, n_ref: float = N_REF) -> AlphaRule:
    """Fit α*(N) to α sweeps {num_steps: (alphas, fids)} (see the module docstring)."""
    if form not in FORMS + ("auto",):
        raise ValueError(f"form must be one of {FORMS + ('auto',)}, got {form!r}")
    sweeps = {int(n): (list(a), list(f)) for n, (a, f) in sorted(sweeps.items())}
    if not sweeps:
        raise ValueError("no α sweeps to fit")
    optima = {n: best_alpha(*sweeps[n]) for n in sweeps}
    all_alphas = [a for n in sweeps for a in sweeps[n][0]]
    alpha_range = (float(min(all_alphas)), float(max(all_alphas)))
    steps = tuple(float(n) for n in sweeps)
    knots = tuple(optima[n]["alpha"] for n in sweeps)
    table = AlphaRule("table", steps, knots, alpha_range, n_ref=n_ref)

    free = [n for n in sweeps if optima[n]["edge"] is None]
    power = None
    power_stats = {"points": len(free)}
    if len(free) >= 2:
        x = np.log(np.asarray(free, np.float64) / n_ref)
        y = _u([optima[n]["alpha"] for n in free])
        b, log_a = np.polyfit(x, y, 1)
        resid = y - (log_a + b * x)
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        power_stats.update({"rmse_log_alpha_minus_1": float(np.sqrt(np.mean(resid**2))),
                            "r2_log_alpha_minus_1": (1.0 - float(np.sum(resid**2)) / ss_tot) if ss_tot > 0 else None})
        power = AlphaRule("power", steps, knots, alpha_range, a=float(math.exp(log_a)), b=float(b), n_ref=n_ref)

    fixed5 = lambda n: DEFAULT_ALPHA  # noqa: E731
    regret = {"table": _regrets(table, sweeps, optima), "alpha_5": _regrets(fixed5, sweeps, optima)}
    if power is not None:
        regret["power"] = _regrets(power, sweeps, optima)
    power_ok = (power is not None and len(free) >= 3 and all(
        regret["power"][str(n)] <= max(REGRET_TOLERANCE * optima[n]["fid"], 0.5 * regret["alpha_5"][str(n)])
        for n in sweeps))
    if form == "auto":
        chosen = "power" if power_ok else "table"
    elif form == "power" and power is None:
        edges = ", ".join(f"N={n}: {optima[n]['edge']} edge" for n in sweeps if optima[n]["edge"])
        raise ValueError(f"a power law needs optima inside the α grid at >= 2 step counts; got "
                         f"{len(free)} ({edges})")
    else:
        chosen = form
    quality = {
        "chosen_form": chosen,
        "selection": (f"form='{form}'" if form != "auto" else
                      f"power if >= 3 optima inside the α grid and at every step count its regret <= "
                      f"max({REGRET_TOLERANCE:g} × best FID, half the regret of α = 5), else table"),
        "optima": {str(n): optima[n] for n in sweeps},
        "fid_regret": regret,
        "worst_regret": {k: max(v.values()) for k, v in regret.items()},
        "power_fit": power_stats if power is None else dict(power_stats, a=power.a, b=power.b),
    }
    base = power if chosen == "power" else table
    return dataclasses.replace(base, quality=quality, provenance=dict(provenance or {}))


def optima_lines(rule: AlphaRule) -> List[str]:
    """One line per fitted step count: the optimum, whether it is censored, and the regrets."""
    q = rule.quality
    return [f"  N={n:>5s}: best alpha {o['alpha']:7.3f} (grid {o['alpha_grid']:g}{', ' + o['edge'] + ' edge' if o['edge'] else ''})"
            f"  FID {o['fid']:.4f}  regret: rule {q['fid_regret'][rule.form][n]:+.4f}, alpha=5 "
            f"{q['fid_regret']['alpha_5'][n]:+.4f}" for n, o in q["optima"].items()]


def save_rule(rule: AlphaRule, path: Optional[str] = None, overwrite: bool = False) -> str:
    return atomic_write_json(path or RULE_PATH, rule.to_dict(), overwrite=overwrite)
