"""Data-parallel helpers: one 1-D device mesh whose axis 'data' splits the batch.

The recommended pattern in current JAX is `jit` + `NamedSharding`: arrays whose
leading (batch) axis is sharded over `('data',)` run on every local device, and
reductions such as `jnp.mean` over the batch are global, so results do not depend
on the number of devices (up to float summation order).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: all local devices) with axis 'data'."""
    devices = jax.local_devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Optional[Mesh] = None) -> NamedSharding:
    """Shard the leading axis over 'data', replicate the rest."""
    return NamedSharding(mesh or data_mesh(), PartitionSpec(DATA_AXIS))


def replicated(mesh: Optional[Mesh] = None) -> NamedSharding:
    return NamedSharding(mesh or data_mesh(), PartitionSpec())


def pad_batch(x: np.ndarray, multiple: int) -> Tuple[np.ndarray, int]:
    """Zero-pad the leading axis of `x` up to a multiple of `multiple`.

    Returns the padded array and the number of real rows, so callers can mask the
    padding out of reductions (a final partial batch must count only real images).
    """
    n = x.shape[0]
    rem = (-n) % multiple
    if rem:
        x = np.concatenate([x, np.zeros((rem,) + x.shape[1:], dtype=x.dtype)], axis=0)
    return x, n


def shard_batch(x, mesh: Optional[Mesh] = None):
    """Place a host batch on the mesh, split along the batch axis.

    The batch size must be a multiple of the number of devices (see `pad_batch`).
    """
    mesh = mesh or data_mesh()
    n_dev = mesh.devices.size
    if x.shape[0] % n_dev:
        raise ValueError(
            f"batch of {x.shape[0]} cannot be split over {n_dev} devices; pad it with "
            f"pds_jax.sharding.pad_batch or choose a batch size divisible by {n_dev}")
    return jax.device_put(x, batch_sharding(mesh))


def map_batches(fn: Callable, batches: Iterable[np.ndarray], mesh: Optional[Mesh] = None, *,
                padded_size: Callable[[int], int], with_mask: bool = False) -> Iterator[Tuple[object, int]]:
    """Apply a batch-sharded jitted `fn` to every host batch; yield (device result, real rows).

    Each batch of n rows is zero-padded to `padded_size(n)` rows (a multiple of the device
    count), split over the mesh's data axis and dispatched *before* the previous result is
    yielded, so the host prepares batch k+1 while the devices compute batch k. With
    `with_mask`, `fn` also gets a float32 (padded,) mask: 1 for real rows, 0 for padding,
    so reductions count only real images. The one sharded loop of the package (filter
    statistics, feature statistics).
    """
    mesh = mesh or data_mesh()
    in_flight = None
    for batch in batches:
        n = batch.shape[0]
        size = int(padded_size(n))
        x, _ = pad_batch(batch, size)
        args = [shard_batch(x, mesh)]
        if with_mask:
            args.append(shard_batch((np.arange(size) < n).astype(np.float32), mesh))
        launched = (fn(*args), n)
        if in_flight is not None:
            yield in_flight
        in_flight = launched
    if in_flight is not None:
        yield in_flight
