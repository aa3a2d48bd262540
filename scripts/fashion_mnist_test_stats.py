"""Write the Fashion-MNIST TEST-set reference statistics, raw features included (for KID).

    python scripts/fashion_mnist_test_stats.py        # ~10 s on a CPU

Features of the shipped classifier (`get_feature_fn('fashion_mnist')`) of all 10,000 test
images (28×28 zero-padded to 32×32, in [0, 1]) → `pds_jax.metrics` statistics with
`keep_features=True` (10,000 × 128 float32, ~2.5 MB compressed), written to
pds_jax/assets/checkpoints/fashion_mnist_classifier/fashion_mnist_test_stats.npz. The train-set file
next to it holds mean/covariance only; this one lets eval mode and
benchmarks/quality_vs_steps.py report KID too. Needs the IDX files (Debian
`dataset-fashion-mnist` or $PDS_JAX_FASHION_MNIST_DIR).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pds_jax import fashion_mnist, feature_nets, metrics  # noqa: E402

DEFAULT_OUT = os.path.join(feature_nets.CLASSIFIER_DIR, "fashion_mnist_test_stats.npz")


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.relpath(DEFAULT_OUT))
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    images, _ = fashion_mnist.load("test", args.data_dir)
    extractor = feature_nets.get_feature_fn("fashion_mnist")
    stats = metrics.compute_statistics(feature_nets.prepare_fashion_mnist(images), extractor,
                                       batch_size=500, keep_features=True, dataset="fashion_mnist/test")
    metrics.save_statistics(args.out, stats, overwrite=args.overwrite)
    train = metrics.load_statistics(feature_nets.CLASSIFIER_TRAIN_STATS, "fashion_mnist")
    print(f"wrote {args.out}: {stats.count} test images, {stats.dim}-d features; "
          f"FID(test vs train statistics) = {metrics.fid_from_statistics(stats, train):.4f}")
    return args.out


if __name__ == "__main__":
    main()
