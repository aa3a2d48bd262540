"""Where a result came from: the devices that computed it and a hash of its config."""

from __future__ import annotations

import hashlib
import json
import platform

import jax


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
