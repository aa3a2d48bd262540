"""PC sample quality on the embedded model with error bars: vanilla, PDS α = 5 and α 'auto'.

The α sweep of `quality_vs_steps.py` measures many settings with few samples each (100
on the CPU study), too few for FID differences of a few points to mean anything. This
study measures the decisive settings with many samples, keeps every sample, and puts a
bootstrap 95% interval on each number and on each difference between settings:

* settings: PC (reverse diffusion + Langevin, the config's snr) at N steps of the
  official speed-up schedule (k = num_scales / N, eps · k) for each of --settings:
  `vanilla` (D = s = 1 in the same compiled program), a number (PDS at that α) or `auto`
  (`alpha_rule.auto_alpha`, the config path's resolution); every setting draws batch b
  from fold_in(seed, b), so the settings at one N share their noise and differ by the
  sampler only (that is what makes the paired intervals of differences narrow);
* samples: uint8 per batch in `--samples/<setting>/batch_<b>.npz`, written atomically, so
  the sampling part can be stopped (Ctrl-C, `--time-budget`) and rerun: finished batches
  are kept, only the missing ones are drawn;
* metrics (`quality_metrics.py`, `--report`): domain FID vs the 60k train statistics,
  KID vs the 10k test features, and the feature-free radial power-spectrum error against
  the training images, with percentile-bootstrap intervals (resampling samples) and paired
  intervals for differences; the floor is the same metrics of real test images.

* the rule (`--fit-rule REPORT`): the FID optimum over α at each N with ≥ 3 PDS α values,
  as the table rule of `pds_jax.alpha_rule` (`--install` makes it the rule `auto` reads).

    # sample in pieces (rerun the same command to continue), then report:
    python benchmarks/quality_intervals.py --steps 50 25 100 --num-samples 1000 --time-budget 3000
    python benchmarks/quality_intervals.py --report --out benchmarks/results/quality_intervals_cpu.json

On a 2-core CPU one sampling process keeps ≈ 1.2 cores busy (XLA's CPU convolutions are not
fully parallel); two processes drawing different settings (e.g. `--steps 50` in one shell,
`--steps 200` in another) raise the throughput ≈ 1.8x. They share the store safely: each
batch file is written atomically and holds the same samples whoever draws it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import os
import re
import shlex
import sys
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from pds_jax import io_utils  # noqa: E402
from pds_jax.provenance import config_hash, device_info  # noqa: E402
from pds_jax.samplers.common import as_partial  # noqa: E402
from quality_study import Study, _to_uint8  # noqa: E402
from quality_vs_steps import DEFAULT_CONFIG, KID_FEATURES, load_config_file  # noqa: E402

DEFAULT_SAMPLES = os.path.join(REPO, "benchmarks", "results", "quality_intervals_samples")
DEFAULT_OUT = os.path.join(REPO, "benchmarks", "results", "quality_intervals_cpu.json")


def setting_name(steps: int, setting: str) -> str:
    """Folder name of one setting: `N0050_vanilla`, `N0050_alpha5`, `N0050_auto`."""
    return f"N{steps:04d}_" + (setting if setting in ("vanilla", "auto") else f"alpha{float(setting):g}")


def parse_setting(text: str) -> str:
    if text in ("vanilla", "auto"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 1:
        raise argparse.ArgumentTypeError(f"--settings {text!r}: use 'vanilla', 'auto' or a number α > 1")
    return f"{value:g}"


class Sampling:
    """Draws the missing batches of each setting into the sample store."""

    def __init__(self, config, args, log=print):
        self.args, self.log = args, log
        self.study = Study(config, args, log=log)
        self.score = as_partial(self.study.score_fn)
        self.meta = {"config_file": args.config, "config_hash": config_hash(config),
                     "checkpoint": self.study.checkpoint, "num_scales": int(config.model.num_scales),
                     "snr": float(config.sampling.snr), "batch_size": args.batch_size, "seed": args.seed,
                     "device": device_info()}

    def preconditioner(self, steps: int, setting: str):
        study = self.study
        _, sampler, template = study.pc_program(steps)
        if setting == "vanilla":
            ones = {k: None if getattr(template, k) is None else jax.numpy.ones_like(getattr(template, k))
                    for k in ("freq", "space")}
            return dataclasses.replace(template, **ones), None, sampler
        precond = study.setup(steps, "auto" if setting == "auto" else float(setting)).precond
        return precond, float(precond.alpha), sampler

    def run(self, steps: int, setting: str, deadline: float) -> bool:
        """Draw the missing batches of one setting; False when the deadline stopped it."""
        folder = os.path.join(self.args.samples, setting_name(steps, setting))
        os.makedirs(folder, exist_ok=True)
        info_path = os.path.join(folder, "setting.json")
        precond, alpha, sampler = self.preconditioner(steps, setting)
        info = {"steps": steps, "setting": setting, "alpha": alpha, "eps": float(sampler.eps),
                "nfe": int(sampler.nfe), **self.meta}
        if os.path.exists(info_path):
            old = io_utils.load_json(info_path, "setting record")
            keys = ("config_hash", "batch_size", "seed", "steps", "alpha", "eps")
            bad = [k for k in keys if old.get(k) != info[k]]
            if bad:
                raise SystemExit(f"{folder}: drawn with other settings ({', '.join(bad)}); "
                                 "use another --samples folder")
        else:
            io_utils.atomic_write_json(info_path, info)
        compiled = self.study.pc_program(steps)[0]
        count = -(-self.args.num_samples // self.args.batch_size)
        for b in range(count):
            path = os.path.join(folder, f"batch_{b:04d}.npz")
            if os.path.exists(path):
                continue
            if time.time() > deadline:
                return False
            start = time.perf_counter()
            x, stats = compiled(jax.random.fold_in(self.study.key, b), self.score, (precond,))
            x = np.asarray(x, np.float32)
            seconds = time.perf_counter() - start
            io_utils.atomic_save_npz(path, {"samples": _to_uint8(np.where(np.isfinite(x), x, 0.0)),
                                            "nonfinite": (~np.isfinite(x)).any(axis=(1, 2, 3)),
                                            "seconds": seconds})
            self.log(f"{setting_name(steps, setting)} α={alpha} batch {b + 1}/{count}: {seconds:.1f} s")
        return True


def load_setting(folder: str) -> Dict:
    """The record and the samples (in batch order) of one setting folder."""
    info = io_utils.load_json(os.path.join(folder, "setting.json"), "setting record")
    paths = sorted(glob.glob(os.path.join(folder, "batch_*.npz")))
    numbers = [int(re.search(r"batch_(\d+)\.npz$", p).group(1)) for p in paths]
    if numbers != list(range(len(numbers))):
        raise ValueError(f"{folder}: batches {numbers} are not 0..{len(numbers) - 1}; rerun the sampling")
    files = [io_utils.load_npz(p, "sample batch", "delete it and rerun the sampling") for p in paths]
    info["samples"] = np.concatenate([f["samples"] for f in files]) if files else None
    info["nonfinite"] = int(sum(int(np.sum(f["nonfinite"])) for f in files))
    info["seconds"] = [float(f["seconds"]) for f in files]
    return info


MIN_SWEEP = 3  # α values at one N: fewer cannot place an optimum between them


def fit_rule(args, log=print):
    """The α(N) table rule of `alpha='auto'` from a `--report` JSON: at each N with ≥ MIN_SWEEP
    PDS α values (auto among them, at its α) the FID optimum (`alpha_fit.best_alpha`), written
    next to the report as `<report>_alpha_rule.json` and, with --install, installed as the rule
    `auto` reads (`pds_jax.alpha_rule.RULE_PATH`)."""
    import alpha_fit
    from quality_metrics import FORMAT
    from pds_jax import alpha_rule
    report = io_utils.load_json(args.fit_rule, "quality_intervals report")
    if report.get("format") != FORMAT:
        raise SystemExit(f"--fit-rule {args.fit_rule}: not a quality_intervals --report JSON")
    sweeps: Dict[int, tuple] = {}
    for r in report["results"]:
        if r["alpha"] is not None:
            alphas, fids = sweeps.setdefault(int(r["steps"]), ([], []))
            alphas.append(float(r["alpha"]))
            fids.append(float(r["metrics"]["fid"]["value"]))
    sweeps = {n: s for n, s in sorted(sweeps.items()) if len(s[0]) >= MIN_SWEEP}
    if not sweeps:
        raise SystemExit(f"--fit-rule {args.fit_rule}: no N with >= {MIN_SWEEP} PDS α values; sample a sweep "
                         "first, e.g. --steps 50 --settings 3.5 5 auto 9")
    counts = [r["num_samples"] for r in report["results"] if r["steps"] in sweeps and r["alpha"] is not None]
    model, device = report["model"], report["sampled_on"]
    provenance = {"results": os.path.relpath(args.fit_rule, REPO), "study_command": report["command"],
                  "device": f"{device.get('device_kind')} ({device.get('platform')})", "jax": device.get("jax"),
                  "num_samples": min(counts), "num_scales": model["num_scales"],
                  "checkpoint": os.path.relpath(model["checkpoint"], os.path.join(REPO, "pds_jax", "assets")),
                  "metric": "domain FID (fashion_mnist features) vs train stats, quality_intervals.py",
                  "fit_date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path = os.path.splitext(args.fit_rule)[0] + "_alpha_rule.json"
    if os.path.exists(path) and not args.overwrite:
        raise SystemExit(f"{path} exists; pass --overwrite to replace it")
    rule = alpha_fit.fit_rule(sweeps, form="table", provenance=provenance)
    alpha_fit.save_rule(rule, path, overwrite=args.overwrite)
    for line in alpha_fit.optima_lines(rule):
        log(line)
    log(f"wrote {path}: {rule.formula()}")
    if args.install:
        alpha_fit.save_rule(rule, alpha_rule.RULE_PATH, overwrite=True)
        log(f"installed {alpha_rule.RULE_PATH}")
    return rule


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="ml_collections config file of the model")
    parser.add_argument("--samples", default=DEFAULT_SAMPLES, help="sample store (one folder per setting)")
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 25, 100, 200], help="PC steps N")
    parser.add_argument("--settings", type=parse_setting, nargs="+", default=["vanilla", "5", "auto"])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-budget", type=float, help="seconds of sampling; rerun to continue")
    parser.add_argument("--report", action="store_true", help="compute the metrics of the stored samples")
    parser.add_argument("--fit-rule", metavar="REPORT", help="fit the α(N) rule to the sweeps of a --report JSON")
    parser.add_argument("--install", action="store_true", help="with --fit-rule: install it as the rule 'auto' reads")
    parser.add_argument("--out", default=DEFAULT_OUT, help="results JSON of --report (a PNG goes next to it)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.install and not args.fit_rule:
        parser.error("--install needs --fit-rule REPORT")
    args.command = "python benchmarks/quality_intervals.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    # Study's fields that this study does not vary
    args.kid_stats, args.kid_subsets, args.fid_stats = KID_FEATURES, 10, None
    return args


def sample(args, log=print) -> List[str]:
    config = load_config_file(args.config)
    args.fid_stats = str(config.eval.stats_file)
    run = Sampling(config, args, log)
    deadline = time.time() + (args.time_budget if args.time_budget else float("inf"))
    unfinished = [setting_name(n, s) for n in args.steps for s in args.settings if not run.run(n, s, deadline)]
    log("all settings complete" if not unfinished else f"stopped by --time-budget; unfinished: {unfinished}")
    return unfinished


def main(argv=None) -> Optional[object]:
    args = parse_args(argv)
    if args.fit_rule:
        return fit_rule(args)
    if args.report:
        import quality_metrics
        return quality_metrics.report(args)
    sample(args)
    return None


if __name__ == "__main__":
    main()
