"""Wall-clock cost of jitted samplers per step, measured side by side.

A PC sampler is one compiled program per number of steps (its loop is a
`lax.fori_loop` over a static count; docs/design.md §1), so the cost of one step is read
off several programs of the same family:

* a `Program` maps a step count n to a zero-argument runner that executes n steps;
  n = 0 is the same program with no work per step (for a PC sampler: predictor and
  corrector 'none'), whose time is the fixed overhead — prior draw, M on it, output,
  dispatch;
* `warm_up` compiles and runs every runner once (the first network of each kind alone,
  so that XLA's convolution autotuning on GPU is not disturbed; the rest several at a
  time in threads, since XLA compiles with the GIL released);
* `time_rounds` times all runners in interleaved rounds, so that load from other
  processes on a shared machine hits every variant alike;
* `per_step` fits t(n) = fixed + n · step by least squares in every round and
  summarises the rounds (`Stats`: mean, std, min, median);
* `measure_cases` does all three for several cases (e.g. image sizes): every program
  is compiled first, then each case is timed side by side.

Also the inputs timing needs and nothing else: random network weights of a config's
shapes (`random_params`), PDS filters with the structure and cost of real ones
(`timing_preconditioner`), the trivial score −x (`linear_score`), and the work PDS
adds to one PC step in isolation (`preconditioner_programs`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from flax.traverse_util import flatten_dict, unflatten_dict

from pds_jax import models
from pds_jax.oracles import GaussianOracle
from pds_jax.precond import Preconditioner
from pds_jax.samplers.pc import get_pc_sampler

Runner = Callable[[], object]
Program = Dict[int, Runner]


# --------------------------------------------------------------------------- #
# Statistics and timing.
# --------------------------------------------------------------------------- #

@dataclasses.dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements (seconds unless stated)."""

    mean: float
    std: float
    min: float
    median: float
    values: tuple

    @classmethod
    def of(cls, values: Iterable[float]) -> "Stats":
        v = np.asarray(list(values), np.float64)
        if v.size == 0:
            raise ValueError("Stats.of needs at least one value")
        return cls(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, float(v.min()),
                   float(np.median(v)), tuple(float(x) for x in v))

    def to_dict(self, digits: int = 6) -> dict:
        r = lambda x: float(f"{x:.{digits}g}")
        return {"mean": r(self.mean), "std": r(self.std), "min": r(self.min), "median": r(self.median),
                "n": len(self.values), "values": [r(x) for x in self.values]}


def time_call(fn: Runner) -> float:
    """Seconds for fn() with its outputs ready on the device."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def warm_up(runners: Mapping[Hashable, Runner], solo: Sequence[Hashable] = (),
            workers: int = 1) -> Tuple[Dict[Hashable, float], Dict[Hashable, BaseException]]:
    """Run every runner once (compile + first run): ({key: seconds}, {key: exception}).

    The `solo` keys go first, one at a time, in order: on GPU the first program of a
    network autotunes its convolutions by timing them, which other work on the device
    would disturb; later programs of the same network reuse those choices. The other
    runners then go `workers` at a time (compilation releases the GIL, so threads
    overlap it); their seconds overlap too and are an upper bound on each. A runner
    that raises (e.g. out of memory) is reported, not re-raised.
    """
    seconds, errors = {}, {}

    def attempt(key):
        try:
            return key, time_call(runners[key]), None
        except Exception as e:  # noqa: BLE001 - reported per runner
            return key, None, e

    def record(key, s, e):
        if e is None:
            seconds[key] = s
        else:
            errors[key] = e

    for key in solo:
        record(*attempt(key))
    rest = [k for k in runners if k not in seconds and k not in errors]
    if workers <= 1 or len(rest) <= 1:
        for key in rest:
            record(*attempt(key))
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(attempt, rest):
                record(*result)
    return seconds, errors


def time_rounds(runners: Mapping[Hashable, Runner], repeats: int) -> Dict[Hashable, List[float]]:
    """Seconds of every runner in `repeats` interleaved rounds (order reversed every other
    round, so a slow drift of the machine does not favour one runner)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    keys = list(runners)
    times = {k: [] for k in keys}
    for r in range(repeats):
        for key in (keys if r % 2 == 0 else keys[::-1]):
            times[key].append(time_call(runners[key]))
    return times


def fit_line(steps: Sequence[int], seconds: Sequence[float]):
    """Least-squares (fixed, per_step) of seconds = fixed + steps · per_step."""
    n = np.asarray(steps, np.float64)
    t = np.asarray(seconds, np.float64)
    if len(set(n.tolist())) < 2:
        raise ValueError(f"need at least two different step counts, got {sorted(set(n.tolist()))}")
    slope, intercept = np.polyfit(n, t, 1)
    return float(intercept), float(slope)


def per_step(times: Mapping[int, Sequence[float]]) -> dict:
    """Per-step and fixed cost from `times[n][round]` (seconds of the n-step program).

    Each round gives one least-squares line over the step counts; the result
    summarises the rounds: {'per_step_s': Stats, 'fixed_s': Stats, 'rounds': int}.
    """
    counts = sorted(times)
    rounds = min(len(times[n]) for n in counts)
    fits = [fit_line(counts, [times[n][r] for n in counts]) for r in range(rounds)]
    return {"per_step_s": Stats.of(f[1] for f in fits), "fixed_s": Stats.of(f[0] for f in fits),
            "rounds": rounds}


def ratio_stats(numerator: Stats, denominator: Stats) -> Stats:
    """Round-by-round ratio of two per-step Stats measured in the same rounds."""
    return Stats.of(a / b for a, b in zip(numerator.values, denominator.values))


# --------------------------------------------------------------------------- #
# Inputs for timing.
# --------------------------------------------------------------------------- #

def random_params(config, seed: int = 0) -> dict:
    """Random weights in the parameter tree of `config`'s model (shapes from `eval_shape`).

    Kernels are N(0, 1/fan_in) (activations keep their scale through the network),
    biases 0, normalisation scales 1; drawn in float32 with NumPy, which is faster than
    initialising the model (no compilation) and gives the same cost per step.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in flatten_dict(models.param_shapes(config)).items():
        shape = tuple(leaf.shape)
        if path[-1] in ("bias", "b"):
            flat[path] = np.zeros(shape, np.float32)
        elif path[-1] == "scale":
            flat[path] = np.ones(shape, np.float32)
        else:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            flat[path] = rng.standard_normal(shape, dtype=np.float32) / np.float32(math.sqrt(fan_in))
    return jax.device_put(unflatten_dict(flat))


def num_params(params) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def synthetic_statistics(shape: Sequence[int], freq: bool = True, space: bool = True) -> dict:
    """{'freq': R, 'space': A} for (H, W, C) images with the cost of real filter files.

    The statistics are those of an image-like Gaussian (`GaussianOracle.natural_image`):
    Hermitian-symmetric like dataset statistics, so the half-spectrum FFT path is
    taken, as it is for real filter files.
    """
    R, A = GaussianOracle.natural_image(tuple(shape)).filter_statistics()
    return {k: v for k, v, use in (("freq", R, freq), ("space", A, space)) if use}


def timing_preconditioner(shape: Sequence[int], freq: bool = True, space: bool = True,
                          alpha: float = 5.0):
    """A PDS `Preconditioner` for (H, W, C) images with the cost of a real one (see
    `synthetic_statistics`)."""
    if not (freq or space):
        return Preconditioner.identity(shape)
    stats = synthetic_statistics(shape, freq, space)
    return Preconditioner.from_arrays(freq=stats.get("freq"), space=stats.get("space"), alpha=alpha)


def linear_score(x, t):
    """The trivial score −x (of N(0, I)): costs nothing, so a sampler using it measures the
    sampler's own work (noise, norms, and for PDS the FFTs)."""
    del t
    return -x


def pc_sampler_kwargs(config) -> dict:
    """The `get_pc_sampler` settings of `config.sampling` (predictor, corrector, snr, ...)."""
    s = config.sampling
    return dict(predictor=s.predictor.lower(), corrector=s.corrector.lower(), snr=float(s.snr),
                n_steps=int(s.n_steps_each), probability_flow=bool(s.probability_flow),
                denoise=bool(s.noise_removal))


def pc_programs(sde, shape, score_fn, steps: Sequence[int], precond=None, rng=None, **sampler_kwargs) -> Program:
    """Runners of PC samplers of `steps` steps (plus 0: predictor = corrector = 'none').

    Each sampler runs `sde.with_steps(n)` with `get_pc_sampler(..., **sampler_kwargs)`;
    the cost of a step does not depend on the σ schedule, so the n-step programs stand
    for a piece of any longer run.
    """
    rng = jax.random.PRNGKey(0) if rng is None else rng
    score_fn = score_fn if isinstance(score_fn, Partial) else Partial(score_fn)
    programs = {}
    for n in sorted(set(int(s) for s in steps) | {0}):
        if n == 0:
            kwargs = dict(sampler_kwargs, predictor="none", corrector="none")
            sampler = get_pc_sampler(sde.with_steps(1), shape, precond=precond, **kwargs)
        else:
            sampler = get_pc_sampler(sde.with_steps(n), shape, precond=precond, **sampler_kwargs)
        programs[n] = (lambda s: lambda: s(rng, score_fn)[0])(sampler)
    return programs


def preconditioner_programs(precond, shape, steps: Sequence[int], rng=None) -> Program:
    """Runners of n repetitions of the work PDS adds to one PC step, alone.

    One repetition: P on the corrector's gradient, M on its noise, P on the
    predictor's drift, M on its noise (2 P + 2 M; P = K s² K costs two frequency
    operators, M one). The four are chained so none can be skipped; the constant
    factors keep the values bounded over many repetitions.
    """
    rng = jax.random.PRNGKey(1) if rng is None else rng
    g0, z0 = jax.random.normal(rng, (2,) + tuple(shape), jnp.float32)

    def build(n):
        @jax.jit
        def run(precond, g, z):
            def body(_, carry):
                g, z = carry
                g = precond.precondition_drift(g)      # corrector: P ∇log p
                z = precond.M(z)                       # corrector: M z
                g = precond.precondition_drift(g + z)  # predictor: P rev_f
                z = precond.M(z)                       # predictor: M z
                return 0.2 * g, 0.6 * z

            return jax.lax.fori_loop(0, n, body, (g, z))

        return lambda: run(precond, g0, z0)

    return {n: build(n) for n in sorted(set(int(s) for s in steps) | {0})}


def measure_cases(cases: Mapping[str, Mapping[str, Program]], repeats: int, solo_family: Optional[str] = None,
                  workers: int = 1, skip: Optional[Callable[[str], Optional[str]]] = None,
                  on_result: Optional[Callable[[str, dict], None]] = None) -> Dict[str, dict]:
    """Warm up every program of every case, then time each case's families side by side.

    cases[case][family][n] is a runner. All cases are compiled before any is timed, so
    their compiles overlap (`warm_up`; the `solo_family` program with the most steps of
    each case goes first, alone). Then, case by case, all of its families are timed in
    the same interleaved rounds. `skip(case)` may return a reason to skip timing a case
    (e.g. a time budget); `on_result(case, result)` is called as each case finishes
    (e.g. to save partial results). Returns per case either {'status': 'ok', 'families': {family:
    per_step result + 'times_s' + 'first_call_s'}} or {'status': 'error'|'skipped',
    'reason': str}.
    """
    runners = {(case, fam, n): run for case, fams in cases.items() for fam, prog in fams.items()
               for n, run in prog.items()}
    solo = [(case, solo_family, max(fams[solo_family])) for case, fams in cases.items()
            if solo_family in fams]
    first, errors = warm_up(runners, solo, workers)
    out = {}
    for case, fams in cases.items():
        out[case] = _time_case(case, fams, repeats, first, errors, skip)
        if on_result is not None:
            on_result(case, out[case])
    return out


def _time_case(case, fams, repeats, first, errors, skip) -> dict:
    failed = [(key, e) for key, e in errors.items() if key[0] == case]
    if failed:
        (_, fam, n), e = failed[0]
        return {"status": "error", "reason": f"{fam} ({n} steps): {type(e).__name__}: {e}"[:800]}
    reason = skip(case) if skip is not None else None
    if reason:
        return {"status": "skipped", "reason": reason}
    try:
        times = time_rounds({(fam, n): run for fam, prog in fams.items() for n, run in prog.items()}, repeats)
    except Exception as e:  # noqa: BLE001 - reported per case
        return {"status": "error", "reason": f"timing: {type(e).__name__}: {e}"[:800]}
    families = {}
    for fam, prog in fams.items():
        family = {n: times[(fam, n)] for n in prog}
        result = per_step(family)
        result["times_s"] = {n: [round(t, 6) for t in ts] for n, ts in family.items()}
        result["first_call_s"] = {n: round(first[(case, fam, n)], 3) for n in prog}
        families[fam] = result
    return {"status": "ok", "families": families}


def measure_programs(programs: Mapping[str, Program], repeats: int, solo: Sequence[str] = (),
                     workers: int = 1) -> Dict[str, dict]:
    """`measure_cases` for a single case: {family: result}; raises if a program fails."""
    result = measure_cases({"case": programs}, repeats, solo[0] if solo else None, workers)["case"]
    if result["status"] != "ok":
        raise RuntimeError(result["reason"])
    return result["families"]


def summary(result: dict, digits: int = 6) -> dict:
    """JSON form of a `measure_programs` family result."""
    return {
        "per_step_s": result["per_step_s"].to_dict(digits),
        "fixed_s": result["fixed_s"].to_dict(digits),
        "rounds": result["rounds"],
        "steps_timed": sorted(result["times_s"]),
        "times_s": {str(n): v for n, v in sorted(result["times_s"].items())},
        "first_call_s": {str(n): v for n, v in sorted(result["first_call_s"].items())},
    }


def all_finite(x) -> Optional[bool]:
    try:
        return bool(jnp.all(jnp.isfinite(x)))
    except Exception:  # noqa: BLE001 - informational only
        return None
