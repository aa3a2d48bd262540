"""Shared helpers for the end-to-end tests of `main.py` (test_cli.py, test_train.py).

Every run is a real `python main.py ...` subprocess on a tiny NCSN++ (16×16×1, nf = 8,
ch_mult = (1, 2), no attention, no FIR) trained on 32 random uint8 images stored as an
'arrays' dataset. The subprocesses share a persistent JAX compilation cache, so only
the first run of each program pays XLA's compile time (about a minute on a 2-core CPU
for parameter init + one training step); later runs start in seconds. Set
PDS_JAX_TEST_JAX_CACHE=<folder> to keep that cache between test sessions.

The tiny checkpoint (8 training steps) is made once per session by `trained_workdir`
and shared by both test modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "main.py")
IMAGE_SIZE = 16
NUM_IMAGES = 32
NUM_SCALES = 20          # the full schedule: N = 20 PC steps, NFE 40
TRAIN_STEPS = 8

TINY_CONFIG = '''"""A tiny NCSN++ on an 'arrays' dataset, for the end-to-end CLI tests."""
from pds_jax.configs.fashion_mnist_pds import get_config as get_base_config


def get_config():
    config = get_base_config()
    data = config.data
    data.dataset = 'arrays'
    data.folder = {images!r}
    data.image_size = {size}
    data.num_channels = 1
    data.random_flip = True

    model = config.model
    model.nf = 8
    model.ch_mult = (1, 2)
    model.num_res_blocks = 1
    model.attn_resolutions = ()
    model.fir = False
    model.num_scales = {num_scales}

    training = config.training
    training.batch_size = 4
    training.n_iters = {train_steps}
    training.n_jitted_steps = 1
    training.log_freq = 2
    training.eval_freq = 4
    training.snapshot_freq = 4
    training.snapshot_freq_for_preemption = 2
    training.snapshot_sampling = False
    config.optim.warmup = 2

    sampling = config.sampling
    sampling.checkpoint = ''             # <workdir>/checkpoints
    sampling.batch_size = 2
    sampling.num_samples = 4
    sampling.pds.speed_up = 1.0
    sampling.pds.alpha = 5.0
    sampling.pds.freq_filter = ''
    sampling.pds.space_filter = ''

    config.estimate.num_images = 16
    config.estimate.batch_size = 8
    return config
'''

_STATE: Dict[str, str] = {}


def _session_dir(tmp_path_factory, name: str) -> str:
    if name not in _STATE:
        _STATE[name] = str(tmp_path_factory.mktemp(name))
    return _STATE[name]


def jax_cache_dir(tmp_path_factory) -> str:
    return os.environ.get("PDS_JAX_TEST_JAX_CACHE") or _session_dir(tmp_path_factory, "jax_cache")


def cli_env(tmp_path_factory, **extra: str) -> dict:
    """The environment of a CLI subprocess: repo on PYTHONPATH, CPU, one host device, shared cache."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # a parent's fake-device count would change batch sharding
    env.update({
        "PYTHONPATH": ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": jax_cache_dir(tmp_path_factory),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    })
    env.update(extra)
    return env


def tiny_setup(tmp_path_factory) -> Dict[str, str]:
    """{'images': .npy of random uint8 images, 'config': the tiny config file} (made once)."""
    folder = _session_dir(tmp_path_factory, "tiny_setup")
    images = os.path.join(folder, "images.npy")
    config = os.path.join(folder, "tiny_config.py")
    if not os.path.exists(config):
        rng = np.random.default_rng(0)
        np.save(images, rng.integers(0, 256, (NUM_IMAGES, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8))
        with open(config, "w") as f:
            f.write(TINY_CONFIG.format(images=images, size=IMAGE_SIZE, num_scales=NUM_SCALES,
                                       train_steps=TRAIN_STEPS))
    return {"images": images, "config": config}


def run_cli(tmp_path_factory, args: Sequence[str], cwd: str = ROOT, expect: Optional[int] = 0,
            timeout: float = 300, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """`python main.py *args`; checks the exit code when `expect` is not None."""
    proc = subprocess.run([sys.executable, MAIN, *args], cwd=cwd, env=env or cli_env(tmp_path_factory),
                          capture_output=True, text=True, timeout=timeout)
    if expect is not None and proc.returncode != expect:
        raise AssertionError(f"main.py {' '.join(args)} exited {proc.returncode}, expected {expect}\n"
                             f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-5000:]}")
    return proc


def train_args(config: str, workdir: str, *overrides: str) -> list:
    return [f"--config={config}", f"--workdir={workdir}", "--mode=train", *overrides]


def trained_workdir(tmp_path_factory) -> str:
    """A workdir holding the tiny model trained for TRAIN_STEPS steps (made once per session)."""
    if "trained" not in _STATE:
        setup = tiny_setup(tmp_path_factory)
        workdir = os.path.join(_session_dir(tmp_path_factory, "trained"), "run")
        run_cli(tmp_path_factory, train_args(setup["config"], workdir))
        _STATE["trained"] = workdir
    return _STATE["trained"]


def read_jsonl(path: str) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f]


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)

