"""`Sampler`: the one shape every sampler has (PC, probability-flow ODE, DEIS).

A builder (`get_pc_sampler`, `get_ode_sampler`, `get_deis_sampler`, or `get_sampler`
from a config) precomputes its time points and coefficient tables, binds them to a
module-level solver, and returns a frozen `Sampler`. Calling it runs one jitted program,

    samples, nfe = sampler(rng, score_fn)        # score_fn(x, t): NHWC x, t of shape (batch,)

with the inverse scaler (if any) applied inside the compiled program, so that
`sampler.lower(rng, score_fn)` lowers exactly what `sampler(rng, score_fn)` runs.
`describe()` is what run.json / eval.json record.

The solver contract: `solve(rng, score_fn, *operands) -> (x, stats)` is pure and
traceable; `operands` are pytrees passed to the compiled program as arguments (the
preconditioner's filters, coefficient tables), so a sampler rebuilt with new filters of the
same shape runs the same compiled program (`lower(...)`'s executable takes `(rng, score_fn,
operands)`). `stats` is a dict of scalar arrays that may hold 'nfe' (the number of score evaluations,
for adaptive solvers whose count is only known at run time) and 'first_bad' (the index
of the first step whose state was NaN/Inf, −1 if none, for samplers that check).

A sampler whose key is used only for x_T (the deterministic ODE / DEIS solvers) sets
`prior`: then x_T = prior(rng) runs as its own jitted program and the solver's program
receives x_T in place of the key, `solve(x_T, score_fn, *operands)`. Two reasons:
`common.prior_sample` compiles the threefry normal sampler (about 2 s on CPU) once per
(sde, shape) for all such samplers, and the solver's numbers stay those of the solver
compiled on its own: with the prior folded into the same XLA program, the adaptive
Dormand–Prince output on the VP Gaussian oracle moved by 1.5e-5 (a single FFT score
evaluation already by ~5e-7, CPU).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from pds_jax import distributed
from pds_jax.samplers.common import as_partial

Array = jax.Array


# The settings that usually make each method diverge (config names, as in run.json).
FINITE_HINTS = {
    "pc": "the PDS filters are too strong for the steps run, or the Langevin step is too large: "
          "lower sampling.pds.speed_up, raise sampling.pds.alpha, or lower sampling.snr (or check the "
          "score function)",
    "ode": "too few steps for the solver: raise sampling.ode.num_steps or choose another sampling.ode.solver "
           "(e.g. heun, rk45), or check the score function",
    "deis": "too few steps for the DEIS order: raise sampling.deis.num_steps or lower sampling.deis.order "
            "(or check the score function)",
}


def _shape_checked(score_fn: Callable, x: Array, t: Array) -> Array:
    score = score_fn(x, t)
    if tuple(score.shape) != tuple(x.shape):
        raise ValueError(
            f"score_fn returned shape {tuple(score.shape)} for x of shape {tuple(x.shape)} (NHWC) and t "
            f"of shape {tuple(jax.numpy.shape(t))}; a score has the shape of x, one per image — a "
            "different batch size would be broadcast into wrong samples. Fix score_fn(x, t) to "
            "return an array of x's shape")
    return score


def checked_score_fn(score_fn: Callable) -> Partial:
    """`score_fn` wrapped so that every call checks, at trace time, score.shape == x.shape.

    Shapes are static under `jit`, so the check runs once while tracing and adds no
    operation to the compiled program (the numbers are unchanged).
    """
    return Partial(_shape_checked, as_partial(score_fn))


class Chunks(NamedTuple):
    """A solver split so that a host loop can report progress between jitted chunks of steps:
    `start(rng, score_fn, *operands) -> carry`, `steps(carry, lo, hi, score_fn, *operands) -> carry`
    (steps lo..hi-1; one compiled program for every chunk, the bounds being traced) and
    `result(carry) -> (x, stats)`, tracing the same operations as `solve`."""

    start: Callable[..., Any]
    steps: Callable[..., Any]
    result: Callable[[Any], Tuple[Array, Mapping[str, Array]]]


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A built sampler: callable `(rng, score_fn) -> (samples, nfe)`.

    Attributes:
      method: 'pc' | 'ode' | 'deis'.
      shape: (batch, H, W, C) of the samples.
      num_steps: steps of the schedule run (PC steps, ODE/DEIS grid intervals; for the
        adaptive ODE solver its step limit).
      nfe: score evaluations per call; for adaptive solvers (`adaptive=True`) the bound
        (the actual count of a call is what `__call__` returns).
      eps: the final time t of the schedule.
      solve: `(rng, score_fn, *operands) -> (x, stats)`, pure (a partial of a module-level
        solver binding the static settings).
      operands: the pytrees `solve` takes as traced arguments.
      adaptive: whether the NFE is only known at run time.
      inverse_scaler: applied to the samples inside the compiled program (None: identity).
      check_finite: raise `FloatingPointError` after a call whose samples are NaN/Inf.
      options: the method's settings (predictor, corrector, grid, order, preconditioner
        description, ...), reported by `describe()`.
      prior: None, or `rng -> x_T` run before the program, whose `solve` then takes x_T
        (see the module docstring).
      chunks: None, or the solver in pieces (`Chunks`) for `call_with_progress`.
      batch_sharding: for samplers with `prior`: x_T is placed with it (on the devices of every
        process: one global array), so the solver's program runs data-parallel over the batch.
        (PC takes its sharding as a setting of its loop instead.)
    """

    method: str
    shape: Tuple[int, ...]
    num_steps: int
    nfe: int
    eps: float
    solve: Callable[..., Tuple[Array, Mapping[str, Array]]]
    operands: Tuple[Any, ...] = ()
    adaptive: bool = False
    inverse_scaler: Optional[Callable[[Array], Array]] = None
    check_finite: bool = False
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    prior: Optional[Callable[[Array], Array]] = None
    chunks: Optional[Chunks] = None
    batch_sharding: Optional[Any] = None

    def _start(self, rng: Array) -> Array:
        """What the program receives: the key, or x_T = prior(rng) when `prior` is set (placed
        with `batch_sharding`: every process computes the same x_T and places its rows)."""
        if self.prior is None:
            return rng
        x = self.prior(rng)
        return x if self.batch_sharding is None else distributed.to_global(x, self.batch_sharding)

    def _run(self, start: Array, score_fn: Callable, operands: Tuple[Any, ...]):
        return self._finish(*self.solve(start, checked_score_fn(score_fn), *operands))

    @functools.cached_property
    def _program(self):
        # cached_property writes to the instance __dict__, which a frozen dataclass allows;
        # one jitted program per Sampler, compiled at the first call.
        return jax.jit(self._run)

    def __call__(self, rng: Array, score_fn: Callable) -> Tuple[Array, int]:
        x, stats = self._program(self._start(rng), as_partial(score_fn), self.operands)
        if self.check_finite:
            self._raise_if_not_finite(x, stats)
        nfe = int(stats["nfe"]) if "nfe" in stats else self.nfe
        return x, nfe

    @functools.cached_property
    def _chunk_programs(self):
        c = self.chunks
        steps = jax.jit(lambda carry, lo, hi, score_fn, operands: c.steps(carry, lo, hi, checked_score_fn(score_fn),
                                                                           *operands))
        start = jax.jit(lambda rng, score_fn, operands: c.start(rng, checked_score_fn(score_fn), *operands))
        return start, steps, jax.jit(lambda carry: self._finish(*c.result(carry)))

    def _finish(self, x, stats):
        """The inverse scaler and the finite flag, inside the compiled program."""
        if self.inverse_scaler is not None:
            x = self.inverse_scaler(x)
        if self.check_finite:
            # a replicated scalar: readable on every process, also when x spans other hosts' devices
            stats = dict(stats, finite=jnp.all(jnp.isfinite(x)))
        return x, stats

    def call_with_progress(self, rng: Array, score_fn: Callable, progress: Callable[[int], Any],
                           chunk_steps: Optional[int] = None) -> Tuple[Array, int]:
        """`self(rng, score_fn)`, calling `progress(k)` each time k more steps are done.

        Samplers with `chunks` (PC) run as jitted chunks of `chunk_steps` steps (default:
        about 1/20 of the schedule), the next chunk dispatched before waiting for the last,
        so the device stays busy; there is no host callback inside a compiled loop. Others
        run in one program and report all their steps at the end. The samples equal those
        of `self(rng, score_fn)` up to float round-off of the separately compiled pieces.
        """
        if self.chunks is None:
            x, nfe = self(rng, score_fn)
            progress(self.num_steps)
            return x, nfe
        start, steps, finish = self._chunk_programs
        score, total = as_partial(score_fn), int(self.num_steps)
        chunk = max(1, int(chunk_steps or -(-total // 20)))
        carry = start(self._start(rng), score, self.operands)
        previous, done = None, 0
        for lo in range(0, total, chunk):
            hi = min(total, lo + chunk)
            carry = steps(carry, np.int32(lo), np.int32(hi), score, self.operands)  # host scalars: no retrace
            if previous is not None:
                jax.block_until_ready(previous[0])
                progress(previous[1])
                done += previous[1]
            previous = (carry, hi - lo)
        x, stats = finish(carry)
        if previous is not None:
            jax.block_until_ready(x)
            progress(total - done)
        if self.check_finite:
            self._raise_if_not_finite(x, stats)
        return x, (int(stats["nfe"]) if "nfe" in stats else self.nfe)

    def lower(self, rng: Array, score_fn: Callable):
        """`jax.jit(...).lower` of the program a call runs (inverse scaler included; not
        `prior`); its compiled form is called as `compiled(start, score_fn, sampler.operands)`
        with start = the key (PC) or x_T."""
        return self._program.lower(self._start(rng), as_partial(score_fn), self.operands)

    def with_inverse_scaler(self, inverse_scaler: Optional[Callable[[Array], Array]]) -> "Sampler":
        return dataclasses.replace(self, inverse_scaler=inverse_scaler)

    def describe(self) -> dict:
        """The schedule and settings actually run (JSON-able), for logs and run.json."""
        info = {"method": self.method, "num_steps": int(self.num_steps), "nfe": int(self.nfe),
                "nfe_is_bound": bool(self.adaptive), "eps": float(self.eps),
                "batch_shape": [int(s) for s in self.shape]}
        info.update(self.options)
        return info

    def _raise_if_not_finite(self, x: Array, stats: Mapping[str, Array]) -> None:
        first_bad = int(stats.get("first_bad", -1))
        if first_bad < 0 and bool(stats["finite"]):
            return
        where = f"first at step {first_bad} of {self.num_steps}" if first_bad >= 0 else "in its output"
        raise FloatingPointError(
            f"{self.method} sampler produced non-finite values (NaN/Inf) {where}; probable cause: "
            f"{FINITE_HINTS.get(self.method, 'the score function or the settings')}")
