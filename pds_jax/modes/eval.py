"""`main.py --mode=eval`: FID and KID of samples from the configured sampler.

    python main.py --mode=eval --config=configs/fashion_mnist_pds.py --workdir=runs/fm

Draws `config.eval.num_samples` images with whatever `config.sampling` describes (PC,
vanilla or PDS; probability-flow ODE; DEIS) in batches of **`config.eval.batch_size`**
(as score_sde's `evaluate`; `sampling.batch_size` is the sample mode's), computes the
features of `config.eval.feature_net`, and compares them with the reference statistics
in `config.eval.stats_file`:

* FID always (`pds_jax.metrics.fid_from_statistics`);
* KID when the reference file holds the raw features (`save_statistics` of statistics
  computed with `keep_features=True`); otherwise it is skipped and eval.json says why.

Outputs under `<workdir>/<folder>/` (a new folder per config and input files, resumable
like sample mode: an interrupted run started again with the same config, checkpoint,
filter and statistics files draws only the missing batches, with the same per-batch keys):

  batches/batch_<k>.npz   uint8 NHWC samples and NFE of batch k, written as it finishes
  samples.npz             all samples (uint8 NHWC)
  grid.png                the first 64 samples
  eval.json               FID, KID, number of samples, NFE, steps, wall times (sampling,
                          features), device, config hash, the sampler description

FID from few samples is biased upward (the covariance of N samples is noisy), so
compare numbers only at equal sample counts and with the same reference file.
"""

from __future__ import annotations

import math
import os
import time

import jax
import numpy as np

from pds_jax import distributed, feature_nets, inception, metrics, resources
from pds_jax import images as image_io
from pds_jax.data import get_data_inverse_scaler
from pds_jax.io_utils import atomic_save_npz, atomic_write_json
from pds_jax.modes.common import (GRID_SIZE, build_sampler, discarded_if_empty, draw_batches, image_shape,
                                  load_batches, load_score_fn, output_dir, run_header, run_inputs,
                                  sampler_report, write_progress)

FID_NOTE = ("FID from N samples is biased upward (more so for small N); compare values only at equal "
            "sample counts against the same reference statistics")


def feature_extractor(config):
    """`feature_nets.get_feature_fn` for config.eval (Inception weights from eval.inception_weights)."""
    name = str(config.eval.feature_net)
    weights = str(config.eval.get("inception_weights", "") or "") if name == "inception" else ""
    if name == "inception" and not weights and not os.environ.get(feature_nets.INCEPTION_ENV_VAR):
        raise ValueError(
            "config.eval.feature_net='inception' needs the FID Inception-v3 weights, which no package "
            f"ships: download {inception.WEIGHTS_URL}, convert it once with `python "
            f"scripts/convert_fid_inception_weights.py {inception.WEIGHTS_FILENAME} fid_inception.npz` "
            "(needs torch), then pass --config.eval.inception_weights=fid_inception.npz (or set "
            f"${feature_nets.INCEPTION_ENV_VAR}). For the Fashion-MNIST model use "
            "--config.eval.feature_net=fashion_mnist (shipped).")
    if weights:
        weights = resources.resolve(weights, what="config.eval.inception_weights",
                                    fix="convert it with scripts/convert_fid_inception_weights.py")
    return feature_nets.get_feature_fn(name, weights or None)


def reference_statistics(config, extractor):
    """The FeatureStatistics of config.eval.stats_file, checked against the feature net."""
    path = str(config.eval.stats_file or "")
    if not path:
        raise ValueError(
            "config.eval.stats_file is empty: point it at reference feature statistics made with the "
            f"same feature net ({config.eval.feature_net!r}), e.g. computed with "
            "pds_jax.metrics.compute_statistics(images, get_feature_fn(...), keep_features=True) and "
            "saved with pds_jax.metrics.save_statistics(path, stats)")
    return metrics.load_statistics(resources.resolve(path, what="config.eval.stats_file"),
                                   feature_net=extractor.name, dim=extractor.dim)


def _check_feature_input(extractor, shape) -> None:
    """Fail before sampling if the feature net cannot take images of `shape` (H, W, C)."""
    try:
        jax.eval_shape(extractor.apply, extractor.params, jax.ShapeDtypeStruct((1,) + tuple(shape), np.float32))
    except (ValueError, TypeError) as e:
        raise ValueError(f"config.eval.feature_net={extractor.name!r} cannot evaluate the model's "
                         f"{shape[0]}×{shape[1]}×{shape[2]} images: {e}") from e


def _eval_sizes(config):
    n = int(config.eval.num_samples)
    batch = int(config.eval.batch_size)
    if n < 2 or batch < 1:
        raise ValueError(f"config.eval.num_samples (got {n}) must be >= 2 (a covariance needs two "
                         f"samples) and config.eval.batch_size (got {batch}) >= 1")
    return n, min(batch, n)


def kid_reference(config, extractor, reference):
    """The statistics whose raw features KID compares against: config.eval.kid_stats_file, or
    else the FID reference (which may hold none; then KID is skipped with a note)."""
    path = str(config.eval.get("kid_stats_file", "") or "")
    if not path:
        return reference, str(config.eval.stats_file)
    kid_ref = metrics.load_statistics(resources.resolve(path, what="config.eval.kid_stats_file"),
                                      feature_net=extractor.name, dim=extractor.dim)
    if kid_ref.features is None:
        raise ValueError(f"config.eval.kid_stats_file={path} holds only mean/covariance, no raw features, "
                         "which KID needs; save it with compute_statistics(..., keep_features=True), "
                         "or set config.eval.kid_stats_file='' to skip KID")
    return kid_ref, path


def _kid(stats, kid_ref, path, num_samples):
    """(KID {'mean', 'std'} or None, a note saying how it was computed or why it was skipped)."""
    if kid_ref.features is None:
        return None, (
            f"skipped: {path} holds only mean/covariance, no raw features, which KID needs; set "
            "config.eval.kid_stats_file to statistics saved with keep_features=True (for Fashion-MNIST: "
            "checkpoints/fashion_mnist_classifier/fashion_mnist_test_stats.npz)")
    kid = metrics.kid_from_statistics(stats, kid_ref)
    return {"mean": kid.mean, "std": kid.std}, (
        f"unbiased MMD² (cubic kernel) against {path}, {metrics.KID_NUM_SUBSETS} subsets of "
        f"{min(metrics.KID_SUBSET_SIZE, num_samples, len(kid_ref.features))}")


def _prepare(config):
    """(extractor, reference statistics, image shape), failing before any sampling."""
    extractor = feature_extractor(config)
    shape = image_shape(config)
    _check_feature_input(extractor, shape)
    reference = reference_statistics(config, extractor)
    kid_ref = kid_reference(config, extractor, reference)
    if reference.image_size and tuple(reference.image_size) != tuple(shape):
        print(f"warning: the reference statistics were computed on {reference.image_size} images, the "
              f"samples are {shape}; the distance mixes resolution with quality")
    return extractor, reference, kid_ref, shape


def run(config, workdir: str, folder: str = "eval") -> dict:
    num_samples, batch = _eval_sizes(config)
    extractor, reference, (kid_ref, kid_path), shape = _prepare(config)
    sde, _model, _params, score_fn, ckpt = load_score_fn(config, workdir)
    sampler, setup = build_sampler(config, sde, (batch,) + shape, get_data_inverse_scaler(config))

    files = {"stats_file": resources.resolve(str(config.eval.stats_file))}
    if kid_ref is not reference:
        files["kid_stats_file"] = resources.resolve(kid_path)
    inputs = run_inputs(ckpt, setup, **files)
    out = output_dir(workdir, folder, config, inputs)
    num_batches = math.ceil(num_samples / batch)
    with discarded_if_empty(out):
        drawn = draw_batches(sampler, score_fn, jax.random.PRNGKey(config.sampling.seed), num_batches,
                             os.path.join(out, "batches"), desc=f"sampling {num_samples} images")
    samples, nfes = load_batches(os.path.join(out, "batches"), num_samples)

    start = time.perf_counter()
    stats = _statistics(samples, extractor, min(batch, 1000), keep_features=kid_ref.features is not None)
    feature_seconds = time.perf_counter() - start
    if not distributed.is_main():
        distributed.barrier(f"outputs written in {out}")
        return {}
    fid = metrics.fid_from_statistics(stats, reference)
    kid_result, kid_note = _kid(stats, kid_ref, kid_path, num_samples)

    known = [n for n in nfes if n is not None]
    sampling_seconds = [d["seconds"] for _, d in sorted(drawn.items())]
    report = run_header(config, "eval")
    report.update({
        "checkpoint": ckpt, "inputs": inputs, "output_dir": out, "fid": fid, "kid": kid_result,
        "kid_note": kid_note,
        "fid_note": FID_NOTE, "num_samples": int(samples.shape[0]), "batch_size": batch,
        "batch_size_source": "config.eval.batch_size",
        **sampler_report(sampler, setup),  # method, num_steps, sampler, preconditioner, pds_alpha
        "nfe_per_sample": float(np.mean(known)) if known else None, "nfe_per_batch": nfes,
        "feature_net": extractor.name,
        "reference": {"stats_file": str(config.eval.stats_file), "count": reference.count,
                      "dataset": reference.dataset, "image_size": list(reference.image_size),
                      "has_features": reference.features is not None,
                      "kid_stats_file": kid_path if kid_ref.features is not None else None},
        "wall_time": {"sampling_s": float(sum(sampling_seconds)),
                      "sampling_per_batch_s": sampling_seconds,
                      "first_batch_s_incl_compile": sampling_seconds[0] if sampling_seconds else None,
                      "features_s": feature_seconds},
        "resumed_batches": num_batches - len(drawn),
    })
    atomic_save_npz(os.path.join(out, "samples.npz"), {"images": samples}, overwrite=True)
    image_io.save_png(os.path.join(out, "grid.png"), image_io.make_grid(samples[:GRID_SIZE]), overwrite=True)
    atomic_write_json(os.path.join(out, "eval.json"), report, overwrite=True)
    write_progress(out, config, inputs, complete=True)
    _print_summary(report, extractor.name)
    distributed.barrier(f"outputs written in {out}")
    return report


def _merge_moments(counts, means, scatters):
    """(count, mean, scatter) of the union of groups, merged in order with the pairwise update of
    Chan, Golub & LeVeque (1979): δ = μ_b − μ_a, M₂ = M₂ᵃ + M₂ᵇ + δδᵀ nₐ n_b / (nₐ + n_b)."""
    n, mean, scatter = 0, None, None
    for nb, mean_b, scatter_b in zip(counts, means, scatters):
        nb = int(round(float(nb)))
        if nb == 0:
            continue
        if n == 0:
            n, mean, scatter = nb, mean_b, scatter_b
            continue
        delta = mean_b - mean
        total = n + nb
        mean = mean + delta * (nb / total)
        scatter = scatter + scatter_b + np.outer(delta, delta) * (n * nb / total)
        n = total
    return n, mean, scatter


def _statistics(samples, extractor, batch_size: int, keep_features: bool):
    """The feature statistics of `samples`; with P processes each computes the features of its
    contiguous share ([i·N//P, (i+1)·N//P)) and the float64 (count, mean, scatter) of the
    shares are merged (`_merge_moments`); the raw features (KID) are gathered in order."""
    if distributed.process_count() == 1:
        return metrics.compute_statistics(samples, extractor, batch_size=batch_size,
                                          keep_features=keep_features, dataset="samples")
    mine = samples[distributed.my_part(samples.shape[0])]
    feats = np.zeros((0, extractor.dim), np.float64)
    if mine.shape[0]:
        feats = np.concatenate([np.asarray(f, np.float64) for f in metrics.iterate_features(
            mine, extractor, batch_size, progress=distributed.is_main(), desc=f"{extractor.name} statistics")])
    mean = feats.mean(axis=0) if feats.shape[0] else np.zeros(extractor.dim)
    centred = feats - mean
    parts = distributed.gather_over_processes(
        {"count": np.float64(feats.shape[0]), "mean": mean, "scatter": centred.T @ centred})
    count, mean, scatter = _merge_moments(parts["count"], parts["mean"], parts["scatter"])
    features = None
    if keep_features:  # equal shapes for the gather: pad every share to the largest one
        rows = -(-samples.shape[0] // distributed.process_count())
        padded = np.zeros((rows, extractor.dim))
        padded[:feats.shape[0]] = feats
        gathered = distributed.gather_over_processes(padded)
        features = np.concatenate([g[:int(round(float(c)))] for g, c in zip(gathered, parts["count"])])
        features = features.astype(np.float32)
    if count < 2:
        raise ValueError(f"a covariance needs at least 2 images, got {count}")
    return metrics.FeatureStatistics(mean=mean, cov=0.5 * (scatter + scatter.T) / (count - 1), count=count,
                                     feature_net=extractor.name, dataset="samples",
                                     image_size=tuple(int(s) for s in samples.shape[1:]), features=features)


def _print_summary(report: dict, feature_net: str) -> None:
    kid = report["kid"]
    kid_text = f"KID {kid['mean']:.5f} ± {kid['std']:.5f}" if kid else "KID skipped (no raw reference features)"
    wall = report["wall_time"]
    print(f"{feature_net} FID {report['fid']:.4f}   {kid_text}   {report['num_samples']} samples, "
          f"{report['method']} {report['num_steps']} steps, NFE {report['nfe_per_sample']}   sampling "
          f"{wall['sampling_s']:.1f} s, features {wall['features_s']:.1f} s")
    print(f"wrote {os.path.join(report['output_dir'], 'eval.json')} and grid.png")
