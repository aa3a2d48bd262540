"""Pieces shared by the CLI modes: paths, checkpoints → score functions, run metadata."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
from typing import Optional

import jax

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# score_sde's released JAX checkpoints, by the config file they belong to (its README,
# "Pretrained checkpoints": one Google Drive folder per entry).
SCORE_SDE_RELEASES = {
    "ffhq": "ve/ffhq_1024_ncsnpp_continuous",
    "ffhq_256": "ve/ffhq_256_ncsnpp_continuous",
    "lsun/bedroom": "ve/bedroom_ncsnpp_continuous",
    "bedroom": "ve/bedroom_ncsnpp_continuous",
    "lsun/church": "ve/church_ncsnpp_continuous",
    "church_outdoor": "ve/church_ncsnpp_continuous",
    "celebahq_256": "ve/celebahq_256_ncsnpp_continuous",
    "cifar10": "ve/cifar10_ncsnpp_deep_continuous (or another CIFAR-10 entry matching the config)",
}


def resolve_path(path: str) -> str:
    """A config path as given, else relative to the repository root (where configs live)."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = os.path.join(REPO_ROOT, path)
    return candidate if os.path.exists(candidate) else path


def with_resolved_filter_paths(config):
    """A copy of `config` whose sampling.pds filter files are found like the checkpoint.

    The shipped configs name repository files ('checkpoints/.../filters.npz'), so that
    they work from any working directory, not only from the repository root.
    """
    config = config.copy_and_resolve_references()
    for key in ("freq_filter", "space_filter"):
        config.sampling.pds[key] = resolve_path(config.sampling.pds.get(key, "") or "")
    return config


def check_finite(x, what: str) -> None:
    """Raise ValueError if a sampler returned NaN/Inf (uint8 conversion would hide it)."""
    import numpy as np

    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ValueError(
            f"{what}: the sampler returned {bad} non-finite values (NaN/Inf) out of {np.size(x)}; "
            "the images would be garbage, so nothing was saved for it. Usual causes: a diverged "
            "checkpoint, or too few steps for the filters (lower sampling.pds.speed_up / --speed_up, "
            "raise sampling.pds.alpha / --alpha, or sample without filters).")


def checkpoint_path(config, workdir: Optional[str]) -> str:
    """`config.sampling.checkpoint`, or `<workdir>/checkpoints` (score_sde's layout) if empty."""
    path = config.sampling.checkpoint
    if not path:
        if not workdir:
            raise ValueError("set --config.sampling.checkpoint or --workdir (holding checkpoints/)")
        path = os.path.join(workdir, "checkpoints")
    return resolve_path(path)


def missing_checkpoint_message(config, path: str) -> str:
    dataset = str(config.data.dataset).lower()
    release = SCORE_SDE_RELEASES.get(dataset)
    where = (f"the score_sde release '{release}'" if release else "the score_sde checkpoint for this config")
    return (
        f"checkpoint not found: {path}\n"
        f"Download {where} (JAX, a file named checkpoint_<n>) from the Google Drive folder linked in "
        "https://github.com/yang-song/score_sde#pretrained-checkpoints, and put it at that path — or "
        "point --config.sampling.checkpoint at the file or at a folder holding checkpoint_<n> files "
        "(the latest is used). pds_jax reads these files unchanged; no conversion step.")


def load_score_fn(config, workdir: Optional[str] = None, ema: bool = True):
    """(sde, model, params, score_fn, checkpoint file) for the checkpoint a config names.

    The parameter tree is checked against the model built from the config, so a
    checkpoint of another architecture fails with the list of differing paths.
    """
    from pds_jax import checkpoints, models
    from pds_jax.sde import get_sde

    path = checkpoint_path(config, workdir)
    if not os.path.exists(path):
        raise FileNotFoundError(missing_checkpoint_message(config, path))
    path = checkpoints.resolve_checkpoint(path)  # a folder → its newest file, named in errors and run.json
    params = checkpoints.load_params(path, ema=ema)
    checkpoints.check_params(params, config, checkpoint=path)
    sde = get_sde(config)
    model = models.create_model(config)
    score_fn = models.get_score_fn(sde, model, params, continuous=config.training.continuous)
    return sde, model, params, score_fn, path


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
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_header(config, mode: str) -> dict:
    """The common head of every run.json / eval.json."""
    return {
        "mode": mode,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "config_hash": config_hash(config),
        "device": device_info(),
    }
