"""The PDS filter parameter α as a function of the number of PC steps.

The normalised filters (DESIGN §3) are D = α / (R / max R + α − 1) and
s = α / (A / max A + α − 1): α → 1 is the strongest preconditioning, α → ∞ the vanilla
sampler (D, s → 1). The official code uses one α = 5 for every step count. The journal
version of PDS (Ma, Zhu, Feng, Zhang, "Preconditioned Score-based Generative Models",
arXiv 2302.06504, IJCV 2025) states that it "theoretically reveal[s] a relation between
the parameter of PDS and the sampling iterations, easing the parameter estimation under
varying sampling iterations"; we measure that relation instead of assuming a form
(`benchmarks/quality_vs_steps.py` sweeps α at several step counts on the embedded
Fashion-MNIST model) and ship the fit as `pds_jax/alpha_rule.json`.

`config.sampling.pds.alpha` is a number > 1 or the string 'auto'. 'auto' is resolved by
`preconditioner_from_config` with the number of PC steps actually run,
N = int(model.num_scales / speed_up), through the installed rule:

* form 'power':  α(N) = 1 + a · (N / n_ref)^b, clamped to the α range that was swept;
* form 'table':  log(α − 1) linear in log N between the measured optima (knots),
  constant beyond the first and last knot.

α − 1 (not α) is what is fitted: it keeps every predicted α > 1, where the filters exist.
The rule is measured on one model (the embedded Fashion-MNIST VE NCSN++, a 1000-step
schedule, normalised filters); for other models it is a heuristic starting point.

`RULE_PATH` is written by `python benchmarks/quality_vs_steps.py --fit-only RESULTS.json
--install` from the raw results of a real study (any preset but 'smoke', whose tiny random
model measures nothing), and carries its provenance (study command, device, dates, samples
per point) and quality numbers. The shipped rule comes from a CPU study with 100 samples per
point (README "Results"). Without a rule file 'auto' raises an error that says how to make one.

Fitting (`fit_rule`): for each step count the FID-vs-α curve of the sweep gives α*
(the grid minimum, refined by a parabola through it and its two neighbours in
u = log(α − 1)); optima at the edge of the α grid are censored (the true optimum lies
beyond the grid) and kept out of the power-law fit. The quality of a rule is its *regret*:
the FID at the rule's α (read off the measured curve, piecewise linear in u) minus the
best FID of the sweep, per step count; `α = 5` gets the same number for comparison.
form='auto' takes the power law when at least 3 uncensored optima exist and, at every step
count, its regret is at most `REGRET_TOLERANCE` × the best FID or half the regret of α = 5
(it keeps at least half of what tuning α gains there); else the table.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

FORMAT = "pds_jax.alpha_rule/1"
AUTO = "auto"
DEFAULT_ALPHA = 5.0  # the paper's and the official code's value
RULE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alpha_rule.json")
FORMS = ("power", "table")
N_REF = 100.0
REGRET_TOLERANCE = 0.05  # relative to the best FID at that step count

FIT_COMMAND = ("python benchmarks/quality_vs_steps.py --fit-only RESULTS.json --install "
               "(RESULTS.json: the raw output of a real, non-smoke run of benchmarks/quality_vs_steps.py)")


# ----------------------------------------------------------------------------- parsing


def parse_alpha(value) -> Union[float, str]:
    """A config's α as a float > 1, or `AUTO`.

    Accepts numbers (int/float, as config files and `--config.sampling.pds.alpha=3` give
    them), numeric strings ('5', ' 2.5 ') and 'auto' (any case).
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"config.sampling.pds.alpha must be a number > 1 or 'auto', got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == AUTO:
            return AUTO
        try:
            alpha = float(text)
        except ValueError:
            raise ValueError(
                f"config.sampling.pds.alpha={value!r} is neither a number nor 'auto'; use e.g. "
                "--config.sampling.pds.alpha=5 or --config.sampling.pds.alpha=auto") from None
    elif isinstance(value, (int, float, np.integer, np.floating)):
        alpha = float(value)
    else:
        raise ValueError(f"config.sampling.pds.alpha must be a number > 1 or 'auto', got "
                         f"{type(value).__name__} {value!r}")
    if not math.isfinite(alpha) or alpha <= 1.0:
        raise ValueError(
            f"config.sampling.pds.alpha={value!r}: α must be a finite number > 1 (the filters are "
            "α / (x + α − 1); α → 1 is the strongest preconditioning, large α the vanilla sampler), "
            "or 'auto'. The paper uses 5.")
    return alpha


def pc_num_steps(config) -> int:
    """The PC steps a config runs: int(model.num_scales / sampling.pds.speed_up) (DESIGN §2)."""
    speed_up = float(config.sampling.pds.speed_up)
    if not speed_up > 0:
        raise ValueError(f"config.sampling.pds.speed_up must be > 0, got {speed_up}")
    return int(int(config.model.num_scales) / speed_up)


def resolve_alpha(value, num_steps: int, rule: Optional["AlphaRule"] = None) -> float:
    """The numeric α for `value` (number, numeric string or 'auto') at `num_steps` PC steps."""
    alpha = parse_alpha(value)
    if alpha != AUTO:
        return alpha
    return (rule or load_rule())(num_steps)


def config_alpha(config, rule: Optional["AlphaRule"] = None) -> float:
    """config.sampling.pds.alpha resolved for the PC steps that config runs."""
    return resolve_alpha(config.sampling.pds.alpha, pc_num_steps(config), rule)


def used_alpha(config, rule: Optional["AlphaRule"] = None) -> Optional[float]:
    """The α a config's PDS sampler runs with (resolved if 'auto'); None without filters."""
    pds = config.sampling.pds
    if not (pds.get("freq_filter") or pds.get("space_filter")):
        return None
    return config_alpha(config, rule)


# -------------------------------------------------------------------------------- rule


@dataclasses.dataclass(frozen=True)
class AlphaRule:
    """α*(N) for N PC steps (see the module docstring for the two forms).

    knots_steps / knots_alpha: the measured optima (used by form 'table', kept for both);
    a, b, n_ref: the power law α = 1 + a (N / n_ref)^b (form 'power');
    alpha_range: (min, max) α of the sweep; predictions are clamped to it;
    quality: per-step-count regrets and fit statistics; provenance: command, device, date.
    """

    form: str
    knots_steps: Tuple[float, ...]
    knots_alpha: Tuple[float, ...]
    alpha_range: Tuple[float, float]
    a: Optional[float] = None
    b: Optional[float] = None
    n_ref: float = N_REF
    quality: dict = dataclasses.field(default_factory=dict)
    provenance: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"alpha rule form must be one of {FORMS}, got {self.form!r}")
        if len(self.knots_steps) != len(self.knots_alpha) or not self.knots_steps:
            raise ValueError("alpha rule: knots_steps and knots_alpha must be non-empty and of equal length")
        if any(s <= 0 for s in self.knots_steps) or list(self.knots_steps) != sorted(self.knots_steps):
            raise ValueError(f"alpha rule: knots_steps must be positive and increasing, got {self.knots_steps}")
        if any(not a > 1 for a in self.knots_alpha):
            raise ValueError(f"alpha rule: every knot α must be > 1, got {self.knots_alpha}")
        lo, hi = self.alpha_range
        if not 1 < lo <= hi:
            raise ValueError(f"alpha rule: alpha_range must satisfy 1 < min <= max, got {self.alpha_range}")
        if self.form == "power" and (self.a is None or self.b is None or not self.a > 0):
            raise ValueError("alpha rule of form 'power' needs a > 0 and b")

    def __call__(self, num_steps) -> float:
        n = float(num_steps)
        if not n >= 1:
            raise ValueError(f"the α rule needs a number of PC steps >= 1, got {num_steps}")
        if self.form == "power":
            alpha = 1.0 + self.a * (n / self.n_ref) ** self.b
        else:
            u = np.interp(math.log(n), np.log(self.knots_steps), np.log(np.asarray(self.knots_alpha) - 1.0))
            alpha = 1.0 + math.exp(float(u))
        lo, hi = self.alpha_range
        return float(min(max(alpha, lo), hi))

    def formula(self) -> str:
        if self.form == "power":
            return (f"alpha(N) = 1 + {self.a:.4g} * (N / {self.n_ref:g})^{self.b:.4g}, clamped to "
                    f"[{self.alpha_range[0]:g}, {self.alpha_range[1]:g}]")
        knots = ", ".join(f"{s:g}: {a:.3g}" for s, a in zip(self.knots_steps, self.knots_alpha))
        return f"alpha(N): log-log interpolation of {{{knots}}} (constant outside)"

    def to_dict(self) -> dict:
        return {"format": FORMAT, "form": self.form, "formula": self.formula(),
                "knots": {"steps": list(self.knots_steps), "alpha": list(self.knots_alpha)},
                "alpha_range": list(self.alpha_range), "a": self.a, "b": self.b, "n_ref": self.n_ref,
                "quality": self.quality, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "alpha rule") -> "AlphaRule":
        if data.get("format") != FORMAT:
            raise ValueError(f"{source}: not a pds_jax alpha rule (format {data.get('format')!r}, "
                             f"expected {FORMAT!r})")
        try:
            return cls(form=data["form"], knots_steps=tuple(float(s) for s in data["knots"]["steps"]),
                       knots_alpha=tuple(float(a) for a in data["knots"]["alpha"]),
                       alpha_range=tuple(float(a) for a in data["alpha_range"]),
                       a=data.get("a"), b=data.get("b"), n_ref=float(data.get("n_ref", N_REF)),
                       quality=dict(data.get("quality", {})), provenance=dict(data.get("provenance", {})))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{source}: malformed alpha rule ({e!r})") from e


def load_rule(path: Optional[str] = None) -> AlphaRule:
    """The installed rule (`RULE_PATH`), or the one at `path`."""
    path = path or RULE_PATH
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"config.sampling.pds.alpha='auto' needs a fitted α rule, and {path} does not exist (it ships "
            f"with pds_jax; was it deleted?). Fit and install it with {FIT_COMMAND}, or set a number, e.g. "
            "--config.sampling.pds.alpha=5 (the paper's value).")
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a JSON alpha rule ({e})") from e
    return AlphaRule.from_dict(data, path)


# ----------------------------------------------------------------------------- fitting


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


def save_rule(rule: AlphaRule, path: Optional[str] = None, overwrite: bool = False) -> str:
    from pds_jax.io_utils import atomic_write_json

    return atomic_write_json(path or RULE_PATH, rule.to_dict(), overwrite=overwrite)

from pds_jax.alpha_law import auto_alpha  # noqa: E402,F401  (the exact-analysis rule; docs/alpha_law.md)
