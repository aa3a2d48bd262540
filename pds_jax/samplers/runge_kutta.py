"""Explicit Runge–Kutta tableaus and the one stage loop the RK solvers share.

A tableau (c, A strictly lower triangular, b) defines one step from y with step h,

    k_s = f(s, y + h Σ_{l<s} a_sl k_l),    y_new = y + h Σ_s b_s k_s,

and an embedded pair adds the error weights b_err = b − b̂ (b̂ of the lower order),
err = h Σ_s b_err_s k_s (Hairer, Nørsett & Wanner, Solving ODEs I, Sec. II.1, II.4).

`rk_stages` and `rk_combine` are used by the adaptive Dormand–Prince solver and the
fixed-grid Euler / Heun of `ode`, and by ρRK-DEIS in `deis`. The stages are unrolled
Python loops (at most 7 here) inside the caller's traced step; zero coefficients are
skipped and the sums run in stage order, left to right, so every solver rounds as it
did with its own hand-written loop.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence, Tuple

import jax

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta tableau of Python floats (hashable: a static jit argument).

    Attributes:
      name: e.g. 'heun', 'dopri5'.
      c: (S,) stage nodes; a: S rows, row s holding a_s0 .. a_s(s−1); b: (S,) weights.
      b_err: (S,) error weights b − b̂ of an embedded pair, or None.
    """

    name: str
    c: Tuple[float, ...]
    a: Tuple[Tuple[float, ...], ...]
    b: Tuple[float, ...]
    b_err: Optional[Tuple[float, ...]] = None

    def __post_init__(self):
        if not len(self.c) == len(self.a) == len(self.b) or any(len(r) != s for s, r in enumerate(self.a)):
            raise ValueError(f"tableau {self.name!r}: c, a and b must describe the same stages "
                             "(a strictly lower triangular, row s with s entries)")
        if self.b_err is not None and len(self.b_err) != len(self.b):
            raise ValueError(f"tableau {self.name!r}: b_err needs one weight per stage")

    @property
    def stages(self) -> int:
        return len(self.b)


def rk_stages(tableau: ButcherTableau, slope_fn: Callable[[int, Array], Array], y: Array, h: Array,
              first_slope: Optional[Array] = None) -> Tuple[list, list]:
    """The stage points y_s = y + Σ_{l<s} (h a_sl) k_l and slopes k_s = slope_fn(s, y_s).

    `first_slope` is k_0 when it is already known (FSAL: the last slope of the previous
    step), so slope_fn is not called for stage 0. Returns (points, slopes), S each.
    """
    points, slopes = [], []
    for s, row in enumerate(tableau.a):
        y_s = y
        for a_sl, k_l in zip(row, slopes):
            if a_sl != 0.0:
                y_s = y_s + (h * a_sl) * k_l
        points.append(y_s)
        slopes.append(first_slope if s == 0 and first_slope is not None else slope_fn(s, y_s))
    return points, slopes


def rk_combine(y, h: Array, weights: Sequence[float], slopes: Sequence[Array]):
    """y + Σ_s (h w_s) k_s, summed in stage order with zero weights skipped (y may be 0.0)."""
    for w, k in zip(weights, slopes):
        if w != 0.0:
            y = y + (h * w) * k
    return y


# Order → tableau (Hairer, Nørsett & Wanner, Sec. II.1; DEIS's ρRK uses Kutta's third-order
# method by default, EDM's deterministic sampler is Heun's).
RK_TABLEAUS = {
    1: ButcherTableau("euler", (0.0,), ((),), (1.0,)),
    2: ButcherTableau("heun", (0.0, 1.0), ((), (1.0,)), (0.5, 0.5)),
    3: ButcherTableau("kutta3", (0.0, 0.5, 1.0), ((), (0.5,), (-1.0, 2.0)), (1 / 6, 4 / 6, 1 / 6)),
    4: ButcherTableau("rk4", (0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                      (1 / 6, 2 / 6, 2 / 6, 1 / 6)),
}


def _dormand_prince() -> ButcherTableau:
    """Dormand & Prince (1980) 5(4), FSAL: the last row of A is b, so stage 7 is f(y_new)."""
    a = (
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    )
    b = a[6] + (0.0,)
    b_low = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
    return ButcherTableau("dopri5", (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0), a, b,
                          tuple(w - w_low for w, w_low in zip(b, b_low)))


DORMAND_PRINCE = _dormand_prince()
