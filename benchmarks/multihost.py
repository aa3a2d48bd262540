"""Sample mode on P processes × D devices against 1 × P·D: wall time, and the same images?

Each layout runs the real command line (`main.py --mode=sample`) as P processes talking
through a coordinator on 127.0.0.1 (CPU: `--xla_force_host_platform_device_count=D` per
process, gloo collectives), in a fresh workdir, and records the total wall time (start-up
and compile included), process 0's time per batch after the first, and whether the
samples are byte-identical to the first layout's. On one machine this measures the
overhead of the multi-controller runtime (cross-process collectives of the Langevin step
size), not a speed-up: all processes share the same cores.

    python benchmarks/multihost.py                              # 1x8 and 2x4, the embedded model
    python benchmarks/multihost.py --layouts 1x8,2x4,4x2 --num_samples 32 --set sampling.pds.speed_up=10
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import ROOT, ResultWriter, format_table, header, output_paths

MAIN = os.path.join(ROOT, "main.py")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_layout(processes: int, devices: int, args, workdir: str, timeout: float) -> dict:
    """Run `main.py` as `processes` × `devices`; {'wall_s', 'returncodes', 'stderr_tail'}."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    base = [sys.executable, MAIN, f"--config={args.config}", f"--workdir={workdir}", "--mode=sample",
            f"--config.sampling.num_samples={args.num_samples}", f"--config.sampling.batch_size={args.batch_size}",
            *[f"--config.{kv}" for kv in args.set]]
    port = free_port()
    flags = [[] if processes == 1 else [f"--coordinator_address=127.0.0.1:{port}",
                                        f"--num_processes={processes}", f"--process_id={i}"]
             for i in range(processes)]
    logs = [tempfile.TemporaryFile("w+") for _ in range(processes)]
    start = time.perf_counter()
    procs = [subprocess.Popen(base + f, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
             for f, log in zip(flags, logs)]
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    logs[0].seek(0)
    return {"wall_s": wall, "returncodes": codes, "stderr_tail": logs[0].read()[-1500:] if any(codes) else ""}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="fashion_mnist_pds")
    parser.add_argument("--layouts", default="1x8,2x4", help="PxD,... (processes × devices per process)")
    parser.add_argument("--num_samples", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--set", action="append", default=["sampling.pds.speed_up=20"],
                        help="a config override KEY=VALUE (repeatable)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", default="")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    layouts = [tuple(int(v) for v in item.split("x")) for item in args.layouts.split(",")]
    json_path, png_path = output_paths(args.out, "multihost", args.overwrite)
    writer = ResultWriter(json_path, png_path)
    result = header("multihost", sys.argv if argv is None else argv, vars(args))
    result.update({"cases": [], "complete": False})
    reference, rows = None, []
    with tempfile.TemporaryDirectory() as scratch:
        for processes, devices in layouts:
            workdir = os.path.join(scratch, f"{processes}x{devices}")
            case = {"processes": processes, "devices_per_process": devices,
                    **run_layout(processes, devices, args, workdir, args.timeout)}
            samples_file = os.path.join(workdir, "samples", "samples.npz")
            if not any(case["returncodes"]) and os.path.exists(samples_file):
                with open(os.path.join(workdir, "samples", "run.json")) as f:
                    run = json.load(f)
                case["mean_batch_s_after_compile"] = run["mean_batch_s_after_compile"]
                case["first_batch_s_incl_compile"] = run["first_batch_s_incl_compile"]
                samples = np.load(samples_file)["images"]
                reference = samples if reference is None else reference
                case["identical_to_first_layout"] = bool(np.array_equal(samples, reference))
            result["cases"].append(case)
            writer.write(result)
            rows.append([f"{processes}x{devices}", f"{case['wall_s']:.1f}",
                         str(case.get("mean_batch_s_after_compile")), str(case.get("identical_to_first_layout")),
                         str(case["returncodes"])])
    result["complete"] = True
    writer.write(result)
    print(format_table(["layout", "wall s", "batch s (after compile)", "same images", "exit codes"], rows))
    print(f"wrote {json_path}")
    return result


if __name__ == "__main__":
    main()
