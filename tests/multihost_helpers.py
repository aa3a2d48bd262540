"""Launch `main.py` as P real JAX processes on 127.0.0.1 (the multi-controller runtime on CPU).

Each process gets `--xla_force_host_platform_device_count=<devices per process>` and the
coordinator flags; the coordinator port is a free one found by binding port 0.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence

from tests.cli_helpers import MAIN, ROOT, cli_env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path_factory, args: Sequence[str], processes: int, devices_per_process: int,
           skip: Sequence[int] = (), **env_extra: str) -> List[subprocess.Popen]:
    """Start `processes` processes of `main.py *args` (those in `skip` are left out)."""
    env = cli_env(tmp_path_factory, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
                  **env_extra)
    extra = [] if processes == 1 else [f"--coordinator_address=127.0.0.1:{free_port()}",
                                       f"--num_processes={processes}"]
    procs = []
    for i in range(processes):
        if i in skip:
            continue
        flags = extra + ([f"--process_id={i}"] if processes > 1 else [])
        # Files, not pipes: a process whose pipe fills while another is awaited would block.
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        p = subprocess.Popen([sys.executable, MAIN, *args, *flags], cwd=ROOT, env=env, stdout=out, stderr=err)
        p.logs = (out, err)
        procs.append(p)
    return procs


def _read(f) -> str:
    f.seek(0)
    return f.read()


def wait_all(procs: List[subprocess.Popen], timeout: float = 300, expect: Optional[int] = 0):
    """[(returncode, stdout, stderr)] of every process; kills all and fails on a timeout."""
    deadline = time.monotonic() + timeout
    results = []
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
            results.append((p.returncode, _read(p.logs[0]), _read(p.logs[1])))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError(f"the processes did not finish within {timeout} s")
    if expect is not None:
        for i, (rc, out, err) in enumerate(results):
            if rc != expect:
                raise AssertionError(f"process {i} exited {rc}, expected {expect}\n--- stdout ---\n"
                                     f"{out[-3000:]}\n--- stderr ---\n{err[-5000:]}")
    return results


def run_processes(tmp_path_factory, args: Sequence[str], processes: int, devices_per_process: int,
                  timeout: float = 300, **env_extra: str):
    return wait_all(launch(tmp_path_factory, args, processes, devices_per_process, **env_extra), timeout)
