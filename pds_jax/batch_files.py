"""A resumable run's batch files, written by one process or by many.

A batch of B samples is one global array. With one process it is stored whole as
`batch_<k>.npz`; with P processes each process stores the rows it holds as
`batch_<k>_p<i>.npz` with their global row indices `rows`, so no process needs the
others' data and no file is written by two processes. `load` puts the rows back in
global order, so the result does not depend on how many processes drew them.
A batch counts as done when its files cover all B rows; a partly written batch (a
process died before writing its part) is drawn again whole.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np

from pds_jax import distributed
from pds_jax.io_utils import atomic_save_npz, load_npz

_NAME = re.compile(r"batch_(\d+)(?:_p(\d+))?\.npz$")


def path(batch_dir: str, k: int, process: Optional[int] = None) -> str:
    """`batch_<k>.npz` (one process) or `batch_<k>_p<process>.npz`."""
    suffix = "" if process is None else f"_p{process:04d}"
    return os.path.join(batch_dir, f"batch_{k:05d}{suffix}.npz")


def local_rows(x) -> Tuple[np.ndarray, np.ndarray]:
    """(global row indices, rows) of the batch array `x` that this process should store.

    Of a sharded global array each process stores the shards of its devices with
    replica_id 0, so every row is stored exactly once over all processes. An array
    every process holds whole (a numpy array, or a program that ran per process) is
    stored by process 0 alone.
    """
    if isinstance(x, np.ndarray) or getattr(x, "is_fully_addressable", True):
        if not distributed.is_main():
            return np.zeros((0,), np.int64), np.asarray(x)[:0]
        arr = np.asarray(x)
        return np.arange(arr.shape[0]), arr
    pieces = {}
    for shard in x.addressable_shards:
        if shard.replica_id != 0:
            continue
        start = shard.index[0].start or 0 if shard.index else 0
        pieces[start] = np.asarray(shard.data)
    starts = sorted(pieces)
    rows = np.concatenate([np.arange(s, s + len(pieces[s])) for s in starts]) if starts else np.zeros(0, np.int64)
    data = np.concatenate([pieces[s] for s in starts]) if starts else np.zeros((0,) + x.shape[1:], x.dtype)
    return rows, data


def save(batch_dir: str, k: int, rows: np.ndarray, images: np.ndarray, nfe: int, batch_size: int) -> None:
    """Write this process's rows of batch k atomically (nothing if it holds none)."""
    if distributed.process_count() == 1:
        atomic_save_npz(path(batch_dir, k), {"images": images, "nfe": np.int64(nfe)}, overwrite=True)
    elif rows.size:
        atomic_save_npz(path(batch_dir, k, distributed.process_index()),
                        {"images": images, "nfe": np.int64(nfe), "rows": rows.astype(np.int64),
                         "batch_size": np.int64(batch_size)}, overwrite=True)


def _files(batch_dir: str) -> Dict[int, List[str]]:
    found: Dict[int, List[str]] = {}
    for f in sorted(glob.glob(os.path.join(batch_dir, "batch_*.npz"))):
        m = _NAME.search(os.path.basename(f))
        if m:
            found.setdefault(int(m.group(1)), []).append(f)
    return found


def _assemble(files: List[str]) -> Tuple[Optional[np.ndarray], Optional[int]]:
    """(the batch in global row order or None if rows are missing, its NFE or None)."""
    parts, nfe, size = [], None, None
    for f in files:
        data = load_npz(f, "batch file", fix="delete it and start the run again: the batch is redrawn "
                                             "with the same key")
        images = data["images"]
        rows = data["rows"] if "rows" in data else np.arange(images.shape[0])
        size = int(data["batch_size"]) if "batch_size" in data else images.shape[0]
        nfe = int(data["nfe"]) if "nfe" in data else nfe
        parts.append((rows, images))
    out = np.zeros((size,) + parts[0][1].shape[1:], parts[0][1].dtype)
    seen = np.zeros(size, bool)
    for rows, images in parts:
        out[rows] = images
        seen[rows] = True
    return (out if seen.all() else None), nfe


def missing(batch_dir: str, num_batches: int) -> List[int]:
    """The batches of [0, num_batches) whose files do not cover all rows; their partial files are
    removed (they are redrawn whole)."""
    found = _files(batch_dir)
    todo = []
    for k in range(num_batches):
        files = found.get(k, [])
        if not files or _assemble(files)[0] is None:
            for f in files:
                os.remove(f)
            todo.append(k)
    return todo


def load(batch_dir: str, num_samples: int):
    """(images [:num_samples] in global order, per-batch NFE or None where unknown)."""
    images, nfes = [], []
    for k, files in sorted(_files(batch_dir).items()):
        batch, nfe = _assemble(files)
        if batch is None:
            raise ValueError(f"batch {k} in {batch_dir} is incomplete (rows missing); run again to redraw it")
        images.append(batch)
        nfes.append(nfe)
    return np.concatenate(images)[:num_samples], nfes
