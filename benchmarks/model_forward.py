"""Time one jitted forward pass of score networks (random weights), after compilation.

    python -m benchmarks.model_forward                      # FFHQ 1024 and LSUN bedroom 256, batch 1
    python -m benchmarks.model_forward --configs ve/cifar10_ncsnpp_deep_continuous --batch 8

Prints one JSON object per config: parameter count, compile time and forward times
(seconds) on the default JAX device. Weights are N(0, 1/fan_in) draws from NumPy
(the values do not change the cost); the noise label is σ = 1.
"""

import argparse
import importlib
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from pds_jax import models
from pds_jax.timing import random_params
from pds_jax.io_utils import atomic_write_json

DEFAULT_CONFIGS = ["ve/ffhq_ncsnpp_continuous", "ve/bedroom_ncsnpp_continuous"]


def time_forward(name, batch, repeats):
    config = importlib.import_module("configs." + name.replace("/", ".")).get_config()
    model = models.create_model(config)
    params = random_params(config)
    size, channels = config.data.image_size, config.data.num_channels
    x = jax.random.uniform(jax.random.PRNGKey(0), (batch, size, size, channels))
    labels = jnp.ones((batch,), jnp.float32)
    forward = jax.jit(lambda p, x, s: model.apply({"params": p}, x, s, train=False))
    t0 = time.perf_counter()
    compiled = forward.lower(params, x, labels).compile()
    compile_s = time.perf_counter() - t0
    out = compiled(params, x, labels)
    jax.block_until_ready(out)  # first call (allocations), not timed
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, x, labels))
        times.append(time.perf_counter() - t0)
    return dict(config=name, image_size=size, batch=batch,
                num_params=int(sum(np.prod(p.shape) for p in jax.tree.leaves(params))),
                device=str(jax.devices()[0]), jax=jax.__version__, compile_s=round(compile_s, 3),
                forward_s=[round(t, 4) for t in times], forward_min_s=round(min(times), 4),
                finite=bool(jnp.all(jnp.isfinite(out))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                        help="config names under configs/, e.g. ve/bedroom_ncsnpp_continuous")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="", help="also write the results to this JSON file")
    args = parser.parse_args()
    results = []
    for name in args.configs:
        results.append(time_forward(name, args.batch, args.repeats))
        print(json.dumps(results[-1]), flush=True)
    if args.output:
        atomic_write_json(args.output, results)


if __name__ == "__main__":
    main()
