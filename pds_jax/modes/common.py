"""Pieces shared by the CLI modes: paths, checkpoints → score functions, run metadata."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
from typing import Optional

import jax

from pds_jax import resources

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


def with_resolved_filter_paths(config):
    """A copy of `config` whose sampling.pds filter files are found like the checkpoint.

    The shipped configs name shipped files ('checkpoints/.../filters.npz'), found by
    `pds_jax.resources.resolve` from any working directory.
    """
    config = config.copy_and_resolve_references()
    for key in ("freq_filter", "space_filter"):
        config.sampling.pds[key] = resources.resolve(config.sampling.pds.get(key, "") or "",
                                                     what=f"config.sampling.pds.{key}")
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
    return resources.resolve(path, missing_ok=True)  # load_score_fn reports a missing one


def missing_checkpoint_message(config) -> str:
    """What to do about a missing checkpoint (the `fix` of its `resources.resolve` error)."""
    dataset = str(config.data.dataset).lower()
    release = SCORE_SDE_RELEASES.get(dataset)
    where = (f"the score_sde release '{release}'" if release else "the score_sde checkpoint for this config")
    return (
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

    path = resources.resolve(checkpoint_path(config, workdir), what="checkpoint",
                             fix=missing_checkpoint_message(config))
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
