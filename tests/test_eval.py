"""`main.py --mode=eval` end to end on a tiny random NCSN++ (32×32×1, 4 PDS steps).

The shipped Fashion-MNIST feature net and reference statistics are used as they are; the
score model is random, so the FIDs are large, but every path runs: sampling with the
shipped PDS filters, features, FID, KID, eval.json, resume, never overwriting a run.
"""

import json
import os

import numpy as np
import pytest

from pds_jax import checkpoints, metrics
from pds_jax.feature_nets import CLASSIFIER_TRAIN_STATS, get_feature_fn
from pds_jax.modes import eval as eval_mode
from pds_jax.modes import sample as sample_mode
from tests.model_helpers import interrupting_builder, load_config, random_params

EVAL_KEYS = {"fid", "kid", "kid_note", "fid_note", "num_samples", "batch_size", "num_steps",
             "nfe_per_sample", "nfe_per_batch", "sampler", "feature_net", "reference", "wall_time",
             "device", "config_hash", "config", "checkpoint", "output_dir", "resumed_batches", "date"}


def tiny_eval_config(ckpt_dir, stats_file=CLASSIFIER_TRAIN_STATS, kid_stats_file=None):
    """configs/fashion_mnist_pds.py with an nf = 4 model, 4 PDS steps and 6 samples in batches of 4."""
    config = load_config("fashion_mnist_pds")
    config.model.update(dict(nf=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                             num_scales=4))
    config.sampling.pds.speed_up = 1.0
    config.sampling.pds.alpha = 5.0  # explicit: the default becomes 'auto' once a rule is installed
    config.sampling.checkpoint = str(ckpt_dir)
    config.eval.num_samples = 6
    config.eval.batch_size = 4
    config.eval.stats_file = str(stats_file)
    if kid_stats_file is not None:
        config.eval.kid_stats_file = str(kid_stats_file)
    return config


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    params = random_params(tiny_eval_config(folder), seed=1, scale=0.05)
    state = checkpoints.make_score_sde_state(1, params, params, params, params, 0, 2e-4, 0.999, np.zeros(2, np.uint32))
    checkpoints.save_checkpoint(str(folder), state, step=1)
    return folder


@pytest.fixture(scope="module")
def first_run(ckpt_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("work")
    report = eval_mode.run(tiny_eval_config(ckpt_dir), str(workdir))
    return workdir, report


def test_eval_writes_metrics_samples_and_report(first_run):
    workdir, report = first_run
    out = os.path.join(workdir, "eval")
    assert report["output_dir"] == out
    with open(os.path.join(out, "eval.json")) as f:
        saved = json.load(f)
    assert EVAL_KEYS <= set(saved)
    assert np.isfinite(saved["fid"]) and saved["fid"] > 0
    # the default config's KID reference: the 10k test features (the train stats hold none)
    assert saved["kid"] is not None and np.isfinite(saved["kid"]["mean"])
    assert "fashion_mnist_test_stats.npz" in saved["kid_note"]
    assert saved["reference"]["kid_stats_file"].endswith("fashion_mnist_test_stats.npz")
    assert "kid_stats_file" in saved["inputs"]
    assert saved["num_samples"] == 6 and saved["batch_size"] == 4
    assert saved["num_steps"] == 4 and saved["nfe_per_sample"] == 8  # corrector + predictor
    assert saved["sampler"]["method"] == "pc" and saved["sampler"]["pds"] is True
    assert saved["sampler"]["alpha"] == saved["pds_alpha"] == 5.0 and saved["sampler"]["num_steps"] == 4
    assert saved["preconditioner"]["freq"]["max"] <= 1.25 + 1e-6  # α/(α-1) at α = 5
    assert set(saved["wall_time"]) >= {"sampling_s", "features_s"}
    assert saved["device"]["platform"] == "cpu" and saved["resumed_batches"] == 0
    samples = np.load(os.path.join(out, "samples.npz"))["images"]
    assert samples.shape == (6, 32, 32, 1) and samples.dtype == np.uint8
    assert os.path.getsize(os.path.join(out, "grid.png")) > 0
    assert json.load(open(os.path.join(out, "progress.json")))["complete"] is True


def test_fid_against_statistics_of_the_same_samples_is_zero_and_kid_runs(first_run, ckpt_dir, tmp_path):
    """Degenerate case: the reference IS the samples (same seed ⇒ same images) ⇒ FID = 0."""
    workdir, report = first_run
    samples = np.load(os.path.join(report["output_dir"], "samples.npz"))["images"]
    own = metrics.compute_statistics(samples, get_feature_fn("fashion_mnist"), keep_features=True,
                                     progress=False)
    stats_file = metrics.save_statistics(str(tmp_path / "own.npz"), own)
    again = eval_mode.run(tiny_eval_config(ckpt_dir, stats_file, kid_stats_file=""), str(workdir))
    assert again["output_dir"] == os.path.join(workdir, "eval_1"), "another config: another folder"
    np.testing.assert_array_equal(np.load(os.path.join(again["output_dir"], "samples.npz"))["images"], samples)
    scale = np.trace(own.cov)
    assert abs(again["fid"]) < 1e-6 * scale
    assert report["fid"] > 1e-3 * scale
    assert again["kid"] is not None and np.isfinite(again["kid"]["mean"])
    assert "subsets of 6" in again["kid_note"]


def test_kid_without_raw_reference_features_is_skipped_with_the_fix(ckpt_dir, tmp_path):
    report = eval_mode.run(tiny_eval_config(ckpt_dir, kid_stats_file=""), str(tmp_path))
    assert report["kid"] is None and "config.eval.kid_stats_file" in report["kid_note"]
    with pytest.raises(ValueError, match="kid_stats_file=.*train_stats.npz holds only mean/covariance"):
        eval_mode.run(tiny_eval_config(ckpt_dir, kid_stats_file=CLASSIFIER_TRAIN_STATS), str(tmp_path))


def test_interrupted_eval_resumes_with_the_same_samples(first_run, ckpt_dir, tmp_path, monkeypatch):
    config = tiny_eval_config(ckpt_dir)
    real_build = sample_mode.build_sampler

    monkeypatch.setattr(eval_mode, "build_sampler", interrupting_builder(real_build))
    with pytest.raises(KeyboardInterrupt):
        eval_mode.run(config, str(tmp_path))
    out = tmp_path / "eval"
    assert sorted(os.listdir(out / "batches")) == ["batch_00000.npz"]
    assert not (out / "eval.json").exists()
    monkeypatch.setattr(eval_mode, "build_sampler", real_build)
    report = eval_mode.run(config, str(tmp_path))
    assert report["output_dir"] == str(out) and report["resumed_batches"] == 1
    expected = np.load(os.path.join(first_run[1]["output_dir"], "samples.npz"))["images"]
    np.testing.assert_array_equal(np.load(out / "samples.npz")["images"], expected)
    assert report["fid"] == pytest.approx(first_run[1]["fid"], rel=1e-9)


def test_a_finished_eval_is_never_overwritten(ckpt_dir, tmp_path):
    config = tiny_eval_config(ckpt_dir)
    config.eval.num_samples = 2
    config.eval.batch_size = 2
    first = eval_mode.run(config, str(tmp_path))
    before = open(os.path.join(first["output_dir"], "eval.json")).read()
    second = eval_mode.run(config, str(tmp_path))
    assert second["output_dir"] == str(tmp_path / "eval_1")
    assert open(os.path.join(first["output_dir"], "eval.json")).read() == before


def test_eval_of_a_deterministic_sampler(ckpt_dir, tmp_path):
    """Any configured sampler: DEIS tAB3 (PDS filters off: they apply to the PC sampler only)."""
    config = tiny_eval_config(ckpt_dir)
    config.sampling.method = "deis"
    config.sampling.deis.num_steps = 3
    config.sampling.pds.freq_filter = config.sampling.pds.space_filter = ""
    report = eval_mode.run(config, str(tmp_path))
    assert report["sampler"]["method"] == "deis" and report["sampler"]["num_steps"] == 3
    assert report["num_steps"] == 3 and report["sampler"]["order"] == 3
    assert report["nfe_per_sample"] == 3 and report["nfe_per_batch"] == [3, 3]
    assert np.isfinite(report["fid"])


def test_inception_without_weights_fails_before_sampling(ckpt_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("PDS_JAX_INCEPTION_WEIGHTS", raising=False)
    config = tiny_eval_config(ckpt_dir)
    config.eval.feature_net = "inception"
    with pytest.raises(ValueError, match="convert_fid_inception_weights"):
        eval_mode.run(config, str(tmp_path))
    config.eval.inception_weights = str(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        eval_mode.run(config, str(tmp_path))
    assert not (tmp_path / "eval").exists()


def test_bad_reference_statistics_fail_before_sampling(ckpt_dir, tmp_path):
    config = tiny_eval_config(ckpt_dir, stats_file="")
    with pytest.raises(ValueError, match="stats_file is empty"):
        eval_mode.run(config, str(tmp_path))
    config.eval.stats_file = str(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        eval_mode.run(config, str(tmp_path))
    other = metrics.FeatureStatistics(np.zeros(4), np.eye(4), 10, "inception")
    config.eval.stats_file = metrics.save_statistics(str(tmp_path / "inception.npz"), other)
    with pytest.raises(ValueError, match="'inception'"):
        eval_mode.run(config, str(tmp_path))
    assert not (tmp_path / "eval").exists()
