"""Atomic, non-clobbering file output.

Every file pds_jax writes goes through these helpers: the bytes land in a temporary
file in the destination folder and are moved into place with `os.replace`, so a
crash (or kill -9) never leaves a half-written file under the final name, and a
reader never sees one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from typing import Any, Mapping

import numpy as np


_SHA256_CACHE: dict = {}


def sha256_file(path: str) -> str:
    """Hex SHA-256 of the file's bytes, hashed once per version of the file: a file read twice
    in a run (its shipped-asset check, then its provenance) is hashed once.

    The cache key includes the inode change time, which every write (and every `touch` or
    `os.utime`, which can restore an mtime) sets to "now": a rewritten file is hashed again.
    """
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _SHA256_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA256_CACHE[key] = h.hexdigest()
    return _SHA256_CACHE[key]


class OutputExistsError(FileExistsError):
    """Raised instead of silently overwriting a file a user already has."""


def check_writable(path: str, overwrite: bool = False) -> None:
    """Raise `OutputExistsError` if `path` exists and `overwrite` is False."""
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; refusing to overwrite it. Choose another output "
            f"path/workdir, move the file away, or pass overwrite=True.")


def check_output_folder(path: str, what: str = "--workdir") -> None:
    """Raise ValueError unless files can be created in folder `path`; nothing is created.

    Called where a run picks its output folder, before any sampling or training, so that a
    workdir that is a regular file or is read-only fails in a second with the fix, not after
    the work with a raw OSError. A missing `path` is judged by its nearest existing parent
    (where it would be made). Writability is probed by creating and removing a temporary
    file, which also catches read-only mounts that `os.access` does not see.
    """
    folder = os.path.abspath(path)
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        where = "" if folder == os.path.abspath(path) else f" (its parent {folder} is a file)"
        raise ValueError(f"{what}={path} is a regular file, not a folder{where}; pass a folder path "
                         "(it is created if missing)")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".pds_jax_write_probe.")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"{what}={path} is not writable ({e.strerror or e}); pass a folder you can "
                         "write to, or fix its permissions") from e


# What a truncated or corrupt file raises inside np.load / json.load (zip, zlib, pickle-free NumPy).
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


def load_npz(path: str, what: str = "file", fix: str = "") -> dict:
    """{name: array} of the `.npz` at `path`, read in full; a truncated/corrupt file raises
    ValueError naming `what`, the file and `fix` (the default: restore or delete it)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except _READ_ERRORS as e:
        raise ValueError(f"{what} {path} is truncated, corrupt or not a .npz file ({type(e).__name__}: {e}); "
                         f"{(fix or 'restore it, or delete it and make it again').rstrip('.')}") from e


def load_json(path: str, what: str = "file", fix: str = ""):
    """The JSON value in `path`; a truncated/corrupt file raises ValueError naming `what`,
    the file and `fix`."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path} is truncated, corrupt or not JSON ({type(e).__name__}: {e}); "
                         f"{(fix or 'restore it, or delete it and make it again').rstrip('.')}") from e


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


def free_stem(stem: str, suffixes=("",)) -> str:
    """`stem`, or `stem_1`, `stem_2`, ...: the first for which no `<it><suffix>` exists.

    The file counterpart of `fresh_dir`: a group of outputs (e.g. `.json` + `.png`) gets one
    free name, so a second run never overwrites the first.
    """
    k, candidate = 0, stem
    while any(os.path.exists(candidate + suffix) for suffix in suffixes):
        k += 1
        candidate = f"{stem}_{k}"
    return candidate


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
