"""Sample quality vs NFE of every sampler on the embedded Fashion-MNIST model, and PDS's α(N).

On the shipped VE NCSN++ (configs/fashion_mnist_pds.py, model.num_scales = 1000 unless
--num-scales says otherwise) it draws `--num-samples` images per setting and measures the
domain FID (Fashion-MNIST classifier features, `pds_jax.feature_nets`) against the 60k
train-set statistics and the KID against the 10k test-set features, for

* PC, vanilla and PDS (the shipped filters), at N steps (NFE = 2N: Langevin corrector +
  reverse-diffusion predictor; N = 1000 is the full schedule = 2000 NFE). PDS runs the
  official speed-up schedule (N = num_scales / k, eps · k); at every N in --sweep-steps
  α runs over --alphas (the α sweep);
* the probability-flow ODE: Euler and Heun on the EDM ρ grid (+1 NFE Tweedie denoising)
  and adaptive Dormand–Prince RK45 at --adaptive-tols;
* DEIS: tAB3 and iPNDM (order 3) on the ρ grid.

Every setting uses the same keys (batch k: fold_in(seed, k)), so settings differ by the
sampler only. One compiled program serves all α at a given N and the vanilla sampler too:
the preconditioner is an argument of the compiled PC sampler, and vanilla is PDS with
filters D = s = 1 (identical to the plain sampler up to FFT round-off; docs/design.md §3).

The settings run in priority order (α sweeps at small N first, the 2000-NFE runs and the
adaptive solver last) under --time-budget: a setting whose estimated cost (measured time
per network evaluation and per compile so far) would overrun the budget is skipped and
listed in the JSON. The raw results are rewritten after every setting, so a run cut short
keeps what it measured and `--resume X.json --out X.json` continues it (rows already measured
are kept, not re-run; the model and sampling settings must match). The fit comes second and
can be redone from the raw results:

    # GPU (one H100; at most ~7 minutes including compiles: the budget is 380 s):
    python benchmarks/quality_vs_steps.py --out $OUT/quality_vs_steps.json
    # tiny CPU run (tests):
    python benchmarks/quality_vs_steps.py --preset smoke --out /tmp/q.json
    # refit from raw results, write rule + plots next to --out, install pds_jax/alpha_rule.json:
    python benchmarks/quality_vs_steps.py --fit-only RESULTS.json --install

Files (for --out X.json): X.json (raw), X_alpha_rule.json (the fitted rule with its
quality), X.png (FID and KID vs NFE), X_alpha.png (FID vs α per N; best α vs N with the
rule), X_samples.png (the first samples of a few settings); tables and plots are drawn by
benchmarks/quality_report.py. The rule's form and quality measure: `pds_jax.alpha_rule`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import shlex
import sys
import time
from typing import Dict, List, Optional


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import alpha_fit  # noqa: E402
import jax  # noqa: E402
from pds_jax import alpha_rule, io_utils  # noqa: E402
from pds_jax.provenance import config_hash, device_info  # noqa: E402
from quality_study import Job, Study, _pc_label  # noqa: E402
from quality_report import (nfe_table, plot_alpha, plot_quality, plot_samples, summary_table,  # noqa: E402
                            sweeps_from)

FORMAT = "pds_jax.quality_vs_steps/1"
DEFAULT_CONFIG = os.path.join(REPO, "configs", "fashion_mnist_pds.py")
DEFAULT_OUT = os.path.join(REPO, "benchmarks", "results", "quality_vs_steps.json")
KID_FEATURES = "checkpoints/fashion_mnist_classifier/fashion_mnist_test_stats.npz"  # shipped (pds_jax.resources)

PRESETS = {
    # One H100, batch 1000: ~5-10 ms per network evaluation of a batch, ~5-10 s per compile.
    "gpu": dict(num_samples=2000, batch_size=1000, num_scales=1000, sweep_steps=[10, 25, 50, 100, 200],
                alphas=[1.1, 1.25, 1.5, 2, 3, 5, 8, 16, 64], full_steps=[1000], full_alphas=[5],
                deis_nfe=[10, 20, 50], ode_nfe=[20, 50, 100], adaptive_tols=[1e-3, 1e-5],
                kid_subsets=10, time_budget=380.0),
    # A CPU check that every path runs (use a tiny --config for tests).
    "smoke": dict(num_samples=8, batch_size=4, num_scales=None, sweep_steps=[2, 3], alphas=[2, 8],
                  full_steps=[], full_alphas=[], deis_nfe=[3], ode_nfe=[3], adaptive_tols=[],
                  kid_subsets=5, time_budget=None),
}



def make_jobs(args) -> List[Job]:
    """All settings in priority order (see the module docstring)."""
    jobs = []
    pc = lambda steps, alphas: Job(  # noqa: E731
        f"pc N={steps} " + ("vanilla+" if None in alphas else "") + f"alpha in {[a for a in alphas if a is not None]}",
        2 * steps, len(alphas), lambda st: st.run_pc(steps, alphas), [_pc_label(steps, a) for a in alphas])
    small = [n for n in args.sweep_steps if n < 200] or args.sweep_steps
    large = [n for n in args.sweep_steps if n not in small]
    for n in small:
        jobs.append((n, pc(n, [None] + list(args.alphas))))
    one = lambda method, knob, nfe: Job(f"{method} {knob:g}", nfe, 1,  # noqa: E731
                                        lambda st: st.run_ode_deis(method, knob))
    for nfe in args.deis_nfe:
        jobs += [(None, one("deis_tab3", nfe, nfe)), (None, one("deis_ipndm", nfe, nfe))]
    for nfe in args.ode_nfe:
        jobs += [(None, one("ode_heun", nfe, nfe)), (None, one("ode_euler", nfe, nfe))]
    for n in args.full_steps:
        jobs.append((n, pc(n, [None])))
    for n in large:
        jobs.append((n, pc(n, [None] + list(args.alphas))))
    for n in args.full_steps:
        if args.full_alphas:
            jobs.append((n, pc(n, list(args.full_alphas))))
    for tol in args.adaptive_tols:  # NFE guesses; the budget check needs one before the run
        jobs.append((None, one("ode_rk45", tol, 150 if tol >= 1e-3 else 500)))
    return jobs


def _report_head(config, args, study) -> dict:
    return {
        "format": FORMAT,
        "meta": {"script": "benchmarks/quality_vs_steps.py", "command": args.command,
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "device": device_info(), "preset": args.preset, "config_file": args.config,
                 "config_hash": config_hash(config), "checkpoint": study.checkpoint,
                 "num_scales": int(config.model.num_scales), "sde": repr(study.sde),
                 "pc": {"predictor": config.sampling.predictor, "corrector": config.sampling.corrector,
                        "snr": float(config.sampling.snr), "n_steps_each": int(config.sampling.n_steps_each),
                        "noise_removal": bool(config.sampling.noise_removal)},
                 "filters": {"freq": config.sampling.pds.freq_filter, "space": config.sampling.pds.space_filter,
                             "normalization": config.sampling.pds.normalization},
                 "vanilla_note": "pc_vanilla runs the PDS program with filters D = s = 1 (the vanilla "
                                 "sampler up to FFT round-off)",
                 "ode": {"grid": config.sampling.ode.grid, "rho": float(config.sampling.ode.rho),
                         "denoise": True},
                 "settings": {k: getattr(args, k) for k in (
                     "num_samples", "batch_size", "seed", "sweep_steps", "alphas", "full_steps", "full_alphas",
                     "deis_nfe", "ode_nfe", "adaptive_tols", "kid_subsets", "time_budget")}},
        "reference": {"fid_stats": args.fid_stats, "fid_count": study.fid_ref.count,
                      "kid_features": args.kid_stats or None,
                      "kid_count": None if study.kid_ref is None else study.kid_ref.count,
                      "floor": study.reference_floor()},
        "results": [], "skipped": [], "failed": [], "timing": {}, "complete": False,
    }


def _run_job(job, study, report, save, t0, log) -> None:
    """Run one job's settings, recording each row (or the failure) as it finishes."""
    try:
        for row in job.run(study):
            report["results"].append(row)
            kid = f"  KID {row['kid']:.5f}" if "kid" in row else ""
            log(f"[{time.perf_counter() - t0:6.1f}s] {row['label']:28s} NFE {row['nfe']:7.1f}  "
                f"FID {row['fid']:9.4f}{kid}"
                + (f"  nonfinite {row['nonfinite_fraction']:.2f}" if row["nonfinite_fraction"] else ""))
            save()
    except Exception as e:  # noqa: BLE001 - one broken setting must not lose the others
        report["failed"].append({"job": job.name, "error": f"{type(e).__name__}: {e}"})
        log(f"[{time.perf_counter() - t0:6.1f}s] FAILED {job.name}: {type(e).__name__}: {e}")
        save()


def run_study(config, args, out_path: str, log=print) -> dict:
    t0 = time.perf_counter()
    study = Study(config, args, log)
    report = _report_head(config, args, study)
    if args.resume:
        report = _resume(report, args.resume, study)
    log(f"[{time.perf_counter() - t0:6.1f}s] {jax.devices()[0].device_kind}: {study.num_batches} batch(es) of "
        f"{args.batch_size} per setting; floor {report['reference']['floor']}")

    def save():
        report["timing"] = {"elapsed_s": time.perf_counter() - t0, "compile_s": study.compile_seconds,
                            "seconds_per_batch_nfe": study.seconds_per_batch_nfe()}
        io_utils.atomic_write_json(out_path, report, overwrite=True)

    for steps, job in make_jobs(args):
        if job.labels is not None:
            left = [label for label in job.labels if label not in study.done]
            if not left:
                log(f"skip {job.name}: measured by the resumed run")
                continue
            job = dataclasses.replace(job, settings=len(left))
        elapsed = time.perf_counter() - t0
        estimate = study.estimate(job, steps)
        first = not report["results"]  # the top-priority job always runs
        if args.time_budget is not None and not first and elapsed + estimate > args.time_budget:
            report["skipped"].append({"job": job.name, "estimated_s": estimate,
                                      "reason": f"time budget: {elapsed:.0f} s elapsed + {estimate:.0f} s "
                                                f"estimated > {args.time_budget:g} s"})
            log(f"[{elapsed:6.1f}s] skip {job.name} (estimated {estimate:.0f} s)")
            save()
            continue
        _run_job(job, study, report, save, t0, log)
    report["complete"] = not report["skipped"] and not report["failed"]
    save()
    report["_thumbs"] = study.thumbs
    return report


# Settings that must agree for rows of an earlier run to stand next to new ones.
RESUME_KEYS = ("num_samples", "batch_size", "seed", "kid_subsets")


def _resume(report: dict, path: str, study: Study) -> dict:
    """`report` continued from the raw results at `path`: its rows are kept (and not re-measured)
    when the model, schedule, references and sampling settings are the same."""
    with open(path) as f:
        old = json.load(f)
    if old.get("format") != FORMAT:
        raise SystemExit(f"--resume {path}: not a quality_vs_steps results file")
    new_meta, old_meta = report["meta"], old["meta"]
    pairs = [("config_hash", old_meta.get("config_hash"), new_meta["config_hash"]),
             ("num_scales", old_meta.get("num_scales"), new_meta["num_scales"]),
             ("fid_stats", old["reference"].get("fid_stats"), report["reference"]["fid_stats"])]
    pairs += [(k, old_meta.get("settings", {}).get(k), new_meta["settings"][k]) for k in RESUME_KEYS]
    bad = [f"{k}: {a!r} there, {b!r} now" for k, a, b in pairs if a != b]
    if bad:
        raise SystemExit(f"--resume {path}: the runs differ ({'; '.join(bad)}); "
                         "use the same options or start a new --out")
    meta = dict(old_meta, settings=new_meta["settings"])
    meta["resumed"] = old_meta.get("resumed", []) + [{"date": new_meta["date"], "command": new_meta["command"],
                                                      "device": new_meta["device"]}]
    study.done = {row["label"] for row in old["results"]}
    return dict(report, meta=meta, results=list(old["results"]))


# ------------------------------------------------------------------------ the fit


def fit(report: dict, results_path: str, form: str = "auto") -> alpha_rule.AlphaRule:
    sweeps = sweeps_from(report)
    if not sweeps:
        raise ValueError(f"{results_path}: no α sweep (>= 2 PDS α values at one step count) to fit")
    meta = report["meta"]
    device = meta.get("device", {})
    provenance = {"results": os.path.basename(results_path), "study_command": meta.get("command"),
                  "study_date": meta.get("date"), "device": f"{device.get('device_kind')} ({device.get('platform')})",
                  "jax": device.get("jax"), "preset": meta.get("preset"),
                  "num_samples": meta.get("settings", {}).get("num_samples"),
                  "num_scales": meta.get("num_scales"), "checkpoint": meta.get("checkpoint"),
                  "filters": meta.get("filters"), "metric": "domain FID (fashion_mnist features) vs train stats",
                  "fit_date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if meta.get("resumed"):  # --resume: the later commands added settings
        provenance["resumed_commands"] = [r["command"] for r in meta["resumed"]]
    if meta.get("preset") != "gpu":
        provenance["warning"] = (f"fitted on a '{meta.get('preset')}' run: NOT a real measurement; do not install")
    return alpha_fit.fit_rule(sweeps, form=form, provenance=provenance)


# ---------------------------------------------------------------------- CLI


def load_config_file(path: str):
    """`get_config()` of an ml_collections config file (as `config_flags` loads it)."""
    spec = importlib.util.spec_from_file_location("quality_config", path)
    if spec is None:
        raise FileNotFoundError(f"config file {path} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def output_paths(out: str) -> Dict[str, str]:
    stem = os.path.splitext(out)[0]
    return {"results": out, "rule": stem + "_alpha_rule.json", "quality_png": stem + ".png",
            "alpha_png": stem + "_alpha.png", "samples_png": stem + "_samples.png"}


def write_fit(report: dict, results_path: str, paths: Dict[str, str], form: str, overwrite: bool,
              log=print) -> Optional[alpha_rule.AlphaRule]:
    try:
        rule = fit(report, results_path, form)
    except ValueError as e:
        log(f"no alpha rule: {e}")
        rule = None
    if rule is not None:
        alpha_fit.save_rule(rule, paths["rule"], overwrite=overwrite)
        q = rule.quality
        log(f"alpha rule ({rule.form}): {rule.formula()}")
        for line in alpha_fit.optima_lines(rule):
            log(line)
        if "power" in q["fid_regret"]:
            log(f"  power-law fit: {q['power_fit']}")
    io_utils.atomic_write_bytes(paths["alpha_png"], plot_alpha(report, rule), overwrite=overwrite)
    io_utils.atomic_write_bytes(paths["quality_png"], plot_quality(report), overwrite=overwrite)
    return rule


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="ml_collections config file of the model")
    parser.add_argument("--out", default=DEFAULT_OUT, help="raw results JSON; the other files go next to it")
    parser.add_argument("--num-samples", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--num-scales", type=int, help="model.num_scales: the full schedule (1000 for gpu)")
    parser.add_argument("--sweep-steps", type=int, nargs="*", help="PC steps N of the α sweeps")
    parser.add_argument("--alphas", type=float, nargs="*")
    parser.add_argument("--full-steps", type=int, nargs="*", help="long PC runs (vanilla, then --full-alphas)")
    parser.add_argument("--full-alphas", type=float, nargs="*")
    parser.add_argument("--deis-nfe", type=int, nargs="*")
    parser.add_argument("--ode-nfe", type=int, nargs="*", help="NFE budgets of Euler/Heun (incl. denoising)")
    parser.add_argument("--adaptive-tols", type=float, nargs="*")
    parser.add_argument("--kid-subsets", type=int)
    parser.add_argument("--time-budget", type=float, help="seconds; later settings that would overrun are skipped")
    parser.add_argument("--fid-stats", default=None, help="default: config.eval.stats_file (60k train)")
    parser.add_argument("--kid-stats", default=KID_FEATURES, help="statistics with raw features; '' = no KID")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fit", action="store_true", help="raw results only")
    parser.add_argument("--resume", metavar="RESULTS", help="keep the rows of an earlier raw results JSON "
                        "(same model and sampling settings) and measure only the missing settings; "
                        "--resume X --out X continues X in place")
    parser.add_argument("--fit-only", metavar="RESULTS", help="fit (and plot) from an existing raw results JSON")
    parser.add_argument("--form", choices=alpha_rule.FORMS + ("auto",), default="auto")
    parser.add_argument("--install", action="store_true", help=f"also write the rule to {alpha_rule.RULE_PATH}")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.command = "python benchmarks/quality_vs_steps.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    paths = output_paths(args.out)
    if args.fit_only:
        with open(args.fit_only) as f:
            report = json.load(f)
        if report.get("format") != FORMAT:
            raise SystemExit(f"{args.fit_only}: not a quality_vs_steps results file")
        if os.path.abspath(args.fit_only) != os.path.abspath(args.out):
            io_utils.atomic_write_json(args.out, report, overwrite=args.overwrite)
        rule = write_fit(report, args.fit_only, paths, args.form, overwrite=True)
        print(nfe_table(report))
        if args.install:
            if rule is None:
                raise SystemExit("nothing to install")
            if "warning" in rule.provenance:
                raise SystemExit(f"refusing to install: {rule.provenance['warning']}")
            alpha_fit.save_rule(rule, alpha_rule.RULE_PATH, overwrite=True)
            print(f"installed {alpha_rule.RULE_PATH}: {rule.formula()}")
        return {"report": report, "rule": rule}

    # Resuming into the results file rewrites it (every row kept) and the files drawn from it.
    in_place = bool(args.resume) and os.path.abspath(args.resume) == os.path.abspath(args.out)
    args.overwrite = args.overwrite or in_place
    for path in paths.values():
        io_utils.check_writable(path, args.overwrite)
    config = load_config_file(args.config)
    if args.num_scales:
        config.model.num_scales = args.num_scales
    args.fid_stats = args.fid_stats or str(config.eval.stats_file)
    report = run_study(config, args, args.out)
    thumbs = report.pop("_thumbs")
    samples_png = plot_samples(dict(report, _thumbs=thumbs))
    if samples_png:
        io_utils.atomic_write_bytes(paths["samples_png"], samples_png, overwrite=args.overwrite)
    print(summary_table(report))
    print(nfe_table(report))
    rule = None if args.no_fit else write_fit(report, args.out, paths, args.form, args.overwrite)
    print(f"wrote {', '.join(p for p in paths.values() if os.path.exists(p))} "
          f"({report['timing']['elapsed_s']:.0f} s, {len(report['results'])} settings, "
          f"{len(report['skipped'])} skipped)")
    return {"report": report, "rule": rule}


if __name__ == "__main__":
    main()
