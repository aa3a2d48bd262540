"""Train the shipped Fashion-MNIST feature net and write its reference statistics.

    python scripts/train_feature_net.py            # CPU is enough (~15 min on 2 cores)

Writes, into --out-dir (default pds_jax/assets/checkpoints/fashion_mnist_classifier/), atomically:
  params.msgpack                  classifier params (flax.serialization msgpack)
  fashion_mnist_train_stats.npz   mean/cov of the 128-d features of all 60k TRAIN
                                  images (28×28 zero-padded to 32×32, in [0, 1])
  training_log.json               settings, timings, accuracies, sanity FD
  README.md                       the same, for humans
Needs the Fashion-MNIST IDX files (Debian `dataset-fashion-mnist`, or
$PDS_JAX_FASHION_MNIST_DIR).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import flax  # noqa: E402
import jax  # noqa: E402

from pds_jax import fashion_mnist, feature_nets, metrics  # noqa: E402
from pds_jax.io_utils import atomic_write_json, atomic_write_text  # noqa: E402


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Train the Fashion-MNIST feature net.")
    parser.add_argument("--out-dir", default=os.path.relpath(feature_nets.CLASSIFIER_DIR))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--max-train-images", type=int, default=None,
                        help="train on the first N images only (smoke tests; stats use all 60k)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)

    paths = {name: os.path.join(args.out_dir, name) for name in
             ("params.msgpack", "fashion_mnist_train_stats.npz", "training_log.json", "README.md")}
    if not args.overwrite:
        taken = [p for p in paths.values() if os.path.exists(p)]
        if taken:
            raise SystemExit(f"refusing to overwrite {', '.join(taken)}; pass --overwrite")

    train_u8, train_labels = fashion_mnist.load("train", args.data_dir)
    test_u8, test_labels = fashion_mnist.load("test", args.data_dir)
    train_x = feature_nets.prepare_fashion_mnist(train_u8)
    test_x = feature_nets.prepare_fashion_mnist(test_u8)

    start = time.time()
    limit = args.max_train_images
    params = feature_nets.train_classifier(train_x[:limit], train_labels[:limit], epochs=args.epochs,
                                           batch_size=args.batch_size,
                                           learning_rate=args.learning_rate, seed=args.seed)
    params = jax.block_until_ready(params)
    train_seconds = time.time() - start
    test_acc = feature_nets.classifier_accuracy(params, test_x, test_labels)
    test_acc_2000 = feature_nets.classifier_accuracy(params, test_x[:2000], test_labels[:2000])
    train_acc = feature_nets.classifier_accuracy(params, train_x, train_labels)
    print(f"trained in {train_seconds:.0f} s; test accuracy {test_acc:.4f} "
          f"(first 2000: {test_acc_2000:.4f}), train accuracy {train_acc:.4f}")
    feature_nets.save_classifier_params(paths["params.msgpack"], params, args.overwrite)

    extractor = feature_nets.FeatureExtractor("fashion_mnist", 128,
                                              feature_nets.classifier_features, params)
    start = time.time()
    train_stats = metrics.compute_statistics(train_x, extractor, batch_size=500,
                                             dataset="fashion_mnist/train")
    stats_seconds = time.time() - start
    metrics.save_statistics(paths["fashion_mnist_train_stats.npz"], train_stats, args.overwrite)
    test_stats = metrics.compute_statistics(test_x, extractor, batch_size=500,
                                            dataset="fashion_mnist/test")
    fd_train_test = metrics.fid_from_statistics(train_stats, test_stats)
    half = len(train_x) // 2
    fd_halves = metrics.fid_from_statistics(
        metrics.compute_statistics(train_x[:half], extractor, 500, progress=False),
        metrics.compute_statistics(train_x[half:], extractor, 500, progress=False))
    print(f"FD(train stats, test features) = {fd_train_test:.4f}; "
          f"FD(train 1st half, 2nd half) = {fd_halves:.4f}")

    command = "python " + " ".join(shlex.quote(a) for a in
                                   ["scripts/train_feature_net.py"] + sys.argv[1:])
    hardware = f"{_cpu_name()}, {os.cpu_count()} CPU cores, no accelerator ({jax.devices()[0].platform})"
    # other jobs may share the CPUs; the load average tells how much the time is inflated
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    log = dict(command=command, epochs=args.epochs, batch_size=args.batch_size,
               learning_rate=args.learning_rate, seed=args.seed,
               train_seconds=round(train_seconds, 1), stats_seconds=round(stats_seconds, 1),
               test_accuracy=test_acc, test_accuracy_first_2000=test_acc_2000,
               train_accuracy=train_acc, fd_train_stats_vs_test=fd_train_test,
               fd_train_halves=fd_halves, hardware=hardware, load_average_at_end=load,
               versions=dict(python=platform.python_version(), jax=jax.__version__,
                             flax=flax.__version__))
    atomic_write_json(paths["training_log.json"], log, args.overwrite)
    atomic_write_text(paths["README.md"], f"""# Fashion-MNIST feature net (pds_jax)

A small CNN classifier (`pds_jax.feature_nets.FashionMNISTClassifier`) whose 128-d
penultimate layer is the domain-specific "FID" feature of pds_jax
(`get_feature_fn('fashion_mnist')`). Input: (B, 32, 32, 1) in [0, 1], i.e. the 28×28
images zero-padded by 2 pixels (`fashion_mnist.pad_to_32`). FIDs computed with it are
comparable only with numbers from the same weights — not with Inception FIDs.

| | |
|---|---|
| command | `{command}` |
| data | Fashion-MNIST (Debian `dataset-fashion-mnist`): trained on {len(train_x[:limit]):,} train images, tested on 10,000 |
| training | {args.epochs} epoch(s), batch {args.batch_size}, AdamW (weight decay 1e-4), one-cycle cosine LR peak {args.learning_rate}, seed {args.seed} |
| training time | {train_seconds / 60:.1f} min (then {stats_seconds:.0f} s for the 60,000-image reference statistics) |
| hardware | {hardware}; load average (1/5/15 min) at the end: {load} |
| software | Python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__} |
| **test accuracy** | **{100 * test_acc:.2f} %** (10,000 images; first 2,000: {100 * test_acc_2000:.2f} %) |
| train accuracy | {100 * train_acc:.2f} % |

Files:
- `params.msgpack` — params, `flax.serialization.to_bytes`; load with
  `pds_jax.feature_nets.load_classifier_params()`.
- `fashion_mnist_train_stats.npz` — `pds_jax.metrics` statistics (mean, cov in float64)
  of all 60,000 TRAIN images; load with `pds_jax.metrics.load_statistics(path, 'fashion_mnist')`.

Sanity numbers (Fréchet distance of these features): train statistics vs the 10,000
test images: {fd_train_test:.4f}; first vs second half of the train set: {fd_halves:.4f}.
""", args.overwrite)
    print("wrote", ", ".join(paths.values()))


if __name__ == "__main__":
    main()
