"""Read and write score_sde checkpoints (Flax msgpack `checkpoint_<n>` files).

score_sde (Song et al., 2021) saves its training `State` with
`flax.training.checkpoints.save_checkpoint`: one extension-less msgpack file per
snapshot, `<dir>/checkpoint_<n>`, holding the state dict

    {'step': int, 'lr': float, 'ema_rate': float, 'rng': uint32[2],
     'model_state': {},                       # no mutable collections for NCSN++
     'params_ema': <params>,                  # what sampling uses
     'optimizer': {'target': <params>,        # the raw (non-EMA) weights
                   'state': {'step': <Adam count>,
                             'param_states': <params-shaped tree of
                                              {'grad_ema': μ, 'grad_sq_ema': ν}>}}}

with `<params>` the network's parameter tree without a top-level 'params' key.
`flax.optim` (which defined the optimizer layout) no longer exists; this module
reads the raw dict with `flax.serialization.msgpack_restore` and writes the same
layout back, so score_sde-style tooling and our trainer can resume from our files.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional, Tuple

import jax
import numpy as np
from flax import serialization
from flax.traverse_util import flatten_dict, unflatten_dict

from pds_jax.io_utils import atomic_write_bytes
from pds_jax.models import param_shapes

_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)$")
_EXPECTED = "a score_sde checkpoint file `checkpoint_<n>` or a folder of them"


class CheckpointMismatchError(ValueError):
    """A checkpoint's parameter tree does not match the model of a config."""


# -- locating files ------------------------------------------------------------------------

def list_checkpoints(ckpt_dir: str) -> list:
    """`[(step, path), ...]` of the `checkpoint_<n>` files in `ckpt_dir`, by increasing n.

    Temporary files (ours start with '.', Flax's end in 'tmp') are ignored.
    """
    found = []
    for name in os.listdir(ckpt_dir):
        m = _CHECKPOINT_RE.match(name)
        path = os.path.join(ckpt_dir, name)
        if m and os.path.isfile(path):
            found.append((int(m.group(1)), path))
    return sorted(found)


def resolve_checkpoint(path: str) -> str:
    """The checkpoint file `path` names: itself, or the highest-numbered one in a folder."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        found = list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"{path}: folder has no `checkpoint_<n>` file; expected {_EXPECTED}")
        return found[-1][1]
    raise FileNotFoundError(f"{path}: no such file or folder; expected {_EXPECTED}")


# -- reading ---------------------------------------------------------------------------------

def load_score_sde(path: str) -> dict:
    """The raw state dict of a score_sde checkpoint (file, or folder → latest file).

    Keys: step, optimizer {target, state}, lr, model_state, ema_rate, params_ema, rng.
    Arrays are NumPy arrays, exactly as stored.
    """
    file = resolve_checkpoint(path)
    with open(file, "rb") as f:
        data = f.read()
    try:
        state = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"{file}: not a Flax msgpack checkpoint ({type(e).__name__}: {e}); "
                         f"expected {_EXPECTED}") from e
    if not isinstance(state, dict) or "params_ema" not in state or "optimizer" not in state:
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{file}: not a score_sde training state (top-level keys: {keys}); "
                         f"expected 'params_ema' and 'optimizer'")
    return state


def fix_legacy_group_norm(params: dict) -> dict:
    """Reshape GroupNorm `scale`/`bias` from Flax <= 0.3.5's (1, 1, 1, C) to (C,).

    Only leaves of modules named `GroupNorm_<k>` are touched; (C,) leaves pass as they are.
    """
    flat = flatten_dict(params)
    for path, leaf in flat.items():
        if (len(path) >= 2 and path[-2].startswith("GroupNorm_") and path[-1] in ("scale", "bias")
                and np.ndim(leaf) == 4 and np.shape(leaf)[:3] == (1, 1, 1)):
            flat[path] = np.reshape(leaf, (-1,))
    return unflatten_dict(flat)


def load_params(path: str, ema: bool = True) -> dict:
    """Network parameters from a score_sde checkpoint (file or folder → latest).

    Args:
      path: a `checkpoint_<n>` file, or a folder of them (the highest n is read).
      ema: the EMA weights `params_ema` (used for sampling) if True, else the raw
        `optimizer.target`.
    Returns:
      The parameter tree (host NumPy arrays; `jax.device_put` them once before a
      long sampling run) for `model.apply({'params': params}, ...)`, with legacy
      (1, 1, 1, C) GroupNorm params reshaped to (C,). Check it against a config
      with `check_params`.
    """
    state = load_score_sde(path)
    params = state["params_ema"] if ema else state["optimizer"]["target"]
    if "params" in params and len(params) == 1:  # tolerate a wrapped {'params': ...} tree
        params = params["params"]
    return fix_legacy_group_norm(params)


def _describe_config(config) -> str:
    m = config.model
    arch = f"model.name={m.name!r}, data.image_size={config.data.image_size}"
    for key in ("nf", "ch_mult", "num_res_blocks", "progressive", "progressive_input"):
        if key in m:
            arch += f", model.{key}={m[key]!r}"
    return arch


def check_params(params: dict, config, checkpoint: Optional[str] = None,
                 config_name: Optional[str] = None, max_listed: int = 20) -> None:
    """Raise `CheckpointMismatchError` unless `params` fit the model built from `config`.

    The expected tree comes from `jax.eval_shape` of the model's init (no memory).
    The error lists the missing, unexpected and mis-shaped parameter paths.
    """
    expected = flatten_dict(param_shapes(config), sep="/")
    got = flatten_dict(params, sep="/")
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(got)
                       if tuple(np.shape(got[k])) != tuple(expected[k].shape))
    if not (missing or unexpected or misshaped):
        return

    def listing(title, keys, fmt=str):
        shown = [f"    {fmt(k)}" for k in keys[:max_listed]]
        more = [f"    ... and {len(keys) - max_listed} more"] if len(keys) > max_listed else []
        return [f"  {title} ({len(keys)}):"] + shown + more if keys else []

    what = checkpoint or "the given parameters"
    cfg = config_name or _describe_config(config)
    lines = [f"{what} does not match the model of config {cfg}:"]
    lines += listing("missing from the checkpoint", missing)
    lines += listing("unexpected in the checkpoint", unexpected)
    lines += listing("mis-shaped (checkpoint vs model)", misshaped,
                     lambda k: f"{k}: {tuple(np.shape(got[k]))} vs {tuple(expected[k].shape)}")
    lines.append("Use the config the checkpoint was trained with (same model.* and data.image_size).")
    raise CheckpointMismatchError("\n".join(lines))


# -- writing ---------------------------------------------------------------------------------

def make_score_sde_state(step: int, params: Any, params_ema: Any, adam_mu: Any, adam_nu: Any,
                         adam_count: Any, lr: float, ema_rate: float, rng: Any,
                         model_state: Optional[dict] = None) -> dict:
    """A state dict laid out like score_sde's `State` with a `flax.optim.Adam` optimizer.

    `adam_mu`/`adam_nu` are trees shaped like `params` (optax's `ScaleByAdamState.mu/nu`,
    flax.optim's `grad_ema`/`grad_sq_ema`); `adam_count` is the number of Adam updates.
    """
    param_states = jax.tree.map(lambda m, v: {"grad_ema": m, "grad_sq_ema": v}, adam_mu, adam_nu)
    return {
        "step": step,
        "optimizer": {"target": params, "state": {"step": adam_count, "param_states": param_states}},
        "lr": lr,
        "model_state": {} if model_state is None else model_state,
        "ema_rate": ema_rate,
        "params_ema": params_ema,
        "rng": rng,
    }


def adam_moments_from_state(state: dict) -> Tuple[Any, Any, Any]:
    """`(mu, nu, count)`: the Adam moments of a score_sde state dict, shaped like its params."""
    opt = state["optimizer"]
    target, param_states = opt["target"], opt["state"]["param_states"]
    mu = jax.tree.map(lambda _, s: s["grad_ema"], target, param_states)
    nu = jax.tree.map(lambda _, s: s["grad_sq_ema"], target, param_states)
    return mu, nu, opt["state"]["step"]


def save_checkpoint(ckpt_dir: str, state: dict, step: int, keep: Optional[int] = None,
                    overwrite: bool = False) -> str:
    """Write `state` to `ckpt_dir/checkpoint_<step>` in score_sde's msgpack format.

    The file appears atomically (temp file + rename), so a crash never leaves a
    partial checkpoint. With `keep`, only the `keep` highest-numbered checkpoints stay.
    Raises `pds_jax.io_utils.OutputExistsError` if the file exists and not `overwrite`.
    Returns the path written.
    """
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be None or >= 1, got {keep}")
    path = os.path.join(ckpt_dir, f"checkpoint_{int(step)}")
    data = serialization.msgpack_serialize(serialization.to_state_dict(state))
    atomic_write_bytes(path, data, overwrite=overwrite)
    if keep is not None:
        for _, old in list_checkpoints(ckpt_dir)[:-keep]:
            os.remove(old)
    return path


def export_for_sampling(src: str, dst: str, overwrite: bool = False) -> str:
    """Write a slim copy of a training checkpoint: parameters and EMA, no Adam moments.

    The result is still a score_sde-layout state dict (`load_params` reads it), but
    `optimizer.state` is empty, so it cannot resume training. It is half the size of
    the full state, which is what the shipped default model needs.
    """
    state = load_score_sde(src)
    slim = {key: state[key] for key in ("step", "lr", "model_state", "ema_rate", "params_ema", "rng")
            if key in state}
    slim["optimizer"] = {"target": state["optimizer"]["target"], "state": {}}
    data = serialization.msgpack_serialize(slim)
    return atomic_write_bytes(dst, data, overwrite=overwrite)
