"""Bits/dim through the probability-flow ODE vs the Gaussian oracle's closed form.

For VE (σ ∈ [0.01, 50]) and VP (β ∈ [0.1, 20]) on the `GaussianOracle.natural_image`
law (mean 0.5, 8×8×1 by default), eps = 1e-5, rtol = atol = 1e-5:

* exact trace: max |bpd − truth| over a batch, truth = `likelihood.oracle_bpd` (p_eps in
  closed form plus the exact prior mismatch prior_logp(z) − log p_T(z)), and the size of
  that mismatch;
* Hutchinson ('rademacher', 'gaussian'): mean ± standard error over the rows of a large
  batch (one probe per row) of bpd_hutchinson − bpd_exact, and the sample variance next to
  its closed form (see tests/test_likelihood.py).

    python benchmarks/likelihood_oracle.py --out benchmarks/results/likelihood_oracle.json
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from pds_jax import likelihood  # noqa: E402
from pds_jax.io_utils import atomic_write_json  # noqa: E402
from pds_jax.oracles import GaussianOracle  # noqa: E402
from pds_jax.sde import VESDE, VPSDE  # noqa: E402

EPS = 1e-5


def timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def hutchinson_variance(oracle, sde, kind):
    """Closed-form variance (bits/dim²) of the Hutchinson bpd error: k = ½ log(v(T)/v(eps))."""
    lam = np.asarray(oracle.spectrum, np.float64)
    (m0, s0), (m1, s1) = (np.float64(sde.marginal_coefficients(jnp.float32(t))) for t in (EPS, sde.T))
    k = 0.5 * np.log((m1**2 * lam + s1**2) / (m0**2 * lam + s0**2))
    var = 2 * (np.sum(k**2) - (k.size * k.mean() ** 2 if kind == "rademacher" else 0.0))
    return float(var / (k.size * np.log(2.0)) ** 2)


def case(name, sde, shape, batch, rows):
    oracle = GaussianOracle.natural_image(shape)
    x = oracle.sample(jax.random.PRNGKey(1), batch)
    key, score_fn = jax.random.PRNGKey(0), oracle.score_fn(sde)
    (bpd, _, nfe), seconds = timed(likelihood.get_likelihood_fn(sde, hutchinson_type="exact"), key, score_fn, x)
    true_bpd, with_prior = likelihood.oracle_bpd(oracle, sde, x, EPS)
    result = {"sde": name, "shape": list(shape), "batch": batch, "nfe": int(nfe),
              "seconds_incl_compile": seconds,
              "exact_max_abs_error_bpd": float(jnp.max(jnp.abs(bpd - with_prior))),
              "exact_mean_error_bpd": float(jnp.mean(bpd - with_prior)),
              "prior_mismatch_max_abs_bpd": float(jnp.max(jnp.abs(true_bpd - with_prior))),
              "truth_bpd_mean": float(jnp.mean(with_prior)), "hutchinson": {}}
    xs = oracle.sample(jax.random.PRNGKey(2), rows)
    exact, _, _ = likelihood.get_likelihood_fn(sde, hutchinson_type="exact")(key, score_fn, xs)
    for kind in ("rademacher", "gaussian"):
        est, _, nfe_h = likelihood.get_likelihood_fn(sde, hutchinson_type=kind)(key, score_fn, xs)
        err = np.asarray(est - exact, np.float64)
        result["hutchinson"][kind] = {
            "rows": rows, "nfe": int(nfe_h), "mean_error_bpd": float(err.mean()),
            "standard_error_bpd": float(err.std(ddof=1) / math.sqrt(rows)),
            "variance_bpd2": float(err.var(ddof=1)),
            "variance_closed_form_bpd2": hutchinson_variance(oracle, sde, kind)}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/likelihood_oracle.json")
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    shape = (args.size, args.size, 1)
    results = [case(n, s, shape, 8, args.rows) for n, s in (("ve", VESDE(0.01, 50.0)), ("vp", VPSDE()))]
    for r in results:
        print(f"{r['sde']}: exact max |err| {r['exact_max_abs_error_bpd']:.2e} bpd (NFE {r['nfe']}), "
              f"prior mismatch {r['prior_mismatch_max_abs_bpd']:.2e}")
        for kind, h in r["hutchinson"].items():
            print(f"  {kind:10s} mean err {h['mean_error_bpd']:+.4f} ± {h['standard_error_bpd']:.4f} (s.e.), "
                  f"var {h['variance_bpd2']:.4g} vs closed form {h['variance_closed_form_bpd2']:.4g}")
    atomic_write_json(args.out, {"argv": sys.argv, "eps": EPS, "rtol": 1e-5, "atol": 1e-5,
                                 "jax": jax.__version__, "platform": jax.devices()[0].platform,
                                 "results": results}, overwrite=args.overwrite)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
