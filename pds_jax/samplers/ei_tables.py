"""Float64 coefficient tables of the DEIS exponential integrators (built once, on the host).

All tables discretise the probability-flow ODE in DEIS form (see `grids`),
dy/dρ = ε(x, t) with y = x / α(t), ρ = s(t) / α(t), ε = −s(t) · score. Integrating
from ρ_i to ρ_{i+1} and multiplying by α_{i+1} gives the exact one-step relation

    x_{i+1} = (α_{i+1} / α_i) x_i + α_{i+1} ∫_{ρ_i}^{ρ_{i+1}} ε(x(ρ), t(ρ)) dρ.

A multistep method replaces ε by the polynomial through the last r + 1 values
ε_i, ε_{i−1}, ..., ε_{i−r} (Adams–Bashforth), so that

    x_{i+1} = x_coef[i] · x_i + Σ_{j=0..r} eps_coef[i, j] · ε_{i−j},
    eps_coef[i, j] = α_{i+1} ∫_{ρ_i}^{ρ_{i+1}} ℓ_j dρ,

where ℓ_j is the Lagrange basis through the nodes i, i−1, ..., i−r in
  * the SDE time t          — tAB-DEIS (for VE, t is affine in log σ),
  * ρ itself                — ρAB-DEIS,
and iPNDM uses the fixed Adams–Bashforth weights of a uniform grid times the DDIM
step α_{i+1}(ρ_{i+1} − ρ_i). Warm start: the first steps use r = min(i, order);
unused columns are zero. (DEIS, Zhang & Chen 2022, arXiv 2204.13902, Sec. 4; iPNDM
from the DEIS paper's appendix and k-diffusion's `sample_ipndm`; docs/design.md §5.)

Closed forms are used where they exist:
  * VE tAB: with u = log σ, ∫ e^u ℓ_j(u) du is a sum of exponential moments
    J_k(h) = ∫_0^1 e^{h w} w^k dw (series for |h| ≤ 1, the recursion
    J_k = (e^h − k J_{k−1}) / h above, both without cancellation);
  * ρAB: ℓ_j is a polynomial in ρ, integrated exactly;
otherwise (VP / sub-VP tAB) the integral is computed in ρ with composite
Gauss–Legendre quadrature on panels geometric in ρ (so log-like behaviour of t(ρ)
near small ρ is resolved); `tab_coefficients_quadrature` does this for any SDE and
is what the tests compare the closed forms against.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Tuple

import numpy as np

from pds_jax.samplers.runge_kutta import ButcherTableau
from pds_jax.sde import SDE, VESDE

MAX_MULTISTEP_ORDER = 3

# Adams–Bashforth weights of a uniform grid, r = 0..3 (iPNDM, docs/design.md §5).
IPNDM_WEIGHTS = (
    (1.0,),
    (3.0 / 2, -1.0 / 2),
    (23.0 / 12, -16.0 / 12, 5.0 / 12),
    (55.0 / 24, -59.0 / 24, 37.0 / 24, -9.0 / 24),
)


class MultistepTables(NamedTuple):
    """Tables of a multistep sampler with N steps and history length order + 1.

    t:        (N + 1,) decreasing times of the grid (the SDE's time), t[N] = eps.
    std:      (N,) s(t_i), the factor of ε_i = −s(t_i) score(x_i, t_i).
    x_coef:   (N,) α_{i+1} / α_i.
    eps_coef: (N, order + 1) C_ij multiplying ε_{i−j}.
    """

    t: np.ndarray
    std: np.ndarray
    x_coef: np.ndarray
    eps_coef: np.ndarray


def check_order(order, low: int, high: int, method: str) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not low <= order <= high:
        raise ValueError(f"{method}: order must be an integer in [{low}, {high}], got {order!r}")
    return int(order)


def lagrange_monomials(nodes) -> np.ndarray:
    """P with ℓ_j(w) = Σ_k P[j, k] w^k, the Lagrange basis through `nodes` (r + 1,)."""
    nodes = np.asarray(nodes, np.float64)
    vander = np.vander(nodes, increasing=True)  # V[m, k] = w_m^k
    # ℓ_j(w_m) = (P Vᵀ)[j, m] = δ_jm  ⇒  P = (Vᵀ)⁻¹
    return np.linalg.inv(vander.T)


def lagrange_basis(nodes, points) -> np.ndarray:
    """ℓ_j(points[q]) as an array (q, j) by the product formula (no monomials)."""
    nodes = np.asarray(nodes, np.float64)
    points = np.asarray(points, np.float64)
    out = np.ones(points.shape + nodes.shape)
    for j, node_j in enumerate(nodes):
        for m, node_m in enumerate(nodes):
            if m != j:
                out[..., j] *= (points - node_m) / (node_j - node_m)
    return out


def exp_moments(h: float, max_power: int) -> np.ndarray:
    """J_k(h) = ∫_0^1 e^{h w} w^k dw for k = 0..max_power, accurate for any h."""
    if abs(h) <= 1.0:
        # J_k = Σ_n h^n / (n! (n + k + 1)); 40 terms reach 1/40! ≈ 1e-48.
        n = np.arange(40)
        terms = np.array([h**i / math.factorial(i) for i in n])
        return np.array([np.sum(terms / (n + k + 1)) for k in range(max_power + 1)])
    out = np.empty(max_power + 1)
    out[0] = np.expm1(h) / h
    for k in range(1, max_power + 1):
        out[k] = (np.exp(h) - k * out[k - 1]) / h
    return out


@functools.lru_cache(maxsize=None)
def gauss_legendre(num_nodes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the num_nodes-point Gauss–Legendre rule on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(num_nodes)
    return 0.5 * (x + 1.0), 0.5 * w


def _quadrature_panels(a: float, b: float) -> np.ndarray:
    """Panel edges from a to b: geometric (ratio ≤ 2) when both are > 0, else one panel."""
    lo, hi = min(a, b), max(a, b)
    if lo <= 0.0:
        return np.array([a, b])
    n = max(1, int(np.ceil(np.log2(hi / lo))))
    return np.geomspace(a, b, n + 1)


def _history(i: int, order: int) -> int:
    return min(i, order)


def _x_coef(sde: SDE, ts: np.ndarray) -> np.ndarray:
    alpha = sde.np_alpha(ts)
    return alpha[1:] / alpha[:-1]


def _tables(sde: SDE, ts, eps_coef) -> MultistepTables:
    ts = np.asarray(ts, np.float64)
    return MultistepTables(ts, sde.np_std(ts[:-1]), _x_coef(sde, ts), eps_coef)


def tab_coefficients_quadrature(sde: SDE, ts, order: int, num_nodes: int = 16) -> MultistepTables:
    """tAB-DEIS tables for any SDE by composite Gauss–Legendre quadrature in ρ.

    eps_coef[i, j] = α_{i+1} ∫_{ρ_i}^{ρ_{i+1}} ℓ_j(t(ρ)) dρ, ℓ_j the Lagrange basis in t
    through t_i, ..., t_{i−r}, r = min(i, order); `num_nodes` nodes per panel.
    """
    order = check_order(order, 0, MAX_MULTISTEP_ORDER, "tab")
    ts = np.asarray(ts, np.float64)
    rhos, alphas = sde.np_rho(ts), sde.np_alpha(ts)
    unit_nodes, unit_weights = gauss_legendre(num_nodes)
    coef = np.zeros((len(ts) - 1, order + 1))
    for i in range(len(ts) - 1):
        r = _history(i, order)
        basis_nodes = ts[i - np.arange(r + 1)]
        edges = _quadrature_panels(rhos[i], rhos[i + 1])
        for a, b in zip(edges[:-1], edges[1:]):
            points = a + (b - a) * unit_nodes
            values = lagrange_basis(basis_nodes, sde.np_t_of_rho(points))
            coef[i, : r + 1] += (b - a) * (unit_weights @ values)
        coef[i] *= alphas[i + 1]
    return _tables(sde, ts, coef)


def tab_coefficients_ve(sde: VESDE, ts, order: int) -> MultistepTables:
    """Closed-form tAB-DEIS tables of the VE SDE (Lagrange basis in log σ ≡ t).

    With u = log σ, h = u_{i+1} − u_i and the nodes w_m = (u_{i−m} − u_i) / h:
    eps_coef[i, j] = ∫_{σ_i}^{σ_{i+1}} ℓ_j dσ = σ_i h Σ_k P[j, k] J_k(h), ℓ̃_j(w) = Σ_k P[j, k] w^k.
    """
    if not isinstance(sde, VESDE):
        raise TypeError(f"tab_coefficients_ve needs a VESDE, got {type(sde).__name__}")
    order = check_order(order, 0, MAX_MULTISTEP_ORDER, "tab")
    ts = np.asarray(ts, np.float64)
    sigmas = sde.np_std(ts)
    log_sigmas = np.log(sigmas)
    coef = np.zeros((len(ts) - 1, order + 1))
    for i in range(len(ts) - 1):
        r = _history(i, order)
        h = log_sigmas[i + 1] - log_sigmas[i]
        nodes = (log_sigmas[i - np.arange(r + 1)] - log_sigmas[i]) / h
        coef[i, : r + 1] = sigmas[i] * h * (lagrange_monomials(nodes) @ exp_moments(h, r))
    return _tables(sde, ts, coef)


def tab_coefficients(sde: SDE, ts, order: int) -> MultistepTables:
    """tAB-DEIS tables: the VE closed form, Gauss–Legendre quadrature otherwise."""
    if isinstance(sde, VESDE):
        return tab_coefficients_ve(sde, ts, order)
    return tab_coefficients_quadrature(sde, ts, order)


def rhoab_coefficients(sde: SDE, ts, order: int) -> MultistepTables:
    """ρAB-DEIS tables: Lagrange basis in ρ, integrated exactly.

    With h = ρ_{i+1} − ρ_i and nodes w_m = (ρ_{i−m} − ρ_i) / h:
    eps_coef[i, j] = α_{i+1} h Σ_k P[j, k] / (k + 1).
    """
    order = check_order(order, 0, MAX_MULTISTEP_ORDER, "rhoab")
    ts = np.asarray(ts, np.float64)
    rhos, alphas = sde.np_rho(ts), sde.np_alpha(ts)
    coef = np.zeros((len(ts) - 1, order + 1))
    for i in range(len(ts) - 1):
        r = _history(i, order)
        h = rhos[i + 1] - rhos[i]
        nodes = (rhos[i - np.arange(r + 1)] - rhos[i]) / h
        coef[i, : r + 1] = alphas[i + 1] * h * (lagrange_monomials(nodes) @ (1.0 / np.arange(1, r + 2)))
    return _tables(sde, ts, coef)


def ipndm_coefficients(sde: SDE, ts, order: int = 3) -> MultistepTables:
    """iPNDM tables: eps_coef[i] = α_{i+1} (ρ_{i+1} − ρ_i) · IPNDM_WEIGHTS[min(i, order)]."""
    order = check_order(order, 0, MAX_MULTISTEP_ORDER, "ipndm")
    ts = np.asarray(ts, np.float64)
    rhos, alphas = sde.np_rho(ts), sde.np_alpha(ts)
    coef = np.zeros((len(ts) - 1, order + 1))
    for i in range(len(ts) - 1):
        weights = IPNDM_WEIGHTS[_history(i, order)]
        coef[i, : len(weights)] = alphas[i + 1] * (rhos[i + 1] - rhos[i]) * np.asarray(weights)
    return _tables(sde, ts, coef)


# --------------------------------------------------------------------------- #
# Runge–Kutta in ρ (ρRK-DEIS).
# --------------------------------------------------------------------------- #

class RungeKuttaTables(NamedTuple):
    """Tables of ρRK-DEIS with N steps and S stages.

    t:           (N + 1,) the grid (SDE time); rho, alpha: (N + 1,) ρ(t_i), α(t_i).
    stage_t:     (N, S) times t(ρ_i + c_k h_i) at which stage k evaluates the score.
    stage_alpha: (N, S) α at those times (x_k = α_k y_k).
    stage_std:   (N, S) s at those times (ε_k = −s_k score).
    """

    t: np.ndarray
    rho: np.ndarray
    alpha: np.ndarray
    stage_t: np.ndarray
    stage_alpha: np.ndarray
    stage_std: np.ndarray


def rk_coefficients(sde: SDE, ts, tableau: ButcherTableau) -> RungeKuttaTables:
    ts = np.asarray(ts, np.float64)
    rhos = sde.np_rho(ts)
    c = np.asarray(tableau.c)
    stage_rho = rhos[:-1, None] + c[None, :] * (rhos[1:] - rhos[:-1])[:, None]
    stage_t = sde.np_t_of_rho(stage_rho)
    # Stages at the grid points reuse the grid times exactly (no inversion round-off).
    stage_t[:, c == 0.0] = ts[:-1, None]
    stage_t[:, c == 1.0] = ts[1:, None]
    return RungeKuttaTables(ts, rhos, sde.np_alpha(ts), stage_t, sde.np_alpha(stage_t),
                            sde.np_std(stage_t))
