"""The PDS filter parameter α as a function of the number of PC steps.

The normalised filters (docs/design.md §3) are D = α / (R / max R + α − 1) and
s = α / (A / max A + α − 1): α → 1 is the strongest preconditioning, α → ∞ the vanilla
sampler (D, s → 1). The official code uses one α = 5 for every step count. The journal
version of PDS (Ma, Zhu, Feng, Zhang, "Preconditioned Score-based Generative Models",
arXiv 2302.06504, IJCV 2025) states that it "theoretically reveal[s] a relation between
the parameter of PDS and the sampling iterations, easing the parameter estimation under
varying sampling iterations"; we measure that relation instead of assuming a form
(`benchmarks/quality_vs_steps.py` sweeps α at several step counts on the embedded
Fashion-MNIST model) and ship the fit as `pds_jax/assets/alpha_rule.json`.

`config.sampling.pds.alpha` is a number > 1 or the string 'auto'. 'auto' is resolved by
`pds_jax.pds` (the one place N and α are resolved) with the number of PC steps actually
run, N = int(model.num_scales / speed_up), through `auto_alpha` and the installed rule:

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

The rule is fitted by `benchmarks/alpha_fit.py`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Mapping, Optional, Tuple, Union

import numpy as np

from pds_jax import resources
from pds_jax.io_utils import load_json
from pds_jax.alpha_law import stability_floor

FORMAT = "pds_jax.alpha_rule/1"
AUTO = "auto"
DEFAULT_ALPHA = 5.0  # the paper's and the official code's value
RULE_PATH = resources.asset_path("alpha_rule.json")  # shipped as package data
FORMS = ("power", "table")
N_REF = 100.0

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


def auto_alpha(freq, space, sde, num_steps: int, **schedule) -> float:
    """α for `alpha='auto'`: max(the installed measured rule at N, the stability floor).

    freq / space: the raw statistics R and A the filters are built from (either may be
    None); sde: the model's SDE (its N the base schedule); num_steps: the PC steps run;
    `schedule`: snr, n_steps, eps, centered of `alpha_law.stability_floor`.

    The measured rule (`RULE_PATH`, fitted by `benchmarks/quality_vs_steps.py`) gives the
    FID optimum of the embedded model; the floor (`pds_jax.alpha_law.stability_floor`) is
    computed from *this* model's statistics and schedule and keeps α above the value at
    which the exact Gaussian analysis of the PC sampler diverges (docs/alpha_law.md).
    """
    floor = stability_floor(freq, space, sde, num_steps, **schedule)
    return max(load_rule()(num_steps), floor)


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
    data = load_json(path, "the alpha rule", fix=f"refit and install it with {FIT_COMMAND}, or restore it "
                     "(reinstall pds_jax)")
    return AlphaRule.from_dict(data, path)


