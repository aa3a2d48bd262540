"""Multi-controller runs on CPU: 2 real processes × 4 devices against 1 process × 8 devices.

The processes talk through JAX's coordinator on 127.0.0.1 and gloo collectives. The same
config and key must give the same uint8 samples (sample, eval: the batch is one global
array over the 8 devices either way), the same filter statistics (estimate: disjoint
per-process pieces of the images, float64 sums added over processes) and the same FID
(eval: per-process feature moments merged). A peer that never comes must be an error
within a bounded time, not a hang.
"""

import json
import re
import os
import time

import jax
import numpy as np
import pytest

from pds_jax import checkpoints
from pds_jax.feature_nets import CLASSIFIER_DIR
from tests import multihost_helpers as mh
from tests.cli_helpers import cli_env, run_cli
from tests.model_helpers import random_params

# The Fashion-MNIST test-set statistics hold the raw features, so eval computes KID too.
TEST_STATS = os.path.join(CLASSIFIER_DIR, "fashion_mnist_test_stats.npz")

CONFIG = '''"""fashion_mnist_pds with an nf = 4 model, 4 PDS steps, an 'arrays' dataset (multihost tests)."""
from pds_jax.configs.fashion_mnist_pds import get_config as get_base_config


def get_config():
    config = get_base_config()
    config.model.update(dict(nf=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                             num_scales=4))
    config.data.dataset = 'arrays'
    config.data.folder = {images!r}
    config.sampling.checkpoint = {checkpoint!r}
    config.sampling.pds.speed_up = 1.0
    config.sampling.pds.alpha = 5.0
    config.sampling.batch_size = 8       # one row per device of the 8
    config.sampling.num_samples = 12     # two batches, the second cut
    config.eval.num_samples = 12
    config.eval.batch_size = 8
    config.eval.stats_file = {stats!r}
    config.estimate.num_images = 13      # odd: the two processes get 6 and 7
    config.estimate.batch_size = 4
    return config
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """{'config': a config file, 'root': a folder}: random NCSN++ weights, 20 random 32×32 images."""
    from pds_jax.config_loader import load_config

    root = tmp_path_factory.mktemp("multihost")
    images, ckpt = str(root / "images.npy"), str(root / "ckpt")
    np.save(images, np.random.default_rng(0).integers(0, 256, (20, 32, 32), dtype=np.uint8))
    config_file = str(root / "config.py")
    with open(config_file, "w") as f:
        f.write(CONFIG.format(images=images, checkpoint=ckpt, stats=TEST_STATS))
    config = load_config(config_file)
    params = random_params(config, seed=1, scale=0.05)
    state = checkpoints.make_score_sde_state(1, params, params, params, params, 0, 2e-4, 0.999,
                                             np.zeros(2, np.uint32))
    checkpoints.save_checkpoint(ckpt, state, step=1)
    return {"config": config_file, "root": root}


def _args(setup, workdir, mode):
    return [f"--config={setup['config']}", f"--workdir={workdir}", f"--mode={mode}"]


def _one_and_two(tmp_path_factory, setup, mode):
    """(workdir of 1 process × 8 devices, workdir of 2 processes × 4 devices, 2-process outputs)."""
    one, two = str(setup["root"] / f"{mode}_1x8"), str(setup["root"] / f"{mode}_2x4")
    mh.run_processes(tmp_path_factory, _args(setup, one, mode), 1, 8)
    results = mh.run_processes(tmp_path_factory, _args(setup, two, mode), 2, 4)
    return one, two, results


def _read(path):
    with open(path) as f:
        return json.load(f)


def test_sample_two_processes_equal_one_and_resume(tmp_path_factory, setup):
    one, two, results = _one_and_two(tmp_path_factory, setup, "sample")
    a = np.load(os.path.join(one, "samples", "samples.npz"))["images"]
    b = np.load(os.path.join(two, "samples", "samples.npz"))["images"]
    assert a.shape == (12, 32, 32, 1) and a.std() > 1
    np.testing.assert_array_equal(a, b)
    batches = sorted(os.listdir(os.path.join(two, "samples", "batches")))
    assert batches == [f"batch_0000{k}_p000{i}.npz" for k in (0, 1) for i in (0, 1)]
    with np.load(os.path.join(two, "samples", "batches", "batch_00000_p0001.npz")) as part:
        np.testing.assert_array_equal(part["rows"], np.arange(4, 8))  # process 1 holds devices 4..7
    assert _read(os.path.join(two, "samples", "run.json"))["num_processes"] == 2
    # One line per process on stdout from process 1 (start-up), the summary only from process 0.
    assert "wrote 12 samples" in results[0][1] and "wrote" not in results[1][1]
    assert "process 1 of 2: 4 local device(s), 8 global" in results[1][1]

    # Resume: a batch that one process had not written is drawn again, the other is kept.
    out = os.path.join(two, "samples")
    os.remove(os.path.join(out, "batches", "batch_00001_p0000.npz"))
    os.remove(os.path.join(out, "samples.npz"))
    with open(os.path.join(out, "progress.json")) as f:
        progress = json.load(f)
    with open(os.path.join(out, "progress.json"), "w") as f:
        json.dump(dict(progress, complete=False), f)
    mh.run_processes(tmp_path_factory, _args(setup, two, "sample"), 2, 4)
    assert _read(os.path.join(out, "run.json"))["resumed_batches"] == 1
    np.testing.assert_array_equal(np.load(os.path.join(out, "samples.npz"))["images"], a)


def test_ode_and_deis_run_sharded_over_processes(tmp_path_factory, setup):
    """The deterministic samplers run data-parallel too (x_T placed over all devices): each
    process holds and writes its own rows, and the images equal 1 × 8's byte for byte."""
    for name, flags in (("ode", ["--config.sampling.method=ode", "--config.sampling.ode.solver=heun",
                                 "--config.sampling.ode.num_steps=3"]),
                        ("deis", ["--config.sampling.method=deis", "--config.sampling.deis.num_steps=3"])):
        one, two = str(setup["root"] / f"{name}_1x8"), str(setup["root"] / f"{name}_2x4")
        mh.run_processes(tmp_path_factory, _args(setup, one, "sample") + flags, 1, 8)
        mh.run_processes(tmp_path_factory, _args(setup, two, "sample") + flags, 2, 4)
        a = np.load(os.path.join(one, "samples", "samples.npz"))["images"]
        np.testing.assert_array_equal(np.load(os.path.join(two, "samples", "samples.npz"))["images"], a)
        with np.load(os.path.join(two, "samples", "batches", "batch_00000_p0001.npz")) as part:
            np.testing.assert_array_equal(part["rows"], np.arange(4, 8))  # not the whole batch


def test_estimate_two_processes_equal_one(tmp_path_factory, setup):
    one, two, _ = _one_and_two(tmp_path_factory, setup, "estimate")
    a, b = np.load(os.path.join(one, "filters.npz")), np.load(os.path.join(two, "filters.npz"))
    assert int(a["count"]) == int(b["count"]) == 13
    for key in ("sum_power", "sum_sq", "freq", "space"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-7, atol=0, err_msg=key)
    assert _read(os.path.join(two, "filters.json"))["processes"] == 2


TRAIN = ["--config.training.n_iters=4", "--config.training.batch_size=8", "--config.training.n_jitted_steps=1",
         "--config.training.log_freq=2", "--config.training.eval_freq=2", "--config.training.snapshot_freq=4",
         "--config.training.snapshot_freq_for_preemption=2", "--config.training.snapshot_sampling=False",
         "--config.optim.warmup=2"]


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow  # ≈ 2.5 min on 2 cores: three multi-process training runs
def test_train_two_processes_equal_one_and_resume(tmp_path_factory, setup):
    """Data-parallel training on 2 × 4 devices: the same global batches (a function of seed and
    step), so the same losses and weights as 1 × 8 to float tolerance (the all-reduce sums in
    another order); process 0 writes; a rerun after the end resumes and has nothing to do, and a
    rerun with more steps resumes from the checkpoint on both processes."""
    one, two = str(setup["root"] / "train_1x8"), str(setup["root"] / "train_2x4")
    mh.run_processes(tmp_path_factory, _args(setup, one, "train") + TRAIN, 1, 8)
    results = mh.run_processes(tmp_path_factory, _args(setup, two, "train") + TRAIN, 2, 4)
    a, b = _losses(one), _losses(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [2, 4]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        assert rb["eval_loss"] == pytest.approx(ra["eval_loss"], rel=1e-5)
    wa = checkpoints.load_score_sde(os.path.join(one, "checkpoints", "checkpoint_4"))
    wb = checkpoints.load_score_sde(os.path.join(two, "checkpoints", "checkpoint_4"))
    for x, y in zip(jax.tree.leaves(wa["params_ema"]), jax.tree.leaves(wb["params_ema"])):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6)
    assert "trained to step 4" in results[0][1] and "trained to step" not in results[1][1]
    more = TRAIN[1:] + ["--config.training.n_iters=6"]
    results = mh.run_processes(tmp_path_factory, _args(setup, two, "train") + more, 2, 4)
    assert "resuming from" in results[0][1] and "trained to step 6" in results[0][1]
    assert [r["step"] for r in _losses(two)] == [2, 4, 6]


@pytest.mark.slow
def test_eval_two_processes_equal_one(tmp_path_factory, setup):
    one, two, _ = _one_and_two(tmp_path_factory, setup, "eval")
    a, b = _read(os.path.join(one, "eval", "eval.json")), _read(os.path.join(two, "eval", "eval.json"))
    np.testing.assert_array_equal(np.load(os.path.join(one, "eval", "samples.npz"))["images"],
                                  np.load(os.path.join(two, "eval", "samples.npz"))["images"])
    assert a["fid"] > 1 and abs(b["fid"] - a["fid"]) <= 1e-6 * a["fid"]
    assert a["kid"] is not None and abs(b["kid"]["mean"] - a["kid"]["mean"]) <= 1e-6 * abs(a["kid"]["mean"])


def test_a_missing_peer_is_an_error_within_a_bounded_time(tmp_path_factory, setup):
    """Process 1 of 2 never starts: process 0 must fail after the start-up timeout (10 s here)."""
    start = time.monotonic()
    procs = mh.launch(tmp_path_factory, _args(setup, str(setup["root"] / "alone"), "sample"), 2, 4, skip=(1,),
                      PDS_JAX_DISTRIBUTED_INIT_TIMEOUT="10")
    (rc, _out, err), = mh.wait_all(procs, timeout=120, expect=None)
    assert rc != 0, "process 0 must not succeed without its peer"
    assert "waiting up to 10 s for all processes" in err and "DEADLINE_EXCEEDED" in err
    assert time.monotonic() - start < 100
    assert not os.path.exists(str(setup["root"] / "alone" / "samples" / "samples.npz"))


def test_incomplete_distributed_flags_are_a_usage_error(tmp_path_factory, setup):
    proc = run_cli(tmp_path_factory, _args(setup, str(setup["root"] / "bad"), "sample") + ["--num_processes=2"],
                   expect=2)
    assert "--coordinator_address" in proc.stderr and "--process_id" in proc.stderr
    proc = run_cli(tmp_path_factory, _args(setup, str(setup["root"] / "bad"), "likelihood") + ["--distributed"],
                   expect=2)
    assert "--mode=likelihood runs on one host only" in proc.stderr
    env = {k: v for k, v in cli_env(tmp_path_factory).items() if not k.startswith(("SLURM_", "OMPI_", "TPU_"))}
    proc = run_cli(tmp_path_factory, _args(setup, str(setup["root"] / "bad"), "sample") + ["--distributed"],
                   expect=2, env=env)
    assert "--distributed found no cluster to auto-detect" in proc.stderr


@pytest.mark.parametrize("flags, fragment", [
    (dict(num_processes=2), "--coordinator_address, --process_id"),
    (dict(coordinator_address="10.0.0.1", num_processes=2, process_id=0), "host:port"),
    (dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=2), "[0, 2)"),
    (dict(auto=True, process_id=1), "need --coordinator_address"),
])
def test_check_flags_names_the_flag(flags, fragment):
    from pds_jax.distributed import DistributedFlags, check_flags

    with pytest.raises(ValueError, match=re.escape(fragment)):
        check_flags(DistributedFlags(**flags))


def test_check_flags_accepts_nothing_auto_and_a_full_set():
    from pds_jax.distributed import DistributedFlags, check_flags

    assert not DistributedFlags().requested
    for flags in (DistributedFlags(), DistributedFlags(auto=True),
                  DistributedFlags("127.0.0.1:1234", 2, 1), DistributedFlags("127.0.0.1:1234", 2, 1, True)):
        check_flags(flags)


def test_batch_files_assemble_rows_of_any_layout_and_drop_partial_batches(tmp_path):
    """Per-process files are put back in global row order; a batch missing rows is redrawn whole."""
    from pds_jax import batch_files
    from pds_jax.io_utils import atomic_save_npz

    images = np.arange(2 * 4 * 2).astype(np.uint8).reshape(8, 2, 1, 1)  # two batches of 4
    folder = str(tmp_path)
    atomic_save_npz(batch_files.path(folder, 0), {"images": images[:4], "nfe": np.int64(3)})  # one process
    for i, rows in enumerate((np.array([2, 3]), np.array([0, 1]))):  # two processes, written out of order
        atomic_save_npz(batch_files.path(folder, 1, i), {"images": images[4 + rows], "nfe": np.int64(3),
                                                         "rows": rows, "batch_size": np.int64(4)})
    assert batch_files.missing(folder, 3) == [2]
    loaded, nfes = batch_files.load(folder, 7)
    np.testing.assert_array_equal(loaded, images[:7])
    assert nfes == [3, 3]
    os.remove(batch_files.path(folder, 1, 0))
    assert batch_files.missing(folder, 2) == [1]
    assert not os.path.exists(batch_files.path(folder, 1, 1)), "the partial batch's other file is removed"


@pytest.mark.slow
def test_a_killed_process_stops_the_run_and_the_run_resumes(tmp_path_factory, setup):
    """kill -9 of process 1 mid-run: process 0 fails within the heartbeat timeout (10 s here);
    the same command then finishes the run with the images an uninterrupted run gives."""
    workdir = str(setup["root"] / "killed")
    args = _args(setup, workdir, "sample") + ["--config.sampling.num_samples=48"]
    procs = mh.launch(tmp_path_factory, args, 2, 4, PDS_JAX_DISTRIBUTED_HEARTBEAT_TIMEOUT="10")
    batches = os.path.join(workdir, "samples", "batches")
    deadline = time.monotonic() + 240
    while not os.path.exists(os.path.join(batches, "batch_00001_p0001.npz")) and time.monotonic() < deadline:
        time.sleep(0.2)
    procs[1].kill()
    killed = time.monotonic()
    (rc, _out, _err), _ = mh.wait_all(procs, timeout=120, expect=None)
    assert rc != 0 and time.monotonic() - killed < 100
    assert not os.path.exists(os.path.join(workdir, "samples", "samples.npz"))

    mh.run_processes(tmp_path_factory, args, 2, 4)
    run = _read(os.path.join(workdir, "samples", "run.json"))
    assert run["resumed_batches"] >= 2 and len(run["wall_time_per_batch_s"]) == 6 - run["resumed_batches"]
    single = str(setup["root"] / "killed_1x8")
    mh.run_processes(tmp_path_factory, _args(setup, single, "sample") + ["--config.sampling.num_samples=48"], 1, 8)
    np.testing.assert_array_equal(np.load(os.path.join(workdir, "samples", "samples.npz"))["images"],
                                  np.load(os.path.join(single, "samples", "samples.npz"))["images"])


@pytest.mark.slow
def test_embedded_model_two_processes_equal_one(tmp_path_factory, tmp_path):
    """The shipped Fashion-MNIST NCSN++ with its PDS filters, 50 PC steps: byte-identical samples.

    With an all-reduce of per-device partial sums in the Langevin step size, 1 of the 8192
    pixels differed by one level between the layouts; the gathered norms make them equal.
    """
    args = ["--config=fashion_mnist_pds", "--mode=sample", "--config.sampling.batch_size=8",
            "--config.sampling.num_samples=8", "--config.sampling.pds.speed_up=20"]
    mh.run_processes(tmp_path_factory, args + [f"--workdir={tmp_path / 'one'}"], 1, 8)
    mh.run_processes(tmp_path_factory, args + [f"--workdir={tmp_path / 'two'}"], 2, 4)
    a = np.load(tmp_path / "one" / "samples" / "samples.npz")["images"]
    np.testing.assert_array_equal(np.load(tmp_path / "two" / "samples" / "samples.npz")["images"], a)
