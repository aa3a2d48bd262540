"""Metrics with bootstrap intervals for `quality_intervals.py` (its `--report`).

Three metrics of a set of uint8 samples, each with a 95% interval from the bootstrap standard error
(resampling the samples with replacement; the references are large and held fixed):

* FID (domain features vs the 60k train statistics). Per resample only the sample
  moments change, so tr√(C₁C₂) = Σ √eig(S C₁ S) with S = √C₂ computed once.
* KID: the unbiased MMD² with the cubic polynomial kernel k(x, y) = (xᵀy/d + 1)³ between
  all samples and all 10k test features (one estimate, not subset means); within a
  resample, pairs of copies of one sample are left out of the sample–sample term, as the
  unbiased estimator leaves out i = j.
* spectrum error: the radially averaged power spectrum P(r) = mean |FFT₂ x|² over images
  in [0, 1] (integer radius r in cycles per image, 1 ≤ r ≤ H/2), against the same of the
  training images; reported as the RMS over r of 10·log₁₀(P/P_train) in dB. It needs no
  feature network, and it is what PDS's frequency filter acts on.

Differences between two settings at the same N are bootstrapped paired: one index draw
for both, as sample i of every setting at one N comes from the same noise.
"""

from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional

import numpy as np
import scipy.linalg

import common
from pds_jax import alpha_law, fashion_mnist, feature_nets, io_utils, metrics, pds
from pds_jax.distances import polynomial_kernel
from pds_jax.resources import resolve
from pds_jax.sde import get_sde
from quality_intervals import load_setting, setting_name
from quality_vs_steps import KID_FEATURES, load_config_file

FORMAT = "pds_jax.quality_intervals/1"
METRICS = ("fid", "kid", "spectrum_db")


# ------------------------------------------------------------------- per-sample quantities
def radial_power(images: np.ndarray) -> np.ndarray:
    """(n, H/2) per-image radial power spectra of uint8 NHWC images (r = 1..H/2, channels summed)."""
    x = np.asarray(images, np.float64) / 255.0
    h, w = x.shape[1:3]
    power = (np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2).sum(-1) / (h * w)
    fy, fx = np.meshgrid(np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w, indexing="ij")
    radius = np.rint(np.hypot(fy, fx)).astype(int)
    bins = np.arange(1, min(h, w) // 2 + 1)
    return np.stack([power[:, radius == r].mean(1) for r in bins], axis=1)


class References:
    """The fixed references: train moments (FID), test features (KID), train spectrum."""

    def __init__(self, config, log=print):
        self.extractor = feature_nets.get_feature_fn(str(config.eval.feature_net))
        fid = metrics.load_statistics(resolve(str(config.eval.stats_file)), self.extractor.name,
                                      self.extractor.dim)
        self.mean, self.cov = np.asarray(fid.mean, np.float64), np.asarray(fid.cov, np.float64)
        self.sqrt_cov = np.real(scipy.linalg.sqrtm(self.cov))
        self.test = np.asarray(metrics.load_statistics(resolve(KID_FEATURES), self.extractor.name,
                                                       self.extractor.dim).features, np.float64)
        train, _ = fashion_mnist.load("train", config.data.get("folder") or None)
        self.spectrum = radial_power(fashion_mnist.pad_to_32(train)[..., None]).mean(0)
        self.test_images = fashion_mnist.pad_to_32(fashion_mnist.load("test")[0])[..., None]
        log(f"references: {fid.count} train moments, {len(self.test)} test features, "
            f"{len(train)} train spectra")

    @staticmethod
    def kyy_offdiagonal_mean(y: np.ndarray, block: int = 2000) -> float:
        """mean of k(y_i, y_j) over i != j, in blocks (10k x 10k at once is 800 MB)."""
        total = sum(polynomial_kernel(y[i:i + block], y).sum() for i in range(0, len(y), block))
        diagonal = np.sum((np.einsum("ij,ij->i", y, y) / y.shape[1] + 1.0) ** 3)
        return float((total - diagonal) / (len(y) * (len(y) - 1)))

    def features(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(metrics.compute_features(images, self.extractor, batch_size=500, progress=False),
                          np.float64)


class Scored:
    """Per-sample quantities of one sample set, from which any resample's metrics follow."""

    def __init__(self, feats: np.ndarray, spectra: np.ndarray, refs: References, kid_ref: np.ndarray,
                 kyy: float):
        self.feats, self.spectra, self.refs = feats, spectra, refs
        self.kxx = polynomial_kernel(feats, feats)
        self.kxy_rows = polynomial_kernel(feats, kid_ref).mean(1)
        self.kyy = kyy

    def values(self, idx: np.ndarray) -> np.ndarray:
        """(FID, KID, spectrum error in dB) of the resample `idx`."""
        f = self.feats[idx]
        mu, cov = f.mean(0), np.cov(f, rowvar=False)
        s = self.refs.sqrt_cov
        eig = np.clip(np.linalg.eigvalsh(s @ cov @ s), 0.0, None)
        fid = float(np.sum((mu - self.refs.mean) ** 2) + np.trace(cov) + np.trace(self.refs.cov)
                    - 2.0 * np.sum(np.sqrt(eig)))
        counts = np.bincount(idx, minlength=len(self.feats)).astype(np.float64)
        pair_sum = counts @ self.kxx @ counts - np.sum(counts ** 2 * np.diag(self.kxx))
        pairs = len(idx) ** 2 - np.sum(counts ** 2)
        kid = float(pair_sum / pairs + self.kyy - 2.0 * np.mean(self.kxy_rows[idx]))
        db = 10.0 * np.log10(self.spectra[idx].mean(0) / self.refs.spectrum)
        return np.array([fid, kid, float(np.sqrt(np.mean(db ** 2)))])


def interval(point: np.ndarray, draws: np.ndarray) -> Dict[str, Dict[str, float]]:
    """95% intervals θ ± 1.96·se, se the bootstrap standard error; the raw 2.5/97.5% bootstrap
    quantiles are kept beside them (`q025`, `q975`).

    The bootstrap is used for the spread only: resampling with replacement repeats samples,
    which raises FID (biased by ~1/n) in every resample, so percentile intervals sit above the
    estimate and their reflection (the basic interval) below it; both shifts are artefacts of
    the duplicates, the spread is not. Differences of settings at one N are paired, and the
    bias, equal for both, cancels there.
    """
    q_lo, q_hi = np.percentile(draws, [2.5, 97.5], axis=0)
    se = draws.std(axis=0, ddof=1)
    return {m: {"value": float(point[i]), "lo": float(point[i] - 1.96 * se[i]), "hi": float(point[i] + 1.96 * se[i]),
                "se": float(se[i]), "q025": float(q_lo[i]), "q975": float(q_hi[i])} for i, m in enumerate(METRICS)}


def bootstrap(scored: Scored, draws: np.ndarray) -> np.ndarray:
    """(B, 3) metrics of each resample (rows of `draws`: index arrays)."""
    return np.stack([scored.values(idx) for idx in draws])


def score_group(folders: List[str], refs: References, kyy: float, num_draws: int, log=print) -> List[dict]:
    """Rows of the settings at one N. Each setting's metrics use all its samples; differences
    between two settings are paired on their common first n samples (sample i of every setting
    at one N comes from the same noise), with one set of resamples for both."""
    settings = [s for s in (load_setting(f) for f in folders) if s["samples"] is not None]
    draws_cache: Dict[int, np.ndarray] = {}
    draws_for = lambda n: draws_cache.setdefault(  # noqa: E731
        n, np.random.default_rng(n).integers(0, n, size=(num_draws, n)))
    boot_cache: Dict[tuple, tuple] = {}

    def boot(row: dict, n: int):  # (point, resampled metrics) of the first n samples of a row
        key = (row["name"], n)
        if key not in boot_cache:
            scored = row["scored"]
            boot_cache[key] = (scored.values(np.arange(n)), bootstrap(scored, draws_for(n)))
        return boot_cache[key]

    rows = []
    for s in settings:
        images, n = s["samples"], len(s["samples"])
        scored = Scored(refs.features(images), radial_power(images), refs, refs.test, kyy)
        rows.append({"name": setting_name(s["steps"], s["setting"]), "steps": s["steps"], "setting": s["setting"],
                     "alpha": s["alpha"], "eps": s["eps"], "nfe": s["nfe"], "num_samples": n,
                     "nonfinite": s["nonfinite"], "sample_seconds": float(np.sum(s["seconds"])),
                     "scored": scored, "blocks": blocks(scored, s["batch_size"])})
        rows[-1]["metrics"] = interval(*boot(rows[-1], n))
        rows[-1]["spectrum_db_per_radius"] = _db(scored, n).tolist()
        m = rows[-1]["metrics"]
        log(f"{rows[-1]['name']:16s} n={n} FID {m['fid']['value']:.2f} [{m['fid']['lo']:.2f}, {m['fid']['hi']:.2f}]"
            f"  KID {m['kid']['value']:.4f}  spectrum {m['spectrum_db']['value']:.2f} dB")
    by_setting = {r["setting"]: r for r in rows}
    pairs = [("5", "vanilla")] + [("auto", s) for s in by_setting if s != "auto"]
    for a, b in pairs:
        if a in by_setting and b in by_setting:
            ra, rb = by_setting[a], by_setting[b]
            n = min(ra["num_samples"], rb["num_samples"])
            (pa, da), (pb, db) = boot(ra, n), boot(rb, n)
            ra.setdefault("minus", {})[b] = dict(interval(pa - pb, da - db), num_samples=n)
    pds_rows = [r for r in rows if r["setting"] != "vanilla"]
    if "auto" in by_setting and len(pds_rows) > 1:
        by_setting["auto"]["regret"] = regret(pds_rows, boot)
    for r in rows:
        del r["scored"]
    return rows


def blocks(scored: Scored, size: int) -> dict:
    """The metrics of each disjoint block of `size` consecutive samples (one sampling batch):
    what a study with `size` samples would have reported for each of the noise draws."""
    values = np.stack([scored.values(np.arange(i, i + size)) for i in range(0, len(scored.feats) - size + 1, size)])
    return {"size": size, **{m: values[:, i].tolist() for i, m in enumerate(METRICS)}}


def regret(pds_rows: List[dict], boot) -> dict:
    """auto's regret: its metric minus the best (smallest) of the PDS settings measured at this N
    (auto among them, so ≥ 0), on their common first n samples. The best setting is chosen
    again in every resample, so the interval includes the uncertainty of which α is best;
    `best` names the point estimate's argmin, `auto_best_share` how often auto is it."""
    n = min(r["num_samples"] for r in pds_rows)
    points, draws = (np.stack(x) for x in zip(*(boot(r, n) for r in pds_rows)))  # (S, 3), (S, B, 3)
    auto = [r["setting"] for r in pds_rows].index("auto")
    share = np.mean(draws.argmin(0) == auto, axis=0)
    return {"num_samples": n, "compared": [r["setting"] for r in pds_rows],
            "best": {m: pds_rows[i]["setting"] for m, i in zip(METRICS, points.argmin(0))},
            "auto_best_share": dict(zip(METRICS, share.tolist())),
            **interval(points[auto] - points.min(0), draws[auto] - draws.min(0))}


def surrogate_db(config, statistics: dict, steps: int, alpha: Optional[float]) -> List[float]:
    """10 log10 of the radially averaged output/data variance ratio that the exact Gaussian
    analysis predicts for this setting (`pds_jax.alpha_law.surrogate_variance_ratio`, built
    from the model's own filter statistics), per radius r = 1..H/2, like the samples' error."""
    ratio = alpha_law.surrogate_variance_ratio(statistics.get("freq"), statistics.get("space"), get_sde(config), steps,
                                               [alpha_law.VANILLA_ALPHA if alpha is None else alpha],
                                               snr=float(config.sampling.snr))[0].mean(-1)
    h, w = ratio.shape
    fy, fx = np.meshgrid(np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w, indexing="ij")
    radius = np.rint(np.hypot(fy, fx)).astype(int)
    return [float(10 * np.log10(ratio[radius == r].mean())) for r in range(1, min(h, w) // 2 + 1)]


def _db(scored: Scored, n: int) -> np.ndarray:
    return 10.0 * np.log10(scored.spectra[:n].mean(0) / scored.refs.spectrum)


def floor(refs: References, n: int, num_draws: int, block: int) -> dict:
    """The metrics of n real test images (KID against the other test features): the finite-n floor."""
    images = refs.test_images[:n]
    rest = refs.test[n:]
    scored = Scored(refs.features(images), radial_power(images), refs, rest, refs.kyy_offdiagonal_mean(rest))
    draws = np.random.default_rng(1).integers(0, n, size=(num_draws, n))
    return {"num_samples": n, "note": f"the first {n} test images; KID against the other {len(rest)}",
            "metrics": interval(scored.values(np.arange(n)), bootstrap(scored, draws)),
            "spectrum_db_per_radius": _db(scored, n).tolist(), "blocks": blocks(scored, block)}


def report(args, log=print) -> dict:
    config = load_config_file(args.config)
    args.out, png = common.output_paths(args.out, "quality_intervals", args.overwrite)  # a free name
    refs = References(config, log)
    kyy = refs.kyy_offdiagonal_mean(refs.test)
    folders = sorted(glob.glob(os.path.join(args.samples, "N*_*")))
    steps = sorted({int(os.path.basename(f)[1:5]) for f in folders})
    rows = []
    for n in steps:
        rows += score_group([f for f in folders if os.path.basename(f).startswith(f"N{n:04d}_")], refs, kyy,
                            args.bootstrap, log)
    if not rows:
        raise SystemExit(f"--samples {args.samples}: no sampled setting; run the sampling first")
    statistics, _ = pds.config_filter_statistics(config)  # read once for every row
    for r in rows:  # what the exact Gaussian analysis predicts for the same spectrum error
        db = surrogate_db(config, statistics, r["steps"], r["alpha"])
        r["surrogate_spectrum_db_per_radius"] = db
        r["surrogate_spectrum_db"] = float(np.sqrt(np.mean(np.square(db))))
    first = io_utils.load_json(os.path.join(folders[0], "setting.json"), "setting record")  # no samples needed
    out = {"format": FORMAT, "command": args.command, "samples": os.path.relpath(args.samples, os.getcwd()),
           "model": {k: first[k] for k in ("config_file", "config_hash", "checkpoint", "num_scales", "snr",
                                         "batch_size", "seed")},
           "sampled_on": first["device"], "bootstrap": {"draws": args.bootstrap, "interval": "value ± 1.96 bootstrap standard errors (raw quantiles q025/q975 beside)"},
           "floor": floor(refs, max(r["num_samples"] for r in rows), args.bootstrap, first["batch_size"]),
           "results": rows}
    io_utils.atomic_write_json(args.out, out, overwrite=args.overwrite)
    from quality_intervals_plot import plot, table
    io_utils.atomic_write_bytes(png, plot(out), overwrite=args.overwrite)
    log(table(out))
    log(f"wrote {args.out} and {png}")
    return out
