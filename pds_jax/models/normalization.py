"""Normalisation layers of the score networks.

NCSN++/DDPM++ use Flax's `nn.GroupNorm` with min(C // 4, 32) groups (score_sde).
Its `scale`/`bias` have shape (C,) in current Flax; Flax <= 0.3.5, which wrote
the released score_sde checkpoints, stored them as (1, 1, 1, C) —
`pds_jax.checkpoints.load_params` reshapes those on load.
"""

from __future__ import annotations

import flax.linen as nn
import jax

Array = jax.Array


def num_groups(channels: int) -> int:
    """score_sde's group count: min(C // 4, 32)."""
    return min(channels // 4, 32)


def group_norm(x: Array) -> Array:
    """GroupNorm over the last axis of NHWC `x`, created as `GroupNorm_<k>` in the caller's scope."""
    return nn.GroupNorm(num_groups=num_groups(x.shape[-1]))(x)
