"""The measuring side of `quality_vs_steps.py`: model, references, samplers and metrics.

`Study` loads the model and the reference statistics once and runs one group of settings
(a `Job`) at a time: PC vanilla and PDS at N steps (one compiled program per N, the
preconditioner an argument of it, so every α reuses it; the schedule and the filters of
each (N, α) come from `pds_jax.pds`), and the probability-flow ODE / DEIS samplers.
Every setting uses the same keys (batch k: fold_in(seed, k)).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import jax
import numpy as np

from pds_jax import feature_nets, metrics, pds
from pds_jax.data import get_data_inverse_scaler
from pds_jax.resources import resolve
from pds_jax.samplers.common import as_partial
from pds_jax.samplers.deis import get_deis_sampler
from pds_jax.samplers.ode import get_ode_sampler
from pds_jax.samplers.pc import get_pc_sampler
from pds_jax.score_model import load_score_model

THUMBS = 8


@dataclasses.dataclass
class Job:
    """Settings that share one compiled program; `nfe` × `settings` is its cost estimate."""

    name: str
    nfe: int                     # per sample and setting (estimate for adaptive)
    settings: int                # number of settings (α values) in the group
    run: Callable[["Study"], Iterator[dict]]  # yields one row per setting as it finishes
    labels: Optional[List[str]] = None  # result labels, where known before the run (--resume)


class Study:
    """Model, references and measurement helpers shared by all jobs."""

    def __init__(self, config, args, log=print):
        self.jax, self.metrics, self.log, self.args = jax, metrics, log, args
        self.config = config
        self.sde, _, _, self.score_fn, self.checkpoint = load_score_model(
            config, resolve(config.sampling.checkpoint))
        size, channels = config.data.image_size, config.data.num_channels
        self.shape = (args.batch_size, size, size, channels)
        self.num_batches = math.ceil(args.num_samples / args.batch_size)
        self.inverse = get_data_inverse_scaler(config)
        self.key = jax.random.PRNGKey(args.seed)
        self.statistics = pds.config_filter_statistics(config)  # read once, for every α
        if not self.statistics[0]:
            raise ValueError("the PDS sweep needs config.sampling.pds.freq_filter and/or space_filter")
        self.extractor = feature_nets.get_feature_fn(str(config.eval.feature_net))
        self.fid_ref = metrics.load_statistics(resolve(args.fid_stats), self.extractor.name, self.extractor.dim)
        self.kid_ref = (metrics.load_statistics(resolve(args.kid_stats), self.extractor.name,
                                                self.extractor.dim) if args.kid_stats else None)
        if self.kid_ref is not None and self.kid_ref.features is None:
            raise ValueError(f"--kid-stats {args.kid_stats} holds no raw features")
        self.done: set = set()  # labels measured by an earlier run (--resume)
        self.compiled_pc = {}
        self.thumbs: Dict[str, np.ndarray] = {}
        self.compile_seconds: List[float] = []
        self.batch_times: List[tuple] = []     # (NFE, seconds) of batches without compile/warm-up
        self.metric_seconds: List[float] = []

    # ------------------------------------------------------------------ metrics
    def reference_floor(self) -> dict:
        """FID/KID of n real test images (n = --num-samples): the finite-sample floor."""
        if self.kid_ref is None:
            return {}
        feats = self.kid_ref.features
        n = min(self.args.num_samples, len(feats) // 2)
        real = self._stats(feats[:n])
        out = {"n": n, "fid": self.metrics.fid_from_statistics(real, self.fid_ref),
               "note": f"first {n} test images vs the references (KID: vs the other test images)"}
        kid = self.metrics.kid(feats[:n], feats[n:], num_subsets=self.args.kid_subsets)
        out.update(kid=kid.mean, kid_std=kid.std)
        return out

    def _stats(self, feats):
        f = np.asarray(feats, np.float64)
        return self.metrics.FeatureStatistics(f.mean(0), np.cov(f, rowvar=False), len(f),
                                              self.extractor.name, features=feats)

    def measure(self, images: np.ndarray) -> dict:
        """FID (vs --fid-stats) and KID (vs --kid-stats) of uint8 NHWC samples."""
        feats = self.metrics.compute_features(images, self.extractor, batch_size=min(len(images), 1000),
                                              progress=False)
        stats = self._stats(feats)
        out = {"fid": self.metrics.fid_from_statistics(stats, self.fid_ref)}
        if self.kid_ref is not None:
            kid = self.metrics.kid(feats, self.kid_ref.features, num_subsets=self.args.kid_subsets)
            out.update(kid=kid.mean, kid_std=kid.std)
        return out

    # ----------------------------------------------------------------- sampling
    def draw(self, call: Callable, label: str) -> dict:
        """Run `call(rng) -> (x, nfe)` on every batch; uint8 samples + timing + metrics."""
        chunks, nfes, seconds, nonfinite = [], [], [], 0
        for b in range(self.num_batches):
            start = time.perf_counter()
            x, nfe = call(self.jax.random.fold_in(self.key, b))
            x = np.asarray(x, np.float32)
            seconds.append(time.perf_counter() - start)
            nfes.append(int(nfe))
            bad = ~np.isfinite(x)
            nonfinite += int(bad.any(axis=(1, 2, 3)).sum())
            chunks.append(_to_uint8(np.where(bad, 0.0, x)))
        images = np.concatenate(chunks)[: self.args.num_samples]
        self.thumbs[label] = images[:THUMBS]
        row = {"num_samples": int(len(images)), "nfe": float(np.mean(nfes)), "nfe_per_batch": nfes,
               "nonfinite_fraction": nonfinite / float(self.num_batches * self.shape[0]),
               "seconds_per_batch": seconds}
        start = time.perf_counter()
        row.update(self.measure(images))
        row["metric_seconds"] = time.perf_counter() - start
        self.metric_seconds.append(row["metric_seconds"])
        return row

    def pc_program(self, steps: int):
        """The compiled PC sampler for N steps (cached), taking the preconditioner as an argument."""
        if steps in self.compiled_pc:
            return self.compiled_pc[steps]
        template = self.setup(steps, 5.0).precond
        s = self.config.sampling
        sampler = get_pc_sampler(self.sde, self.shape, predictor=s.predictor, corrector=s.corrector, snr=s.snr,
                                 n_steps=s.n_steps_each, probability_flow=s.probability_flow,
                                 denoise=s.noise_removal, precond=template, num_steps=steps,
                                 inverse_scaler=self.inverse)
        start = time.perf_counter()
        compiled = sampler.lower(self.key, self.score_fn).compile()
        self.compile_seconds.append(time.perf_counter() - start)
        self.compiled_pc[steps] = (compiled, sampler, template)
        return self.compiled_pc[steps]

    def setup(self, steps: int, alpha):
        """The `PDSSetup` of N steps and α (the one resolver of schedule and filters)."""
        return pds.from_config(self.config, self.sde, alpha=alpha, num_steps=steps, statistics=self.statistics)

    def run_pc(self, steps: int, alphas: Sequence[Optional[float]]) -> Iterator[dict]:
        """PC at N steps for each α (None = vanilla), all through one compiled program."""
        alphas = [a for a in alphas if _pc_label(steps, a) not in self.done]
        if not alphas:
            return
        compiled, sampler, template = self.pc_program(steps)
        score = as_partial(self.score_fn)
        for alpha in alphas:
            if alpha is None:  # D = s = 1: the vanilla sampler, same program
                precond = dataclasses.replace(template, **{
                    k: None if getattr(template, k) is None else self.jax.numpy.ones_like(getattr(template, k))
                    for k in ("freq", "space")})
                method, label = "pc_vanilla", _pc_label(steps, alpha)
            else:
                precond = self.setup(steps, float(alpha)).precond
                method, label = "pc_pds", _pc_label(steps, alpha)
            nfe = sampler.nfe
            row = self.draw(lambda rng: (compiled(rng, score, (precond,))[0], nfe), label)
            row.update(method=method, steps=steps, alpha=alpha, eps=sampler.eps, label=label)
            # compiled ahead of time (pc_program), so every batch times sampling only; with one
            # batch per setting, dropping a warm-up batch would leave nothing to estimate from
            yield self._timed(row)

    def run_ode_deis(self, method: str, knob) -> Iterator[dict]:
        o, shape = self.config.sampling.ode, self.shape
        if method == "ode_rk45":
            sampler = get_ode_sampler(self.sde, shape, "adaptive", rtol=knob, atol=knob, denoise=True,
                                      inverse_scaler=self.inverse)
            label, steps = f"ode_rk45 tol={knob:g}", None
        elif method in ("ode_euler", "ode_heun"):
            solver = method[4:]
            steps = (knob - 1) if solver == "euler" else (knob - 1) // 2  # + 1 NFE denoising
            if steps < 1:
                raise ValueError(f"{method}: an NFE budget of {knob} leaves no ODE step")
            sampler = get_ode_sampler(self.sde, shape, solver, steps, grid=o.grid, rho=o.rho, denoise=True,
                                      inverse_scaler=self.inverse)
            label = f"{method} NFE={sampler.nfe}"
        else:
            steps = knob
            sampler = get_deis_sampler(self.sde, shape, steps, method="tab" if method == "deis_tab3" else "ipndm",
                                       order=3, grid=self.config.sampling.deis.grid, rho=self.config.sampling.deis.rho,
                                       inverse_scaler=self.inverse)
            label = f"{method} NFE={sampler.nfe}"
        if label in self.done:
            return
        row = self.draw(lambda rng: sampler(rng, self.score_fn), label)
        # the first batch includes the compile of these samplers (module-level jit)
        times = row["seconds_per_batch"]
        if len(times) > 1:
            self.compile_seconds.append(max(times[0] - float(np.mean(times[1:])), 0.0))
        row.update(method=method, steps=steps, alpha=None, tol=knob if method == "ode_rk45" else None,
                   label=label)
        yield self._timed(row, skip_first=True)

    def _timed(self, row, skip_first=False) -> dict:
        pairs = list(zip(row["nfe_per_batch"], row["seconds_per_batch"]))
        self.batch_times += pairs[1:] if skip_first else pairs
        row["sample_seconds"] = float(np.sum(row["seconds_per_batch"]))
        return row

    def seconds_per_batch_nfe(self) -> Optional[float]:
        """Measured time of one network evaluation of a batch (NFE-weighted over clean batches)."""
        nfe = sum(n for n, _ in self.batch_times)
        return sum(t for _, t in self.batch_times) / nfe if nfe else None

    # --------------------------------------------------------------- estimates
    def estimate(self, job: Job, pc_steps: Optional[int] = None) -> float:
        """Seconds `job` will take: compile (the longest so far) + its NFE at the measured rate
        + the per-setting metric time (the longest so far)."""
        per_bnfe = self.seconds_per_batch_nfe()
        if per_bnfe is None:
            return 0.0  # nothing measured yet
        compile_s = 0.0 if pc_steps in self.compiled_pc else max(self.compile_seconds, default=30.0)
        overhead = max(self.metric_seconds, default=1.0) + 0.5
        return compile_s + job.settings * (self.num_batches * job.nfe * per_bnfe + overhead)


def _pc_label(steps: int, alpha: Optional[float]) -> str:
    return f"pc_vanilla N={steps}" if alpha is None else f"pc_pds N={steps} alpha={alpha:g}"


def _to_uint8(x):
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
