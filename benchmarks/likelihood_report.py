"""Merge `--mode=likelihood` runs into one result file, comparing solver tolerances per image.

Each RUN is a `<name>=<run folder>` holding likelihood.json and batches/. The first run is
the reference; for every other run the images they share (the same first images of the
seeded shuffle, the same dequantisation noise and Hutchinson probes, batch by batch) are
compared: mean and max |Δbpd|, and NFE / seconds per batch next to the reference's.

    python benchmarks/likelihood_report.py --out benchmarks/results/likelihood_fashion_mnist_cpu.json \
        --time-logs tol1e-5=runs/lik/tol1e-5_n128.log -- \
        tol1e-5=runs/lik/tol1e-5_n128 tol1e-3=runs/lik/tol1e-3_n32 tol1e-4=runs/lik/tol1e-4_n32
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from pds_jax.io_utils import atomic_write_json  # noqa: E402
from pds_jax.likelihood import load_results  # noqa: E402

SUMMARY_KEYS = ("num_images", "batch_size", "split", "hutchinson_type", "rtol", "atol", "eps",
                "uniform_dequantization", "offset", "bpd_mean", "bpd_standard_error", "bpd_std",
                "nfe_per_batch", "nfe_mean", "seconds_per_batch", "wall_time_s", "checkpoint", "device")


def load_run(folder: str) -> dict:
    with open(os.path.join(folder, "likelihood.json")) as f:
        report = json.load(f)
    bpd, _, _ = load_results(os.path.join(folder, "batches"))
    summary = {k: report.get(k) for k in SUMMARY_KEYS}
    summary.update({"bpd_per_image": bpd.tolist(), "config": report["config"], "date": report["date"]})
    return summary


def process_time(log: str) -> dict:
    """User / system CPU seconds and elapsed wall time from a `/usr/bin/time -v` log."""
    fields = {"User time (seconds)": "user_s", "System time (seconds)": "system_s",
              "Elapsed (wall clock) time (h:mm:ss or m:ss)": "elapsed"}
    out = {}
    with open(log, errors="replace") as f:
        for line in f:
            key, _, value = line.strip().rpartition(": ")
            if key in fields:
                out[fields[key]] = value if fields[key] == "elapsed" else float(value)
    return out


def compare(reference: dict, other: dict) -> dict:
    n = min(len(reference["bpd_per_image"]), len(other["bpd_per_image"]))
    diff = np.asarray(other["bpd_per_image"][:n]) - np.asarray(reference["bpd_per_image"][:n])
    k = len(other["nfe_per_batch"])
    return {"images_compared": n, "mean_diff_bpd": float(diff.mean()), "max_abs_diff_bpd": float(np.abs(diff).max()),
            "nfe_per_batch": other["nfe_per_batch"], "reference_nfe_per_batch": reference["nfe_per_batch"][:k],
            "seconds_per_batch": other["seconds_per_batch"],
            "reference_seconds_per_batch": reference["seconds_per_batch"][:k]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--time-logs", nargs="*", default=[],
                        help="name=log of `/usr/bin/time -v` around that run (process CPU time)")
    parser.add_argument("runs", nargs="+", help="name=folder; the first is the reference")
    args = parser.parse_args()
    runs = {name: load_run(folder) for name, folder in (r.split("=", 1) for r in args.runs)}
    names = list(runs)
    for name, log in (t.split("=", 1) for t in args.time_logs):
        runs[name]["process_time"] = process_time(log)
    result = {"argv": sys.argv, "reference": names[0], "runs": runs,
              "tolerance_comparison": {n: compare(runs[names[0]], runs[n]) for n in names[1:]}}
    for name, run in runs.items():
        print(f"{name}: {run['bpd_mean']:.4f} ± {run['bpd_standard_error']:.4f} bits/dim over "
              f"{run['num_images']} images, NFE {run['nfe_per_batch']}, {run['wall_time_s']:.0f} s")
    for name, c in result["tolerance_comparison"].items():
        print(f"{name} vs {names[0]}: mean Δ {c['mean_diff_bpd']:+.2e}, max |Δ| {c['max_abs_diff_bpd']:.2e} "
              f"on {c['images_compared']} images")
    atomic_write_json(args.out, result, overwrite=args.overwrite)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
