"""The built wheel is a working package: installed into a fresh venv WITHOUT TensorFlow and run
from outside the repository, it samples the shipped default model and has its console script.

Builds `pip wheel --no-deps` from a copy of the package sources (setup.cfg, setup.py, README.md,
pds_jax/), so stale build/ folders of the checkout cannot leak into the wheel, then
`pip install`s it into a new venv (dependencies from the configured index or pip's cache;
about 20 s from local wheels on a 2-core machine, the whole module about 1 min). The venv has no
access to the test interpreter's packages and PYTHONPATH is cleared, so the repository
cannot stand in for anything missing from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("setup.cfg", "setup.py", "README.md", "pds_jax")


def _run(args, cwd, timeout, env=None):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-5000:]}")
    return proc


def _clean_env() -> dict:
    """The test environment minus anything that would put the repository on the venv's path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    env.pop("XLA_FLAGS", None)
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """(python, bin folder) of a fresh venv with only the wheel and its dependencies."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(path, src / name)
    env = _clean_env()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(src)],
         cwd=str(base), timeout=300, env=env)
    (wheel,) = os.listdir(base / "dist")
    _run([sys.executable, "-m", "venv", str(base / "venv")], cwd=str(base), timeout=120, env=env)
    bindir = base / "venv" / ("Scripts" if os.name == "nt" else "bin")
    python = str(bindir / "python")
    # --no-compile: byte-compiling ~0.7 GB of dependencies would take most of the install time
    _run([python, "-m", "pip", "install", "-q", "--no-compile", str(base / "dist" / wheel)], cwd=str(base),
         timeout=600, env=env)
    yield python, bindir
    shutil.rmtree(base, ignore_errors=True)  # ~0.7 GB; pytest would keep it among its last 3 temp dirs


def test_the_wheel_venv_has_no_tensorflow_and_imports_pds_jax_from_itself(venv, tmp_path):
    python, _ = venv
    code = ("import importlib.util, os, pds_jax; "
            "print(importlib.util.find_spec('tensorflow') is None, importlib.util.find_spec('tensorflow_datasets') "
            "is None, os.path.dirname(pds_jax.__file__))")
    out = _run([python, "-c", code], cwd=str(tmp_path), timeout=60, env=_clean_env()).stdout.split()
    assert out[:2] == ["True", "True"], "TensorFlow must be an extra, not a dependency"
    assert not os.path.abspath(out[2]).startswith(ROOT + os.sep), out[2]
    proc = subprocess.run([python, "-c", "import tensorflow"], cwd=str(tmp_path), capture_output=True, text=True,
                          env=_clean_env(), timeout=60)
    assert proc.returncode != 0 and "No module named 'tensorflow'" in proc.stderr
    # a tfds path says which extra to install, in one line
    code = ("from pds_jax.data import DatasetError, tfds_builder\n"
            "try:\n    tfds_builder('cifar10')\nexcept DatasetError as e:\n    print(e)")
    message = _run([python, "-c", code], cwd=str(tmp_path), timeout=60, env=_clean_env()).stdout.strip()
    assert "pip install 'pds_jax[tfds]'" in message and "\n" not in message, message


def test_the_wheel_samples_the_shipped_model_from_outside_the_repository(venv, tmp_path):
    python, _ = venv
    workdir = tmp_path / "W"
    _run([python, "-m", "pds_jax", "--mode=sample", "--config=fashion_mnist_pds", f"--workdir={workdir}",
          "--config.sampling.num_samples=2", "--config.sampling.batch_size=2", "--speed_up=100"],
         cwd=str(tmp_path), timeout=300, env=_clean_env())
    with np.load(workdir / "samples" / "samples.npz") as z:
        images = z["images"]
    assert images.shape == (2, 32, 32, 1) and images.std() > 0
    import json

    with open(workdir / "samples" / "run.json") as f:
        run = json.load(f)
    # the checkpoint came from the installed package's assets, not from a checkout
    assert run["checkpoint"].endswith(os.path.join("pds_jax", "assets", "checkpoints", "fashion_mnist_ncsnpp",
                                                   "checkpoint_43000"))
    assert not run["checkpoint"].startswith(ROOT + os.sep)


def test_the_console_script_prints_help_and_exits_0(venv, tmp_path):
    _, bindir = venv
    out = _run([str(bindir / "pds-jax"), "--help"], cwd=str(tmp_path), timeout=60, env=_clean_env()).stdout
    assert "--config" in out and "--alpha" in out and "fashion_mnist_pds" in out
