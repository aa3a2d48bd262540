"""Start-up of JAX's multi-controller runtime, and the few cross-process helpers the modes use.

One program runs on every host (process); `jax.distributed.initialize` connects them
through a coordinator (process 0's host:port), after which `jax.devices()` lists the
devices of all processes and a jitted program over a mesh of them runs as one SPMD
program. Each process still only *holds* the shards of its local devices.

Without any of the flags nothing happens (single process, `jax.process_count() == 1`),
and every helper here reduces to the identity, so the modes call them unconditionally.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Optional

import numpy as np

# A peer that never arrives fails start-up after this long (jax's default is 5 minutes);
# one that dies mid-run is declared dead after the heartbeat timeout (jax: 100 s).
INITIALIZATION_TIMEOUT_S = 120
HEARTBEAT_TIMEOUT_S = 60
SHUTDOWN_TIMEOUT_S = 300  # process 0 may still be writing PNGs when the others finish
ENV_INIT_TIMEOUT = "PDS_JAX_DISTRIBUTED_INIT_TIMEOUT"
ENV_HEARTBEAT_TIMEOUT = "PDS_JAX_DISTRIBUTED_HEARTBEAT_TIMEOUT"


@dataclasses.dataclass(frozen=True)
class DistributedFlags:
    """What the command line asked for: explicit coordinates, auto-detection, or nothing."""

    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    auto: bool = False

    @property
    def requested(self) -> bool:
        return self.auto or any(v is not None for v in (self.coordinator_address, self.num_processes,
                                                         self.process_id))


def check_flags(flags: DistributedFlags) -> None:
    """ValueError (naming the flag) for an incomplete or inconsistent explicit set."""
    if not flags.requested or flags.auto and flags.coordinator_address is None:
        if flags.auto and (flags.num_processes is not None or flags.process_id is not None):
            raise ValueError("--num_processes/--process_id need --coordinator_address; with "
                             "--distributed alone they are auto-detected (TPU, SLURM, Open MPI)")
        return
    missing = [name for name, v in (("--coordinator_address", flags.coordinator_address),
                                    ("--num_processes", flags.num_processes),
                                    ("--process_id", flags.process_id)) if v is None]
    if missing:
        raise ValueError(f"multi-process start-up needs {', '.join(missing)} as well (or pass "
                         "--distributed alone to auto-detect them on TPU/SLURM/Open MPI)")
    host, _, port = flags.coordinator_address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator_address must be host:port, got {flags.coordinator_address!r}")
    if flags.num_processes < 1 or not 0 <= flags.process_id < flags.num_processes:
        raise ValueError(f"--process_id must be in [0, --num_processes) = [0, {flags.num_processes}), "
                         f"got {flags.process_id}")


def initialize(flags: DistributedFlags) -> bool:
    """Start the multi-controller runtime if asked (before any other JAX call); True if started.

    On CPU the cross-process collectives go through gloo (the CPU backend's default
    cannot cross processes). The timeouts make a missing or dead peer an error within
    minutes instead of a hang. Every process logs one line: process i of n, local /
    global device counts.
    """
    check_flags(flags)
    if not flags.requested:
        return False
    import jax

    # Only the CPU backend reads this (TPU/GPU have their own collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    explicit = {} if flags.coordinator_address is None else {
        "coordinator_address": flags.coordinator_address, "num_processes": flags.num_processes,
        "process_id": flags.process_id}
    timeout = int(os.environ.get(ENV_INIT_TIMEOUT, INITIALIZATION_TIMEOUT_S))
    # Said first: when a peer never comes, jaxlib terminates the process (SIGABRT, DEADLINE_EXCEEDED)
    # after `timeout` rather than raising, so this line is the context the user gets.
    who = ("auto-detected cluster" if flags.coordinator_address is None else
           f"coordinator {flags.coordinator_address} as process {flags.process_id} of {flags.num_processes}")
    print(f"pds_jax: joining the {who}; waiting up to {timeout} s for all processes", file=sys.stderr, flush=True)
    try:
        jax.distributed.initialize(
            **explicit, initialization_timeout=timeout,
            heartbeat_timeout_seconds=int(os.environ.get(ENV_HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_S)),
            shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
    except ValueError as e:  # auto-detection found no cluster
        raise ValueError(f"--distributed found no cluster to auto-detect (TPU pod slice, SLURM, Open MPI): "
                         f"{e}; pass --coordinator_address, --num_processes and --process_id") from None
    except Exception as e:  # jaxlib's runtime errors: a peer that never came, an unreachable coordinator
        where = flags.coordinator_address or "auto-detected"
        raise RuntimeError(f"multi-process start-up failed (coordinator {where}, waited up to {timeout} s): "
                           f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} "
                           "— start the same command on every process, with the same --coordinator_address "
                           "and --num_processes") from None
    print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local "
          f"device(s), {jax.device_count()} global ({jax.devices()[0].platform})", flush=True)
    return True


def process_index() -> int:
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def is_main() -> bool:
    """Whether this is process 0, the one that prints and writes the shared outputs."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches `name` (a no-op for one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def broadcast(value: Any) -> Any:
    """Process 0's `value` (a pytree of numpy arrays / scalars) on every process."""
    if process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(value)


def sum_over_processes(tree: Any) -> Any:
    """The float64 sum over processes of a pytree of host numpy arrays (identity for one process).

    Gathered with `process_allgather` and summed on the host in process order, so every
    process gets the same bits. float64 arrays travel as pairs of uint32 words (bit-exact)
    because JAX without x64 would truncate them to float32.
    """
    if process_count() == 1:
        return tree
    import jax

    return jax.tree_util.tree_map(lambda g: g.sum(axis=0), gather_over_processes(tree))


def gather_over_processes(tree: Any) -> Any:
    """Every process's pytree of host numpy arrays (same shapes everywhere), stacked on a new
    leading axis in process order, float64 bit-exact (see `sum_over_processes`)."""
    import jax

    if process_count() == 1:
        return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf, np.float64)[None], tree)
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    words = [np.ascontiguousarray(np.asarray(leaf, np.float64)).view(np.uint32) for leaf in leaves]
    gathered = multihost_utils.process_allgather(words, tiled=False)
    stacked = [np.asarray(g).view(np.float64).reshape((-1,) + np.shape(leaf)) for g, leaf in zip(gathered, leaves)]
    return jax.tree_util.tree_unflatten(treedef, stacked)


def my_part(n: int) -> slice:
    """This process's contiguous share of n items: process i of P gets [i·n//P, (i+1)·n//P)."""
    i, p = process_index(), process_count()
    return slice(i * n // p, (i + 1) * n // p)


def to_global(x: np.ndarray, sharding) -> Any:
    """A host array that every process holds whole, as a global `jax.Array` of `sharding`.

    Each process places only the pieces its own devices hold (`make_array_from_callback`),
    whatever the order of the mesh's devices. With one process this is `jax.device_put`.
    """
    import jax

    if process_count() == 1:
        return jax.device_put(x, sharding)
    x = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(tree: Any) -> Any:
    """Host numpy copies of a pytree of replicated (or process-local) arrays: a replicated
    global array is read from one of this process's own devices."""
    import jax

    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if not leaf.is_fully_replicated:
                raise ValueError("to_host needs a replicated array; this one is sharded across processes")
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(leaf)

    return jax.tree_util.tree_map(one, tree)
