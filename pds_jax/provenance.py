"""Where a result came from: the devices that computed it, a hash of its config, and the
identity (size, mtime, SHA-256) of the input files that shaped it."""

from __future__ import annotations

import hashlib
import json
import os
import platform

import jax

from pds_jax.io_utils import sha256_file


def device_info() -> dict:
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "host": platform.node(),
        "jax": jax.__version__,
    }


def config_hash(config) -> str:
    """The first 16 hex digits of the SHA-256 of the config's sorted JSON."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_identity(path: str) -> dict:
    """{'path', 'size', 'mtime', 'sha256'} of the file at `path` (a folder: of every file in it).

    Size and mtime say cheaply that a file changed; the SHA-256 of the content says it for
    sure (`io_utils.sha256_file`, cached per path, size and mtime).
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
        parts = [file_identity(f) for f in files]
        digest = hashlib.sha256("".join(p["sha256"] for p in parts).encode()).hexdigest()
        return {"path": path, "size": sum(p["size"] for p in parts),
                "mtime": max((p["mtime"] for p in parts), default=0.0), "sha256": digest}
    st = os.stat(path)
    return {"path": path, "size": int(st.st_size), "mtime": st.st_mtime, "sha256": sha256_file(path)}


def inputs_identity(paths: dict) -> dict:
    """{name: file_identity(path)} of the input files that shape a result (empty paths skipped)."""
    return {name: file_identity(p) for name, p in sorted(paths.items()) if p}


def inputs_hash(identities: dict) -> str:
    """The first 16 hex digits of the SHA-256 over the content hashes of `inputs_identity`.

    Only content enters (not path, size or mtime): the same bytes moved or touched are the
    same input, and a run resumed from them gives the same result.
    """
    text = json.dumps({k: v["sha256"] for k, v in sorted(identities.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
