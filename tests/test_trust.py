"""Trust at every boundary: resume keyed on input content, kept training logs, score shape and
snr checks, readable errors for corrupt files and unwritable workdirs, NaN/Inf checks of every
CLI sampler, SHA-256 sums of the shipped assets.

Each test fails on the code before these checks existed (see the docstrings).
"""

import hashlib
import json
import os
import shutil
import types

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pds_jax import alpha_rule, controllable, filters, io_utils, metrics, provenance, resources
from pds_jax.modes import common
from pds_jax.modes import train as train_mode
from pds_jax.samplers.deis import get_deis_sampler
from pds_jax.samplers.ode import get_ode_sampler
from pds_jax.samplers.pc import get_pc_sampler
from pds_jax.sde import VESDE
from tests.model_helpers import interrupting_builder, load_config

import jax

SHAPE = (2, 8, 8, 1)
VE = VESDE(sigma_min=0.01, sigma_max=10.0, N=20)


def _config():
    return ml_collections.ConfigDict({"sampling": {"seed": 0, "method": "pc"}})


# --------------------------------------------------------------------------- #
# 1a. Resume keyed on the content of every input.
# --------------------------------------------------------------------------- #

def test_file_identity_is_size_mtime_and_content_hash(tmp_path):
    f = tmp_path / "checkpoint_1"
    f.write_bytes(b"weights of model A")
    ident = provenance.file_identity(str(f))
    assert ident["path"] == str(f) and ident["size"] == len(b"weights of model A")
    assert ident["mtime"] == os.stat(f).st_mtime
    assert ident["sha256"] == hashlib.sha256(b"weights of model A").hexdigest()


def test_resume_only_with_the_same_checkpoint_content(tmp_path, capsys):
    """Before: output_dir keyed on the config hash only, so an unfinished run was resumed with
    batches of the old model mixed into the new one."""
    ckpt, flt, work = tmp_path / "checkpoint_1", tmp_path / "filters.npz", str(tmp_path / "w")
    ckpt.write_bytes(b"model A")
    flt.write_bytes(b"filters")
    setup = types.SimpleNamespace(filter_files={"freq": str(flt)})
    inputs = common.run_inputs(str(ckpt), setup, stats_file="")
    assert sorted(inputs) == ["checkpoint", "freq_filter"]
    first = common.output_dir(work, "samples", _config(), inputs)
    assert first == os.path.join(work, "samples")
    assert common.output_dir(work, "samples", _config(), common.run_inputs(str(ckpt), setup)) == first

    # Same size and mtime, other bytes: only the content hash tells them apart.
    st = os.stat(ckpt)
    ckpt.write_bytes(b"model B")
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))
    capsys.readouterr()
    second = common.output_dir(work, "samples", _config(), common.run_inputs(str(ckpt), setup))
    assert second == os.path.join(work, "samples_1")
    notice = capsys.readouterr().out.strip()
    assert notice == (f"notice: {first} is an unfinished run of this config with other inputs (changed: "
                      f"checkpoint); this run writes to {second} instead of mixing the two")
    progress = json.load(open(os.path.join(second, "progress.json")))
    assert progress["inputs"]["checkpoint"] == hashlib.sha256(b"model B").hexdigest()

    flt.write_bytes(b"other filters")  # a changed filter file is another run too
    third = common.output_dir(work, "samples", _config(), common.run_inputs(str(ckpt), setup))
    assert third == os.path.join(work, "samples_2")
    assert f"notice: {first} is an unfinished run of this config with other inputs (changed: checkpoint, " \
        "freq_filter)" in capsys.readouterr().out


# --------------------------------------------------------------------------- #
# 1b. A fresh training start keeps an existing metrics.jsonl.
# --------------------------------------------------------------------------- #

def _write_metrics(path, steps):
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps))


def test_fresh_training_start_moves_old_metrics_aside(tmp_path, capsys):
    """Before: a start at step 0 rewrote metrics.jsonl with none of its records, and said nothing."""
    path = tmp_path / "metrics.jsonl"
    _write_metrics(path, [10, 20, 30])
    old = path.read_text()
    train_mode._forget_metrics_after(str(path), 0)
    backup = tmp_path / "metrics.jsonl.before_step_0"
    assert backup.read_text() == old and path.read_text() == ""
    assert capsys.readouterr().out.strip() == (
        f"notice: {path} has 3 records after step 0, where training starts; moved them to {backup}")
    _write_metrics(path, [10, 20])
    train_mode._forget_metrics_after(str(path), 10)  # a resume: step 20 is trained again
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [10]
    moved = (tmp_path / "metrics.jsonl.before_step_10").read_text().splitlines()
    assert [json.loads(x)["step"] for x in moved] == [20]
    _write_metrics(path, [5])
    train_mode._forget_metrics_after(str(path), 0)  # a second fresh start: a second backup
    assert json.loads((tmp_path / "metrics.jsonl.before_step_0_1").read_text())["step"] == 5
    assert backup.read_text() == old  # the first backup is never overwritten


# --------------------------------------------------------------------------- #
# 1c. The score's shape is checked at trace time by every sampler.
# --------------------------------------------------------------------------- #

def _one_image_score(x, t):
    return -x[:1]  # batch 1 for a batch of 2: broadcast silently before


@pytest.mark.parametrize("build", [
    lambda: get_pc_sampler(VE, SHAPE, num_steps=2),
    lambda: get_ode_sampler(VE, SHAPE, method="euler", num_steps=2),
    lambda: get_deis_sampler(VE, SHAPE, 2, order=1),
], ids=["pc", "ode", "deis"])
def test_score_of_another_batch_size_is_refused_at_trace_time(build):
    bad = r"score_fn returned shape \(1, 8, 8, 1\) for x of shape \(2, 8, 8, 1\)"
    with pytest.raises(ValueError, match=bad):
        build().lower(jax.random.PRNGKey(0), _one_image_score)


def test_controllable_sampler_checks_the_score_shape():
    inpaint = controllable.get_pc_inpainter(VE, SHAPE, speed_up=10)
    data, mask = jnp.zeros(SHAPE), jnp.ones(SHAPE)
    with pytest.raises(ValueError, match="score_fn returned shape"):
        inpaint(jax.random.PRNGKey(0), _one_image_score, data, mask)


# --------------------------------------------------------------------------- #
# 1d. snr must be finite and > 0.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("snr", [0.0, -0.16, float("nan"), float("inf")])
def test_bad_snr_is_refused_by_pc_and_controllable_builders(snr):
    with pytest.raises(ValueError, match=r"snr \(config.sampling.snr\) must be a finite number > 0"):
        get_pc_sampler(VE, SHAPE, snr=snr, num_steps=2)
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        controllable.get_pc_colorizer(VE, (2, 8, 8, 3), snr=snr, speed_up=10)


# --------------------------------------------------------------------------- #
# 2. Corrupt files and unwritable workdirs: one clear error, before the work.
# --------------------------------------------------------------------------- #

def _truncated_npz(path, **arrays):
    io_utils.atomic_save_npz(str(path), arrays or {"a": np.arange(1000.0)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def test_truncated_filter_file_names_file_and_fix(tmp_path):
    """Before: zipfile.BadZipFile with a traceback."""
    path = _truncated_npz(tmp_path / "filters.npz")
    bad = rf"filter file {path} is truncated, corrupt or not a .npz file \(BadZipFile.*--mode=estimate"
    with pytest.raises(ValueError, match=bad):
        filters.FilterStats.load(path)


def test_truncated_statistics_file_names_file_and_fix(tmp_path):
    path = _truncated_npz(tmp_path / "stats.npz")
    bad = rf"statistics file {path} is truncated, corrupt or not a .npz file.*compute_statistics"
    with pytest.raises(ValueError, match=bad):
        metrics.load_statistics(path)


def test_corrupt_batch_of_a_resumed_run(tmp_path):
    batches = tmp_path / "batches"
    io_utils.atomic_save_npz(str(batches / "batch_00000.npz"), {"images": np.zeros((2, 4, 4, 1), np.uint8),
                                                               "nfe": np.int64(3)})
    bad = _truncated_npz(batches / "batch_00001.npz", images=np.ones((2, 64, 64, 1), np.uint8))
    with pytest.raises(ValueError, match=rf"batch file {bad} is truncated, corrupt or not a .npz.*redrawn"):
        common.load_batches(str(batches), 4)


def test_corrupt_progress_json(tmp_path):
    """Before: json.JSONDecodeError with a traceback."""
    (tmp_path / "samples" / "batches").mkdir(parents=True)
    (tmp_path / "samples" / "progress.json").write_text('{"config_hash": "ab')
    bad = r"progress file .*progress.json is truncated, corrupt or not JSON \(JSONDecodeError"
    with pytest.raises(ValueError, match=bad):
        common.output_dir(str(tmp_path), "samples", _config(), {})


def test_corrupt_alpha_rule(tmp_path):
    (tmp_path / "rule.json").write_text("{")
    with pytest.raises(ValueError, match="the alpha rule .*rule.json is truncated, corrupt or not JSON"):
        alpha_rule.load_rule(str(tmp_path / "rule.json"))


def test_workdir_that_is_a_file_fails_before_the_work(tmp_path):
    """Before: FileExistsError '[Errno 17] File exists' from os.makedirs."""
    work = tmp_path / "work"
    work.write_text("not a folder")
    with pytest.raises(ValueError, match=rf"--workdir={work} is a regular file, not a folder"):
        common.output_dir(str(work), "samples", _config(), {})


def test_unwritable_workdir_fails_before_the_work(tmp_path, monkeypatch):
    """A read-only folder (simulated: the tests may run as root, who can write anywhere)."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io_utils.tempfile, "mkstemp", refuse)
    with pytest.raises(ValueError, match=rf"--workdir={tmp_path} is not writable \(Permission denied\)"):
        common.output_dir(str(tmp_path), "samples", _config(), {})
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- #
# 3. NaN/Inf: every sampler the CLI builds checks its output.
# --------------------------------------------------------------------------- #

def _nan_score(x, t):
    return x * jnp.nan


@pytest.fixture(scope="module")
def fm_config():
    config = load_config("fashion_mnist_pds")
    config.sampling.pds.alpha = 5.0
    return config


@pytest.mark.parametrize("method,hint", [
    ("pc", "lower sampling.pds.speed_up, raise sampling.pds.alpha, or lower sampling.snr"),
    ("ode", "raise sampling.ode.num_steps or choose another sampling.ode.solver"),
    ("deis", "raise sampling.deis.num_steps or lower sampling.deis.order"),
], ids=["pc", "ode", "deis"])
def test_cli_samplers_refuse_nan_naming_the_setting(fm_config, method, hint, capsys):
    """Before: only PC could check (and the CLI did not ask); ODE/DEIS returned NaN images."""
    config = fm_config.copy_and_resolve_references()
    config.sampling.method = method
    config.sampling.pds.speed_up = 500.0  # PC: 2 steps
    config.sampling.ode.update(dict(solver="euler", num_steps=2))
    config.sampling.deis.update(dict(num_steps=2, order=1))
    sde = VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
    sampler, setup = common.build_sampler(config, sde, (1, 32, 32, 1), None)
    assert sampler.check_finite
    with pytest.raises(FloatingPointError, match=f"{method} sampler produced non-finite values") as e:
        sampler(jax.random.PRNGKey(0), _nan_score)
    assert hint in str(e.value)
    note = capsys.readouterr().out
    if method == "pc":
        assert "ignores" not in note
    else:  # 5. the PDS section of the default config is ignored, in one line
        assert note.strip() == (f"note: sampling.method={method} ignores the sampling.pds section "
                                "(filters, speed_up, alpha): PDS preconditions the PC sampler only")


# --------------------------------------------------------------------------- #
# 4. SHA-256 sums of the shipped assets.
# --------------------------------------------------------------------------- #

def test_shipped_assets_match_their_sums():
    sums = resources._read_sums(resources.assets_root())
    assert sorted(sums) == sorted(resources.SUMMED)
    for name, digest in sums.items():
        assert io_utils.sha256_file(resources.asset_path(name)) == digest


def test_corrupted_shipped_asset_is_refused_naming_the_file(tmp_path, monkeypatch):
    """Before: a flipped bit in a shipped filter file was read without notice."""
    name = "checkpoints/fashion_mnist_ncsnpp/filters.npz"
    copy = tmp_path / "checkpoints" / "fashion_mnist_ncsnpp" / "filters.npz"
    copy.parent.mkdir(parents=True)
    shutil.copy(resources.asset_path(name), copy)
    shutil.copy(os.path.join(resources.assets_root(), resources.SUMS), tmp_path / resources.SUMS)
    monkeypatch.setattr(resources, "assets_root", lambda: str(tmp_path))
    monkeypatch.chdir(tmp_path / "checkpoints")  # so that `name` is not found in the working directory
    assert resources.resolve(name) == str(copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    bad = rf"shipped asset {copy} is corrupt: its SHA-256 is .* git checkout -- {name}"
    with pytest.raises(ValueError, match=bad):
        resources.resolve(name)
    with pytest.raises(ValueError, match="is corrupt"):  # also when the folder is named
        resources.resolve("checkpoints/fashion_mnist_ncsnpp")


# --------------------------------------------------------------------------- #
# End to end: an interrupted sample run, then a new checkpoint in the same folder.
# --------------------------------------------------------------------------- #

def _tiny_sample_config(ckpt_dir):
    """configs/fashion_mnist_pds.py with an nf = 4 model, 4 PC steps, 4 samples in batches of 2."""
    config = load_config("fashion_mnist_pds")
    config.model.update(dict(nf=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                             num_scales=4))
    config.sampling.pds.update(dict(speed_up=1.0, alpha=5.0))
    config.sampling.checkpoint = str(ckpt_dir)
    config.sampling.update(dict(num_samples=4, batch_size=2))
    return config


def _save_random_checkpoint(folder, config, step, seed):
    from pds_jax import checkpoints
    from tests.model_helpers import random_params
    params = random_params(config, seed=seed, scale=0.05)
    state = checkpoints.make_score_sde_state(step, params, params, params, params, 0, 2e-4, 0.999,
                                             np.zeros(2, np.uint32))
    return checkpoints.save_checkpoint(str(folder), state, step=step)


def test_sample_run_after_the_checkpoint_changed_starts_a_new_folder(tmp_path, monkeypatch, capsys):
    """Before: the second run resumed the first folder and mixed batch 0 of checkpoint_1 with
    batch 1 of checkpoint_2 into one samples.npz."""
    from pds_jax.modes import sample as sample_mode
    ckpt_dir, work = tmp_path / "ckpt", tmp_path / "work"
    config = _tiny_sample_config(ckpt_dir)
    first_ckpt = _save_random_checkpoint(ckpt_dir, config, 1, seed=1)
    real_build = sample_mode.build_sampler

    monkeypatch.setattr(sample_mode, "build_sampler", interrupting_builder(real_build))
    with pytest.raises(KeyboardInterrupt):
        sample_mode.run(config, str(work))
    assert f"checkpoint: {first_ckpt}" in capsys.readouterr().out  # 5. the checkpoint used is named
    monkeypatch.setattr(sample_mode, "build_sampler", real_build)

    second_ckpt = _save_random_checkpoint(ckpt_dir, config, 2, seed=2)  # training went on
    report = sample_mode.run(config, str(work))
    out = capsys.readouterr().out
    assert f"checkpoint: {second_ckpt}" in out
    assert (f"notice: {work / 'samples'} is an unfinished run of this config with other inputs "
            f"(changed: checkpoint); this run writes to {work / 'samples_1'}") in out
    assert report["output_dir"] == str(work / "samples_1") and report["resumed_batches"] == 0
    saved = json.load(open(work / "samples_1" / "run.json"))
    ident = saved["inputs"]["checkpoint"]
    assert ident["path"] == os.path.abspath(second_ckpt) and ident["size"] == os.path.getsize(second_ckpt)
    assert ident["sha256"] == hashlib.sha256(open(second_ckpt, "rb").read()).hexdigest()
    assert sorted(saved["inputs"]) == ["checkpoint", "freq_filter", "space_filter"]
    assert os.listdir(work / "samples" / "batches") == ["batch_00000.npz"]  # the old run is untouched


def test_a_run_that_fails_before_its_first_batch_leaves_no_folder(tmp_path):
    """Before: <workdir>/samples with an empty batches/ stayed behind."""
    out = common.output_dir(str(tmp_path), "samples", _config(), {})
    with pytest.raises(FloatingPointError):
        with common.discarded_if_empty(out):
            raise FloatingPointError("batch 0 diverged")
    assert os.listdir(tmp_path) == []
    out = common.output_dir(str(tmp_path), "samples", _config(), {})
    (tmp_path / "samples" / "batches" / "batch_00000.npz").write_bytes(b"x")
    with pytest.raises(KeyboardInterrupt):
        with common.discarded_if_empty(out):
            raise KeyboardInterrupt  # after a batch: kept, to resume
    assert os.listdir(tmp_path / "samples" / "batches") == ["batch_00000.npz"]


def test_cli_workdir_that_is_a_file_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    work = tmp_path / "work"
    work.write_text("a file")
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "pds_jax", "--mode=sample", f"--workdir={work}",
                          "--config=configs/fashion_mnist_pds.py", "--config.sampling.pds.alpha=5"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error")]
    assert errors == [f"error (ValueError): --workdir={work} is a regular file, not a folder; pass a folder "
                      "path (it is created if missing)"]
    assert work.read_text() == "a file"


def test_checking_a_missing_workdir_creates_nothing(tmp_path):
    io_utils.check_output_folder(str(tmp_path / "new" / "work"))
    assert os.listdir(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"is a regular file, not a folder \(its parent .*file is a file\)"):
        io_utils.check_output_folder(str(tmp_path / "file" / "work"))


def test_an_unfinished_run_of_an_older_version_is_not_resumed(tmp_path, capsys):
    """progress.json without input hashes: the inputs it was drawn from are unknown."""
    (tmp_path / "samples" / "batches").mkdir(parents=True)
    (tmp_path / "samples" / "progress.json").write_text(json.dumps(
        {"config_hash": provenance.config_hash(_config()), "complete": False}))
    ckpt = tmp_path / "checkpoint_1"
    ckpt.write_bytes(b"model")
    out = common.output_dir(str(tmp_path), "samples", _config(), common.run_inputs(str(ckpt)))
    assert out == str(tmp_path / "samples_1")
    assert "(not recorded: started by an older pds_jax)" in capsys.readouterr().out
