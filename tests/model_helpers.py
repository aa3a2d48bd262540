"""Shared helpers for the model/config/checkpoint tests (cached full-size shape traces)."""

import functools
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from pds_jax import models

CONFIG_FILES = [
    "default_cifar10_configs", "default_celeba_configs", "default_lsun_configs",
    "ve/cifar10_ncsnpp_continuous", "ve/cifar10_ncsnpp_deep_continuous",
    "ve/bedroom_ncsnpp_continuous", "ve/church_ncsnpp_continuous",
    "ve/celebahq_256_ncsnpp_continuous", "ve/ffhq_256_ncsnpp_continuous",
    "ve/ffhq_ncsnpp_continuous", "vp/cifar10_ddpmpp_continuous", "vp/ddpm/cifar10",
    "cifar10_pds", "ffhq_pds", "bedroom_pds", "church_pds",
]


def load_config(name):
    """`get_config()` (or `get_default_configs()`) of `configs/<name>.py`."""
    module = importlib.import_module("configs." + name.replace("/", "."))
    getter = getattr(module, "get_config", None) or module.get_default_configs
    return getter()


@functools.lru_cache(maxsize=None)
def _flat_shapes(key):
    config = _KEYS[key]
    return [(k, tuple(v.shape)) for k, v in flatten_dict(models.param_shapes(config), sep="/").items()]


_KEYS = {}


def flat_param_shapes(config):
    """Ordered [(path, shape)] of the model built from `config` (eval_shape, cached by model)."""
    key = json.dumps([config.model.to_dict(), config.data.image_size, config.data.num_channels,
                      config.data.centered, config.training.continuous], sort_keys=True, default=list)
    _KEYS[key] = config
    return _flat_shapes(key)


def num_params(flat):
    return int(sum(np.prod(s) for _, s in flat))


def tiny_config(**model_overrides):
    """A 16×16, nf = 4 NCSN++ config (ve/cifar10_ncsnpp_continuous shrunk) for fast tests."""
    config = load_config("ve/cifar10_ncsnpp_continuous")
    config.data.image_size = 16
    config.model.update(dict(nf=4, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0))
    for key, value in model_overrides.items():
        if key == "centered":
            config.data.centered = value
        else:
            setattr(config.model, key, value)
    return config


def random_params(config, seed=0, scale=0.1):
    """N(0, scale²) parameters of the config's model tree, drawn with NumPy.

    Faster than `init_params` on CPU (compiling threefry for every 4-D shape takes
    seconds), and no output conv is zero.
    """
    rng = np.random.default_rng(seed)
    shapes = flatten_dict(models.param_shapes(config))
    return unflatten_dict({k: (scale * rng.standard_normal(v.shape)).astype(np.float32)
                           for k, v in shapes.items()})


def random_images(config, batch=2, seed=3):
    size, channels = config.data.image_size, config.data.num_channels
    return jax.random.uniform(jax.random.PRNGKey(seed), (batch, size, size, channels), jnp.float32)


class InterruptedSampler:
    """A `Sampler` stand-in whose `interrupt_at`-th batch raises KeyboardInterrupt (a simulated
    Ctrl-C); everything else is the wrapped sampler's."""

    def __init__(self, sampler, interrupt_at: int = 2):
        self.sampler, self.interrupt_at, self.calls = sampler, interrupt_at, 0

    def __getattr__(self, name):
        return getattr(self.sampler, name)

    def call_with_progress(self, rng, score_fn, progress, chunk_steps=None):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt(f"simulated Ctrl-C during batch {self.calls - 1}")
        return self.sampler.call_with_progress(rng, score_fn, progress, chunk_steps)


def interrupting_builder(real_build, interrupt_at: int = 2):
    """A stand-in for a mode's `build_sampler` whose sampler is an `InterruptedSampler`."""
    def build(*args, **kwargs):
        sampler, setup = real_build(*args, **kwargs)
        return InterruptedSampler(sampler, interrupt_at), setup

    return build
