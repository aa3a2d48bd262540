"""Atomic, non-clobbering file output.

Every file pds_jax writes goes through these helpers: the bytes land in a temporary
file in the destination folder and are moved into place with `os.replace`, so a
crash (or kill -9) never leaves a half-written file under the final name, and a
reader never sees one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Any, Mapping

import numpy as np


class OutputExistsError(FileExistsError):
    """Raised instead of silently overwriting a file a user already has."""


def check_writable(path: str, overwrite: bool = False) -> None:
    """Raise `OutputExistsError` if `path` exists and `overwrite` is False."""
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; refusing to overwrite it. Choose another output "
            f"path/workdir, move the file away, or pass overwrite=True.")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str, data: bytes, overwrite: bool = False) -> str:
    """Write `data` to `path` atomically (temp file + fsync + rename)."""
    check_writable(path, overwrite)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_text(path: str, text: str, overwrite: bool = False) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite)


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict"):  # ml_collections.ConfigDict
        return obj.to_dict()
    return str(obj)


def atomic_write_json(path: str, obj: Any, overwrite: bool = False) -> str:
    """Write `obj` as indented JSON; NumPy scalars/arrays and configs are converted."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    return atomic_write_text(path, text + "\n", overwrite)


def atomic_save_npz(path: str, arrays: Mapping[str, Any], overwrite: bool = False,
                    compressed: bool = True) -> str:
    """Save a dict of arrays as `.npz` atomically."""
    if not path.endswith(".npz"):
        raise ValueError(f"{path}: .npz files must end in '.npz' (NumPy would append it silently)")
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue(), overwrite)


def fresh_dir(parent: str, name: str) -> str:
    """Create and return `parent/name`, or `parent/name_1`, `_2`, ... if it exists.

    Used for per-run output folders so that a second run never overwrites the first.
    """
    os.makedirs(parent, exist_ok=True)
    candidate = os.path.join(parent, name)
    k = 0
    while True:
        try:
            os.makedirs(candidate)
            return candidate
        except FileExistsError:
            k += 1
            candidate = os.path.join(parent, f"{name}_{k}")
