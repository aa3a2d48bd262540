"""Throughput of the filter-estimation pass against the bare input pipeline.

For each host-device count (a subprocess per count, with
XLA_FLAGS=--xla_force_host_platform_device_count=N) and each resolution, this times

  pipeline   iterating pds_jax.data.get_dataset ('arrays' source over a memory-mapped
             .npy of synthetic uint8 RGB images) with nothing downstream;
  estimate   pds_jax.filters.estimate fed by that same pipeline (end to end);
  compute    pds_jax.filters.estimate over batches already in memory;

and reports images/s, the ratio estimate/pipeline (1.0 = the statistics are free; the
pipeline is the bottleneck) and how far the statistics of N devices are from those of
the first count (max relative difference of R and A).

The images are synthetic (seeded uniform noise, in-memory / memory-mapped), which is
enough for throughput: the FFT cost does not depend on the content. On a CPU host the
"devices" are threads of the same cores, so more devices do not mean more compute.

    python benchmarks/filter_estimation.py                       # small CPU defaults
    python benchmarks/filter_estimation.py --sizes 32,256 --devices 1,8 --output out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing the package
DEFAULT_OUTPUT = os.path.join(REPO, "benchmarks", "results", "filter_estimation_cpu.json")
# resolution → (images, batch size): small enough for a 2-core CPU in a few minutes
DEFAULT_WORK = {32: (4096, 64), 256: (256, 16), 1024: (32, 8)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="32,256,1024", help="comma-separated resolutions")
    p.add_argument("--devices", default="1,8", help="comma-separated host-device counts")
    p.add_argument("--images", default="", help="images per size, e.g. 1024,96,16 (default per size)")
    p.add_argument("--batch_size", default="", help="batch size per size, e.g. 64,16,8")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)  # internal: JSON task for a subprocess
    return p.parse_args(argv)


def _best_rate(fn, n, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def worker(task: dict) -> dict:
    """Runs inside the subprocess (its device count fixed by XLA_FLAGS)."""
    # Imported here, in the subprocess: JAX fixes the device count when it is first imported,
    # so it must not be imported before XLA_FLAGS is set for this worker.
    import jax
    import ml_collections
    import numpy as np

    from pds_jax import data, filters

    results = []
    for size, n, batch_size in task["work"]:
        path = os.path.join(task["tmp"], f"images_{size}.npy")
        cfg = ml_collections.ConfigDict({"data": dict(
            dataset="arrays", folder=path, image_size=size, num_channels=3, centered=False,
            random_flip=False, uniform_dequantization=False, tfds_data_dir="", split="train")})
        pipeline = lambda: data.get_dataset(cfg, batch_size=batch_size, num_images=n)
        run = lambda batches: filters.estimate(batches, size, 3, num_images=n, progress=False)

        filters.estimate([next(pipeline())], size, 3, num_images=None, progress=False)  # compile
        pipe_rate = _best_rate(lambda: sum(len(b) for b in pipeline()), n, task["repeats"])
        est_rate = _best_rate(lambda: run(pipeline()), n, task["repeats"])
        batches = list(pipeline())
        compute_rate = _best_rate(lambda: run(batches), n, task["repeats"])
        stats = run(batches)
        np.savez(os.path.join(task["tmp"], f"stats_{task['devices']}_{size}.npz"),
                 freq=stats.freq, space=stats.space)
        results.append({"size": size, "images": n, "batch_size": batch_size,
                        "pipeline_images_per_s": round(pipe_rate, 2),
                        "estimate_images_per_s": round(est_rate, 2),
                        "compute_only_images_per_s": round(compute_rate, 2),
                        "ratio_estimate_to_pipeline": round(est_rate / pipe_rate, 4)})
        print(f"[{jax.local_device_count()} device(s)] {size}²: pipeline {pipe_rate:.1f} img/s, "
              f"estimate {est_rate:.1f} img/s (ratio {est_rate / pipe_rate:.3f}), "
              f"compute only {compute_rate:.1f} img/s", file=sys.stderr, flush=True)
    return {"devices": jax.local_device_count(), "platform": jax.devices()[0].platform, "results": results}


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    import numpy as np

    from pds_jax.io_utils import atomic_write_json, check_writable

    check_writable(args.output, args.overwrite)
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(d) for d in args.devices.split(",")]
    images = [int(s) for s in args.images.split(",")] if args.images else [DEFAULT_WORK.get(s, (16, 8))[0] for s in sizes]
    batch = [int(s) for s in args.batch_size.split(",")] if args.batch_size else [DEFAULT_WORK.get(s, (16, 8))[1] for s in sizes]
    work = list(zip(sizes, images, batch))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for size, n, _ in work:
            np.save(os.path.join(tmp, f"images_{size}.npy"), rng.integers(0, 256, (n, size, size, 3), np.uint8))
        for count in counts:
            task = {"work": work, "repeats": args.repeats, "tmp": tmp, "devices": count}
            env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}",
                       PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(task)],
                                  env=env, stdout=subprocess.PIPE, text=True, check=True)
            runs[count] = json.loads(proc.stdout.strip().splitlines()[-1])
        agreement = {}
        for count in counts[1:]:
            for size, _, _ in work:
                a = np.load(os.path.join(tmp, f"stats_{counts[0]}_{size}.npz"))
                b = np.load(os.path.join(tmp, f"stats_{count}_{size}.npz"))
                agreement[f"{count}_vs_{counts[0]}_devices_{size}"] = {
                    k: float(np.max(np.abs(b[k] - a[k]) / np.maximum(np.abs(a[k]), 1e-30))) for k in ("freq", "space")}
    import jax

    report = {
        "benchmark": "filter estimation pass vs bare input pipeline",
        "data": "synthetic seeded uint8 RGB noise, memory-mapped .npy read through the 'arrays' pipeline",
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                 "load_average_1_5_15_min_at_end": [round(v, 2) for v in os.getloadavg()],
                 "jax": jax.__version__},
        "note": "host devices are forced with XLA_FLAGS and share the same CPU cores",
        "repeats": args.repeats,
        "runs": {str(k): v for k, v in runs.items()},
        "max_relative_difference": agreement,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(args.output, report, overwrite=args.overwrite)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
