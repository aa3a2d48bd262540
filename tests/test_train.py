"""`main.py --mode=train` end to end: outputs, resuming, exact crash/resume, kill -9.

The tiny model of `tests/cli_helpers.py` trains on 32 random 16×16 images with
batch 4, n_jitted_steps 1, a metrics line every 2 steps, a pre-emption checkpoint
(checkpoints-meta/) every 2 steps and a snapshot (checkpoints/) every 4.
"""

import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from pds_jax import checkpoints
from tests.cli_helpers import (MAIN, ROOT, cli_env, read_jsonl, run_cli, tiny_setup,
                               train_args, trained_workdir)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_workdir(tmp_path_factory)


def flat_state(path):
    """Every array of a checkpoint's state dict, by '/'-joined path (Adam moments included)."""
    return {k: np.asarray(v) for k, v in flatten_dict(checkpoints.load_score_sde(path), sep="/").items()}


def test_train_writes_checkpoints_meta_and_metrics(trained):
    assert [s for s, _ in checkpoints.list_checkpoints(os.path.join(trained, "checkpoints"))] == [4, 8]
    # Pre-emption checkpoints: only the newest is kept.
    assert [s for s, _ in checkpoints.list_checkpoints(os.path.join(trained, "checkpoints-meta"))] == [8]
    records = read_jsonl(os.path.join(trained, "metrics.jsonl"))
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    for r in records:
        assert math.isfinite(r["loss"]) and r["loss"] > 0 and r["steps_per_s"] > 0
    # eval_freq = 4: the held-out loss of the EMA weights is logged at steps 4 and 8 only.
    assert [r["step"] for r in records if "eval_loss" in r] == [4, 8]
    assert all(math.isfinite(r["eval_loss"]) for r in records if "eval_loss" in r)

    state = checkpoints.load_score_sde(os.path.join(trained, "checkpoints", "checkpoint_8"))
    assert int(state["step"]) == 8
    assert int(state["optimizer"]["state"]["step"]) == 8  # Adam's update count
    flat = flatten_dict(state, sep="/")
    assert all(np.all(np.isfinite(v)) for v in flat.values() if isinstance(v, np.ndarray))
    # Training moved the weights, and the EMA (rate 0.999) lags behind them.
    first = flat_state(os.path.join(trained, "checkpoints", "checkpoint_4"))
    key = "optimizer/target/Conv_0/kernel"
    assert not np.array_equal(first[key], flat[key])
    assert not np.array_equal(flat["params_ema/Conv_0/kernel"], flat[key])


def test_resume_is_exact(tmp_path_factory, setup, trained, tmp_path):
    """4 steps, stop, 4 more == 8 uninterrupted steps, bit for bit (CPU is deterministic).

    Parameters, EMA, Adam moments and count, PRNG key and the logged losses all match,
    which holds only if the resumed run restores the full state and draws the same
    batches (batch s is a function of (seed, s)) and the same noise.
    """
    workdir = str(tmp_path / "b")
    run_cli(tmp_path_factory, train_args(setup["config"], workdir, "--config.training.n_iters=4"))
    assert [s for s, _ in checkpoints.list_checkpoints(os.path.join(workdir, "checkpoints"))] == [4]
    resumed = run_cli(tmp_path_factory, train_args(setup["config"], workdir))
    assert re.search(r"resuming from \S*checkpoint_4 \(step 4\)", resumed.stdout), resumed.stdout

    a = flat_state(os.path.join(trained, "checkpoints", "checkpoint_8"))
    b = flat_state(os.path.join(workdir, "checkpoints", "checkpoint_8"))
    assert sorted(a) == sorted(b)
    assert any("grad_sq_ema" in k for k in a) and any(k.startswith("params_ema/") for k in a)
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"resumed run differs from the uninterrupted one in {different[:10]}"

    # The resumed run continued the log (steps 6, 8) with the uninterrupted run's losses.
    ref = read_jsonl(os.path.join(trained, "metrics.jsonl"))
    got = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert [r["step"] for r in got] == [2, 4, 6, 8]
    assert [r["loss"] for r in got] == [r["loss"] for r in ref]


def test_train_again_after_the_last_step_trains_nothing(tmp_path_factory, setup, trained):
    before = {n: os.path.getmtime(os.path.join(trained, "checkpoints", n))
              for n in os.listdir(os.path.join(trained, "checkpoints"))}
    metrics = open(os.path.join(trained, "metrics.jsonl")).read()
    out = run_cli(tmp_path_factory, train_args(setup["config"], trained))
    assert re.search(r"resuming from \S*checkpoint_8 \(step 8\)", out.stdout)
    assert "trained to step 8" in out.stdout
    after = {n: os.path.getmtime(os.path.join(trained, "checkpoints", n))
             for n in os.listdir(os.path.join(trained, "checkpoints"))}
    assert after == before
    assert open(os.path.join(trained, "metrics.jsonl")).read() == metrics


def test_kill_9_then_resume(tmp_path_factory, setup, tmp_path):
    """A real SIGKILL while training writes a pre-emption checkpoint every 2 steps.

    The newest checkpoint always loads (files appear by atomic rename; a temp file is
    never taken for a checkpoint), and a restart resumes from it.
    """
    workdir = str(tmp_path / "k")
    meta = os.path.join(workdir, "checkpoints-meta")
    cmd = [sys.executable, MAIN, *train_args(setup["config"], workdir, "--config.training.n_iters=100000",
                                             "--config.training.snapshot_freq=100000")]
    log = tmp_path / "train.log"  # a file, not a pipe: tqdm's output must never block the child
    with open(log, "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=cli_env(tmp_path_factory), stdout=subprocess.DEVNULL,
                                stderr=stderr)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            # Kill once a few checkpoints have been replaced: training is in full swing.
            if os.path.isdir(meta) and any(s >= 6 for s, _ in checkpoints.list_checkpoints(meta)):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"training exited early ({proc.returncode}): {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no pre-emption checkpoint appeared in time"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # Whatever the kill interrupted, every `checkpoint_<n>` file is complete.
    found = checkpoints.list_checkpoints(meta)
    assert found
    for step, path in found:
        state = checkpoints.load_score_sde(path)
        assert int(state["step"]) == step
    newest = found[-1][0]
    # A half-written file of a later step (as a kill during a write leaves) is ignored.
    with open(os.path.join(meta, f".checkpoint_{newest + 2}.deadbeef.tmp"), "wb") as f:
        f.write(b"\x85\xa4step")
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 99999, "lo')  # a line cut by the kill

    target = newest + 2
    out = run_cli(tmp_path_factory, train_args(setup["config"], workdir, f"--config.training.n_iters={target}",
                                               "--config.training.snapshot_freq=100000"))
    assert re.search(rf"resuming from \S*checkpoints-meta/checkpoint_{newest} \(step {newest}\)",
                     out.stdout), out.stdout
    state = checkpoints.load_score_sde(os.path.join(workdir, "checkpoints", f"checkpoint_{target}"))
    assert int(state["step"]) == target
    assert [s for s, _ in checkpoints.list_checkpoints(meta)] == [target]
    # The log is valid JSON lines, each step once, in order: what was logged after the
    # checkpoint before the kill was trained again and is not repeated.
    steps = [r["step"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))]
    assert steps == list(range(2, target + 1, 2))


def test_train_with_a_missing_dataset_fails_fast(tmp_path_factory, setup, tmp_path):
    """Exit 2 naming the file, before any model is built (no XLA compilation at all)."""
    workdir = str(tmp_path / "nodata")
    missing = str(tmp_path / "no_such_images.npy")
    env = cli_env(tmp_path_factory, JAX_LOG_COMPILES="1")
    out = run_cli(tmp_path_factory, train_args(setup["config"], workdir, f"--config.data.folder={missing}"),
                  expect=2, env=env)
    assert "DatasetError" in out.stderr and missing in out.stderr
    assert "Traceback" not in out.stderr
    assert "compil" not in out.stderr.lower(), out.stderr[-2000:]
    assert not os.path.exists(workdir)
