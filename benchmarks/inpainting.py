"""Inpainting quality, vanilla vs PDS, at the full schedule and at 1/10 of it (CPU-sized).

Two parts, both written into one JSON (rewritten after every finished setting):

* model: the embedded Fashion-MNIST NCSN++ (configs/fashion_mnist_pds.py, N = 500) on
  the first images of the Fashion-MNIST test split with the centred 16×16 box missing;
  per setting the masked-region MSE to the original ([0, 1] units, mean ± standard
  error over images) and the domain FID of the completed images against the shipped
  train-set statistics (`--mode=eval`'s feature net). FID from few images is biased
  upward, so every setting also reports FID on the first `--fid-common` images (equal
  counts), and the originals' own FID at those counts is the floor.
* oracle: KL per masked dimension between a full-covariance Gaussian fit of the
  inpainted pixels and the exact (Schur-complement) conditional, on 1/f² oracles, with
  the KL of as many exact samples as the estimator's floor.

    nice -n 10 python benchmarks/inpainting.py --part=oracle --part=model \
        --out benchmarks/results/inpainting_cpu.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from PIL import Image, ImageDraw  # noqa: E402

from benchmarks.pil_plot import _font  # noqa: E402
from pds_jax import conditional_gaussian as cg  # noqa: E402
from pds_jax import feature_nets, metrics, pds  # noqa: E402
from pds_jax import images as image_io  # noqa: E402
from pds_jax.configs.fashion_mnist_pds import get_config  # noqa: E402
from pds_jax.controllable import get_pc_inpainter  # noqa: E402
from pds_jax.data import get_dataset  # noqa: E402
from pds_jax.io_utils import atomic_save_npz, atomic_write_json  # noqa: E402
from pds_jax.masks import box_mask  # noqa: E402
from pds_jax.oracles import GaussianOracle  # noqa: E402
from pds_jax.precond import Preconditioner  # noqa: E402
from pds_jax.resources import resolve  # noqa: E402
from pds_jax.score_model import load_score_model  # noqa: E402
from pds_jax.sde import VESDE  # noqa: E402

MODEL_SETTINGS = [  # (label, speed_up, alpha or None for vanilla), in the order they run
    ("vanilla N/10", 10, None), ("pds a=5 N/10", 10, 5.0),
    ("vanilla N", 1, None), ("pds a=5 N", 1, 5.0), ("pds a=auto N/10", 10, "auto"),
]


def oracle_rows(size: int, n: int, seed: int = 0) -> list:
    """KL/dim of vanilla and PDS (α = 5, the oracle's own statistics) at N = 1000 and 100."""
    shape = (size, size, 1)
    oracle = GaussianOracle.natural_image(shape)
    sde = VESDE(0.01, 50.0, N=1000)
    data = np.asarray(oracle.sample(jax.random.PRNGKey(seed), 1))[0]
    mask = box_mask(shape)
    mean, cov, unknown = cg.conditional_gaussian(oracle, data, mask)
    exact = np.tile(data.reshape(1, -1), (n, 1))
    exact[:, unknown] = np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)
    base = dict(oracle=f"natural_image{shape} gamma=2", mask="centre box (half size)", unknown=int(unknown.size),
                samples=n, sde="VESDE(0.01, 50, N=1000)")
    rows = [dict(base, label="exact samples (floor)",
                 kl_per_dim=cg.kl_per_dimension(exact.reshape((n,) + shape), oracle, data, mask))]
    pds = Preconditioner.from_arrays(*oracle.filter_statistics(), alpha=5.0)
    for label, speed_up, precond, corrector in [
            ("vanilla N", 1, None, "langevin"), ("pds N", 1, pds, "langevin"),
            ("vanilla N/10", 10, None, "langevin"), ("pds N/10", 10, pds, "langevin"),
            ("vanilla predictor-only N", 1, None, "none")]:
        start = time.perf_counter()
        inpainter = get_pc_inpainter(sde, (n,) + shape, corrector=corrector, precond=precond,
                                     speed_up=speed_up)
        x = np.asarray(inpainter(jax.random.PRNGKey(seed + 1), oracle.score_fn(sde),
                                 np.broadcast_to(data, (n,) + shape), mask))
        fit = x.reshape(n, -1)[:, unknown]
        rows.append(dict(base, label=label, steps=inpainter.num_steps, nfe=inpainter.nfe,
                         kl_per_dim=cg.kl_per_dimension(x, oracle, data, mask),
                         mean_rmse=float(np.sqrt(np.mean((fit.mean(0) - mean) ** 2))),
                         var_ratio=float(np.mean(fit.var(0) / np.diag(cov))),
                         seconds=time.perf_counter() - start))
        print(rows[-1], flush=True)
    return rows


def fid(images01, extractor, reference):
    stats = metrics.compute_statistics(images01, extractor, batch_size=256, progress=False)
    return metrics.fid_from_statistics(stats, reference)


def model_rows(args, result, path) -> list:
    config = get_config()
    sde, _, _, score_fn, _ = load_score_model(config, config.sampling.checkpoint)
    extractor = feature_nets.get_feature_fn(str(config.eval.feature_net))
    reference = metrics.load_statistics(resolve(config.eval.stats_file, what="config.eval.stats_file"),
                                        extractor.name)
    n_max = max(args.images_fast, args.images_full)
    images = np.concatenate(list(get_dataset(config, split="test", batch_size=n_max, num_images=n_max)))
    mask = box_mask(images.shape[1:])
    unknown = np.broadcast_to(mask < 0.5, images.shape[1:])
    floors = {str(k): fid(images[:k], extractor, reference)
              for k in sorted({args.fid_common, args.images_fast, args.images_full}) if k >= 2}
    result["model_meta"] = dict(config="configs/fashion_mnist_pds.py", num_scales=int(config.model.num_scales),
                                mask="centre 16x16 box of 32x32", split="test", reference=config.eval.stats_file,
                                originals_fid=floors, batch=args.batch)
    rows = result.setdefault("model", [])
    done = {r["label"] for r in rows}
    for label, speed_up, alpha in MODEL_SETTINGS:
        n = args.images_fast if speed_up > 1 else args.images_full
        if label in done or n == 0:
            continue
        cfg = config.copy_and_resolve_references()
        cfg.sampling.pds.speed_up = float(speed_up)
        if alpha is None:
            cfg.sampling.pds.freq_filter = cfg.sampling.pds.space_filter = ""
        setup = pds.from_config(cfg, sde, alpha=alpha)  # None: the config's α (vanilla: no filters)
        precond = setup.precond
        inpainter = get_pc_inpainter(sde, (args.batch,) + images.shape[1:], precond=precond, speed_up=speed_up)
        start, out = time.perf_counter(), []
        for b in range(0, n, args.batch):
            data = images[b:b + args.batch]
            out.append(np.asarray(inpainter(jax.random.fold_in(jax.random.PRNGKey(0), b // args.batch),
                                            score_fn, data, mask)))
        x = np.clip(np.concatenate(out)[:n], 0.0, 1.0)
        err = ((x - images[:n]) ** 2)[:, unknown].mean(axis=1)
        rows.append(dict(label=label, speed_up=speed_up, steps=inpainter.num_steps, nfe=inpainter.nfe,
                         alpha=setup.alpha, images=n, masked_mse=float(err.mean()),
                         masked_mse_se=float(err.std(ddof=1) / np.sqrt(n)),
                         fid=fid(x, extractor, reference),
                         fid_common=fid(x[:args.fid_common], extractor, reference),
                         fid_common_images=args.fid_common, sample_seconds=time.perf_counter() - start))
        print(rows[-1], flush=True)
        atomic_write_json(path, result, overwrite=True)
        atomic_save_npz(os.path.splitext(path)[0] + f"_samples_{len(rows) - 1}.npz",
                        {"label": np.str_(label), "samples": (x[:args.keep] * 255).round().astype(np.uint8),
                         "originals": (images[:args.keep] * 255).round().astype(np.uint8)}, overwrite=True)
    return rows


def figure(result_path: str, out_png: str, scale: int = 3) -> str:
    """Rows of the kept images: masked input | each finished setting | original, with a header."""
    files = sorted(glob.glob(os.path.splitext(result_path)[0] + "_samples_*.npz"))
    columns, labels, originals = [], [], None
    for f in files:
        with np.load(f) as data:
            labels.append(str(data["label"]))
            columns.append(data["samples"])
            originals = data["originals"]
    n = min(len(c) for c in columns)
    mask = box_mask(originals.shape[1:])
    masked = (originals[:n] * mask + 128 * (1 - mask)).astype(np.uint8)
    panels = [masked] + [c[:n] for c in columns] + [originals[:n]]
    labels = ["input"] + labels + ["original"]
    stacked = np.stack(panels, axis=1).reshape((-1,) + originals.shape[1:])
    grid = image_io.make_grid(stacked, nrow=len(panels))
    grid = np.kron(grid, np.ones((scale, scale, 1), np.uint8))
    image = Image.fromarray(grid[..., 0]).convert("RGB")
    header = 18
    canvas = Image.new("RGB", (image.width, image.height + header), "white")
    canvas.paste(image, (0, header))
    draw, cell = ImageDraw.Draw(canvas), (originals.shape[2] + 2) * scale
    for k, label in enumerate(labels):
        draw.text((2 * scale + k * cell, 3), label.replace("pds ", "PDS "),
                  fill="black", font=_font(10))
    os.makedirs(os.path.dirname(out_png) or ".", exist_ok=True)
    canvas.save(out_png)
    return out_png


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", action="append", choices=["oracle", "model"])
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "inpainting_cpu.json"))
    parser.add_argument("--images-fast", type=int, default=128)
    parser.add_argument("--images-full", type=int, default=16)
    parser.add_argument("--fid-common", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--keep", type=int, default=8, help="images kept per setting for the docs figure")
    parser.add_argument("--oracle-samples", type=int, default=2000)
    parser.add_argument("--figure", default="", help="only draw this PNG from the kept samples of --out")
    args = parser.parse_args(argv)
    if args.figure:
        print(figure(args.out, args.figure))
        return
    parts = args.part or ["oracle", "model"]
    result = {"complete": False, "argv": sys.argv[1:], "device": jax.devices()[0].device_kind,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if os.path.exists(args.out):  # resume: keep the finished rows
        with open(args.out) as f:
            result.update({k: v for k, v in json.load(f).items() if k in ("oracle", "model", "model_meta")})
    if "oracle" in parts and "oracle" not in result:
        result["oracle"] = oracle_rows(8, args.oracle_samples)
        atomic_write_json(args.out, result, overwrite=True)
    if "model" in parts:
        model_rows(args, result, args.out)
    result["complete"] = True
    atomic_write_json(args.out, result, overwrite=True)


if __name__ == "__main__":
    main()
