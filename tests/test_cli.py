"""`main.py` end to end: estimate, sample, compare, the official PDS flags, errors, the default model.

Each test runs `python main.py ...` as a user would (see `tests/cli_helpers.py`) on a
tiny NCSN++ trained for 8 steps on random 16×16 images; its full schedule is N = 20
PC steps (NFE 40 with one corrector step).
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from pds_jax import checkpoints, resources
from tests.cli_helpers import (NUM_SCALES, ROOT, IMAGE_SIZE, read_json, run_cli, tiny_setup,
                               trained_workdir)

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "fashion_mnist_pds.py")
DEFAULT_MODEL = resources.asset_path("checkpoints/fashion_mnist_ncsnpp")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def estimated(tmp_path_factory, setup):
    """A workdir where `--mode=estimate` wrote filters.{npz,png,json} of the tiny dataset."""
    workdir = str(tmp_path_factory.mktemp("estimate"))
    out = run_cli(tmp_path_factory, [f"--config={setup['config']}", f"--workdir={workdir}", "--mode=estimate"])
    return workdir, out


def sample_args(setup, trained, workdir, *extra, mode="sample"):
    return [f"--config={setup['config']}", f"--workdir={workdir}", f"--mode={mode}",
            f"--config.sampling.checkpoint={os.path.join(trained, 'checkpoints')}", *extra]


def pds_flags(filters, speed_up=5):
    return [f"--config.sampling.pds.freq_filter={filters}", f"--config.sampling.pds.space_filter={filters}",
            f"--config.sampling.pds.speed_up={speed_up}"]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, setup, trained, estimated):
    """A workdir after one PDS sample run: 4 images in 2 batches, N = 20 / 5 = 4 steps."""
    workdir = str(tmp_path_factory.mktemp("sample"))
    filters = os.path.join(estimated[0], "filters.npz")
    args = sample_args(setup, trained, workdir, *pds_flags(filters))
    run_cli(tmp_path_factory, args)
    return workdir, args


# --------------------------------------------------------------------------- estimate


def test_estimate_writes_filter_statistics(estimated):
    from pds_jax.filters import FilterStats

    workdir, out = estimated
    stats = FilterStats.load(os.path.join(workdir, "filters.npz"))
    assert stats.shape == (IMAGE_SIZE, IMAGE_SIZE, 1) and stats.count == 16
    assert stats.dataset == "arrays" and not stats.centered
    summary = read_json(os.path.join(workdir, "filters.json"))
    assert summary["count"] == 16 and summary["shape"] == [IMAGE_SIZE, IMAGE_SIZE, 1]
    assert summary["A"]["max"] > summary["A"]["min"] > 0
    # Row 1: R per channel, row 2: A per channel (each tile enlarged to >= 128 px).
    with Image.open(os.path.join(workdir, "filters.png")) as png:
        assert png.size[0] >= 128 and png.size[1] >= 2 * 128
    assert "wrote npz" in out.stdout


def test_a_second_estimate_takes_a_free_name_and_an_explicit_output_is_never_overwritten(
        tmp_path_factory, setup, estimated, tmp_path):
    workdir, _ = estimated
    npz = os.path.join(workdir, "filters.npz")
    before = os.path.getmtime(npz), open(npz, "rb").read()
    again = tmp_path / "again"
    shutil.copytree(workdir, again)
    out = run_cli(tmp_path_factory, [f"--config={setup['config']}", f"--workdir={again}", "--mode=estimate"])
    assert os.path.exists(again / "filters_1.npz") and os.path.exists(again / "filters_1.json")
    assert str(again / "filters_1.npz") in out.stdout
    assert open(again / "filters.npz", "rb").read() == before[1]
    out = run_cli(tmp_path_factory, [f"--config={setup['config']}", f"--workdir={workdir}", "--mode=estimate",
                                     f"--config.estimate.output={npz}"], expect=2)
    assert npz in out.stderr and "already exists" in out.stderr and "--config.estimate.output=" in out.stderr
    assert "Traceback" not in out.stderr
    assert (os.path.getmtime(npz), open(npz, "rb").read()) == before


# --------------------------------------------------------------------------- sample


def test_sample_writes_images_and_run_json(sampled, trained):
    workdir, _ = sampled
    out = os.path.join(workdir, "samples")
    samples = np.load(os.path.join(out, "samples.npz"))["images"]
    assert samples.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 1) and samples.dtype == np.uint8
    # An 8-step model saturates most pixels at 0 or 255, but every image is its own.
    assert all(img.std() > 0 for img in samples)
    assert len({img.tobytes() for img in samples}) == 4
    assert sorted(os.listdir(os.path.join(out, "images"))) == [f"sample_{i:05d}.png" for i in range(4)]
    with Image.open(os.path.join(out, "images", "sample_00002.png")) as png:
        np.testing.assert_array_equal(np.asarray(png).reshape(samples[2].shape), samples[2])
    with Image.open(os.path.join(out, "grid.png")) as grid:
        assert grid.size == (2 + 2 * (IMAGE_SIZE + 2), 2 + 2 * (IMAGE_SIZE + 2))

    run = read_json(os.path.join(out, "run.json"))
    assert run["mode"] == "sample" and run["num_samples"] == 4 and run["batch_size"] == 2
    assert run["num_steps"] == NUM_SCALES // 5
    nfe = run["nfe_per_batch"]
    assert (nfe if isinstance(nfe, list) else [nfe] * 2) == [2 * (NUM_SCALES // 5)] * 2  # (N/k)(1 corrector + 1)
    assert len(run["wall_time_per_batch_s"]) == 2 and all(t > 0 for t in run["wall_time_per_batch_s"])
    assert run["first_batch_s_incl_compile"] > 0 and run["resumed_batches"] == 0
    assert run["device"]["platform"] == "cpu" and run["device"]["device_count"] >= 1
    assert run["checkpoint"] == os.path.join(trained, "checkpoints", "checkpoint_8")
    assert run["config"]["sampling"]["pds"]["speed_up"] == 5.0
    assert run["preconditioner"]["freq"] is not None and run["preconditioner"]["space"] is not None
    assert run["pds_alpha"] == 5.0  # the tiny config's α
    assert read_json(os.path.join(out, "progress.json"))["complete"] is True


def test_second_sample_run_writes_a_new_folder(tmp_path_factory, sampled):
    workdir, args = sampled
    first = os.path.join(workdir, "samples", "samples.npz")
    before = os.path.getmtime(first)
    run_cli(tmp_path_factory, args)
    assert os.path.getmtime(first) == before
    again = np.load(os.path.join(workdir, "samples_1", "samples.npz"))["images"]
    # Same seed, same images (in another process).
    np.testing.assert_array_equal(again, np.load(first)["images"])


def test_interrupted_sample_run_resumes(tmp_path_factory, sampled, tmp_path):
    """A run stopped after its first batch finishes the second, with the same images."""
    workdir, args = sampled
    reference = np.load(os.path.join(workdir, "samples", "samples.npz"))["images"]
    new = str(tmp_path / "w")
    out = os.path.join(new, "samples")
    shutil.copytree(os.path.join(workdir, "samples"), out)
    # What a kill during batch 1 leaves: batch 0 on disk, progress not complete.
    for name in ("samples.npz", "run.json", "grid.png", "batches/batch_00001.npz"):
        os.remove(os.path.join(out, name))
    shutil.rmtree(os.path.join(out, "images"))
    progress = read_json(os.path.join(out, "progress.json"))
    with open(os.path.join(out, "progress.json"), "w") as f:
        json.dump(dict(progress, complete=False), f)

    run_cli(tmp_path_factory, [a.replace(f"--workdir={workdir}", f"--workdir={new}") for a in args])
    assert sorted(os.listdir(new)) == ["samples"]  # resumed in place, no samples_1
    run = read_json(os.path.join(out, "run.json"))
    assert run["resumed_batches"] == 1 and len(run["wall_time_per_batch_s"]) == 1
    np.testing.assert_array_equal(np.load(os.path.join(out, "samples.npz"))["images"], reference)
    assert len(os.listdir(os.path.join(out, "images"))) == 4

    # A changed config never resumes a folder of another config: it gets a new one.
    run_cli(tmp_path_factory, [a.replace(f"--workdir={workdir}", f"--workdir={new}") for a in args]
            + ["--config.sampling.seed=1", "--config.sampling.num_samples=2"])
    assert sorted(os.listdir(new)) == ["samples", "samples_1"]
    other = np.load(os.path.join(new, "samples_1", "samples.npz"))["images"]
    assert other.shape[0] == 2 and not np.array_equal(other, reference[:2])


def test_compare_three_panels(tmp_path_factory, setup, trained, estimated, tmp_path):
    workdir = str(tmp_path)
    filters = os.path.join(estimated[0], "filters.npz")
    run_cli(tmp_path_factory, sample_args(setup, trained, workdir, *pds_flags(filters, speed_up=5),
                                          "--config.sampling.pds.alpha=auto", mode="compare"))
    out = os.path.join(workdir, "compare")
    run = read_json(os.path.join(out, "run.json"))
    n, fast = NUM_SCALES, NUM_SCALES // 5
    names = ["full_vanilla", "fast_vanilla", "fast_pds"]
    panels = run["panels"]
    assert sorted(panels) == sorted(names)
    assert [panels[p]["num_steps"] for p in names] == [n, fast, fast]
    assert [panels[p]["nfe"] for p in names] == [2 * n, 2 * fast, 2 * fast]
    assert panels["full_vanilla"]["preconditioner"]["freq"] is None
    assert panels["fast_vanilla"]["preconditioner"]["freq"] is None
    assert panels["fast_pds"]["preconditioner"]["freq"] is not None
    assert panels["fast_vanilla"]["eps"] == pytest.approx(5 * panels["full_vanilla"]["eps"])
    assert run["speed_up"] == 5.0 and run["device"]["platform"] == "cpu"
    from pds_jax import alpha_rule, filters as filter_files  # 'auto' at the N steps run
    from pds_jax.sde import VESDE

    stats = filter_files.FilterStats.load(filters)
    sde = VESDE(0.01, 25.0, NUM_SCALES)  # the tiny config's σ range (configs/fashion_mnist_pds.py)
    expected = alpha_rule.auto_alpha(stats.freq, stats.space, sde, fast, eps=1e-5 * 5)
    assert panels["fast_pds"]["pds_alpha"] == pytest.approx(expected)
    assert expected >= alpha_rule.load_rule()(fast)  # the measured rule, bounded below by stability
    assert panels["full_vanilla"]["pds_alpha"] is None and panels["fast_vanilla"]["pds_alpha"] is None

    widths = []
    for name in names:
        with Image.open(os.path.join(out, f"panel_{name}.png")) as png:
            widths.append(png.size)
    with Image.open(os.path.join(out, "comparison.png")) as png:
        # Three captioned grids (2-line, 26 px strip) side by side with 12 px gaps; the 16-px
        # tiles are enlarged 4x (compare.TILE_PIXELS = 64), the panel files keep 1:1
        size = lambda tile: (2 * (tile + 2) + 2, tile + 4)  # noqa: E731  (2 samples in a row, 2 px padding)
        assert widths[0] == size(IMAGE_SIZE)
        assert png.size == (3 * size(4 * IMAGE_SIZE)[0] + 2 * 12, size(4 * IMAGE_SIZE)[1] + 26)
    samples = np.load(os.path.join(out, "samples.npz"))
    assert sorted(samples.files) == sorted(panels)
    # PDS is on in its panel: 1 < max D ≤ α/(α−1) (the tiny random model's pixels saturate, so
    # the uint8 panels need not differ at the large α the stability floor asks for at N = 4)
    assert 1.0 < panels["fast_pds"]["preconditioner"]["freq"]["max"] <= expected / (expected - 1) + 1e-6


def test_official_pds_flags(tmp_path_factory, setup, trained, estimated, tmp_path):
    """--speed_up/--alpha/--freq_mask_path/--eval_folder set the config and the folder."""
    from pds_jax.filters import FilterStats
    from pds_jax.precond import frequency_filter

    filters = os.path.join(estimated[0], "filters.npz")
    run_cli(tmp_path_factory, sample_args(setup, trained, str(tmp_path), "--config.sampling.num_samples=2",
                                          "--speed_up=5", "--alpha=3", f"--freq_mask_path={filters}",
                                          "--eval_folder=myfolder"))
    assert sorted(os.listdir(tmp_path)) == ["myfolder"]
    run = read_json(os.path.join(tmp_path, "myfolder", "run.json"))
    pds = run["config"]["sampling"]["pds"]
    assert pds["speed_up"] == 5.0 and pds["alpha"] == 3.0
    assert pds["freq_filter"] == filters and pds["space_filter"] == ""
    assert run["num_steps"] == NUM_SCALES // 5
    nfe = run["nfe_per_batch"]
    assert (nfe if isinstance(nfe, list) else [nfe]) == [2 * (NUM_SCALES // 5)]
    # The frequency filter is the normalised one of α = 3 (not the config's α = 5); no space filter.
    R = FilterStats.load(filters).freq
    for alpha, used in ((3.0, True), (5.0, False)):
        D = frequency_filter(R, alpha, "normalized")
        got = run["preconditioner"]["freq"]
        assert (got["max"] == pytest.approx(float(D.max()), rel=1e-5)) == used
    assert run["preconditioner"]["space"] is None


# --------------------------------------------------------------------------- errors


def assert_user_error(out, *fragments):
    assert out.returncode == 2
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    for fragment in fragments:
        assert fragment in out.stderr, f"{fragment!r} not in:\n{out.stderr[-3000:]}"


def test_missing_score_sde_checkpoint_says_what_to_download(tmp_path_factory, tmp_path):
    if os.path.exists(os.path.join(ROOT, "checkpoints", "ve", "ffhq_1024_ncsnpp_continuous", "checkpoint_60")):
        pytest.skip("the FFHQ checkpoint is installed here")
    out = run_cli(tmp_path_factory, ["--config=configs/ffhq_pds.py", f"--workdir={tmp_path}"], expect=2)
    assert_user_error(out, "checkpoint not found", "checkpoints/ve/ffhq_1024_ncsnpp_continuous/checkpoint_60",
                      "ve/ffhq_1024_ncsnpp_continuous", "github.com/yang-song/score_sde")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args, fragments", [
    (["--config.model.nff=3"], ["--config.model.nff", "did you mean model.nf"]),
    (["--config.sampling.pds.alpah=3"], ["sampling.pds.alpah", "did you mean sampling.pds.alpha"]),
    (["--config.model.nf=abc"], ["--config.model.nf=abc"]),
    (["--mode=bogus"], ["--mode=bogus", "sample|compare|estimate|train|eval|benchmark"]),
    (["--mode=estimate", "--eval_folder=x"], ["--eval_folder", "--mode=estimate"]),
    (["stray_argument"], ["unexpected arguments: stray_argument"]),
])
def test_command_line_mistakes_exit_2(tmp_path_factory, setup, tmp_path, args, fragments):
    out = run_cli(tmp_path_factory, [f"--config={setup['config']}", f"--workdir={tmp_path}", *args], expect=2)
    assert_user_error(out, *fragments)
    assert os.listdir(tmp_path) == []


def test_checkpoint_of_another_config_lists_the_differences(tmp_path_factory, setup, trained, tmp_path):
    out = run_cli(tmp_path_factory, sample_args(setup, trained, str(tmp_path), "--config.model.nf=16",
                                                "--config.model.attn_resolutions=(8,)"), expect=2)
    assert_user_error(out, os.path.join(trained, "checkpoints", "checkpoint_8"), "does not match",
                      "missing from the checkpoint", "AttnBlockpp_0/NIN_0/W",
                      "mis-shaped", "Conv_0/kernel: (3, 3, 1, 8) vs (3, 3, 1, 16)")
    assert os.listdir(tmp_path) == []


def test_filter_of_another_resolution(tmp_path_factory, setup, trained, tmp_path):
    other = os.path.join(DEFAULT_MODEL, "filters.npz")  # 32×32×1
    out = run_cli(tmp_path_factory, sample_args(setup, trained, str(tmp_path), f"--space_mask_path={other}"),
                  expect=2)
    assert_user_error(out, f"config.sampling.pds.space_filter={other}", "32×32×1", "16×16×1",
                      "config.data.image_size=16", "--mode=estimate")
    assert os.listdir(tmp_path) == []


def test_non_finite_samples_are_refused(tmp_path_factory, setup, trained, tmp_path):
    """A (finite) checkpoint whose network overflows: exit 2, and no images are written."""
    state = checkpoints.load_score_sde(os.path.join(trained, "checkpoints", "checkpoint_8"))
    state["params_ema"]["Conv_0"]["bias"] = np.full_like(state["params_ema"]["Conv_0"]["bias"], 3e38)
    bad = checkpoints.save_checkpoint(str(tmp_path / "bad"), state, 8)
    workdir = tmp_path / "w"
    out = run_cli(tmp_path_factory, sample_args(setup, trained, str(workdir), f"--config.sampling.checkpoint={bad}"),
                  expect=2)
    assert_user_error(out, "non-finite", "batch 0", "sampling.pds.speed_up")
    assert not os.path.exists(workdir / "samples")  # a failed run leaves no empty folder
    out = run_cli(tmp_path_factory, sample_args(setup, trained, str(workdir), f"--config.sampling.checkpoint={bad}",
                                                "--config.sampling.pds.speed_up=2", mode="compare"), expect=2)
    assert_user_error(out, "non-finite", "full_vanilla")
    assert not os.path.exists(workdir / "compare")


def test_helpfull_lists_the_flags(tmp_path_factory):
    out = run_cli(tmp_path_factory, ["--helpfull"], expect=None)
    assert "Traceback" not in out.stderr
    text = out.stdout + out.stderr
    for flag in ("--config", "--workdir", "--mode", "--speed_up", "--alpha", "--freq_mask_path",
                 "--space_mask_path", "--eval_folder"):
        assert flag in text
    assert "sample|compare|estimate|train|eval|benchmark" in text


def test_print_config_lists_every_field_with_overrides_and_needs_no_workdir(tmp_path_factory):
    out = run_cli(tmp_path_factory, ["--config=fashion_mnist_pds", "--print_config", "--alpha=7",
                                      "--config.eval.num_samples=9"])
    lines = out.stdout.splitlines()
    assert "sampling.pds.alpha = 7.0" in lines and "eval.num_samples = 9" in lines
    assert "model.num_scales = 500" in lines and "eval.kid_stats_file = " + repr(
        "checkpoints/fashion_mnist_classifier/fashion_mnist_test_stats.npz") in lines
    listed = run_cli(tmp_path_factory, ["--help", "--config=fashion_mnist_pds"])
    assert "Fields of --config" in listed.stdout and "  sampling.pds.speed_up = 10.0" in listed.stdout
    missing = run_cli(tmp_path_factory, ["--config=fashion_mnist_pds"], expect=2)
    assert "--workdir must be given" in missing.stderr and "Traceback" not in missing.stderr


# --------------------------------------------------------------------------- the shipped default model


def test_default_model_matches_its_config():
    from configs.fashion_mnist_pds import get_config
    from pds_jax.filters import FilterStats, load_statistic

    config = get_config()
    path = checkpoints.resolve_checkpoint(resources.resolve(config.sampling.checkpoint))
    assert os.path.basename(path) == "checkpoint_43000"
    params = checkpoints.load_params(path)
    checkpoints.check_params(params, config, checkpoint=path)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(params))
    for kind in ("freq", "space"):
        filter_file = resources.resolve(config.sampling.pds[f"{kind}_filter"])
        assert load_statistic(filter_file, kind, config).shape == (32, 32, 1)
    stats = FilterStats.load(os.path.join(DEFAULT_MODEL, "filters.npz"))
    assert stats.shape == (config.data.image_size, config.data.image_size, config.data.num_channels)
    assert stats.centered == config.data.centered


def test_default_model_samples_from_any_directory(tmp_path_factory, tmp_path):
    """The shipped config and checkpoint, run from outside the repository: a 2-step PDS
    sample (N = 20 / speed_up 10) of 2 images; finite, or sample mode would exit 2."""
    workdir = tmp_path / "fm"
    run_cli(tmp_path_factory, [f"--config={DEFAULT_CONFIG}", f"--workdir={workdir}",
                               "--config.model.num_scales=20", "--speed_up=10",
                               "--config.sampling.batch_size=2", "--config.sampling.num_samples=2"],
            cwd=str(tmp_path))
    run = read_json(workdir / "samples" / "run.json")
    assert run["checkpoint"].endswith(os.path.join("fashion_mnist_ncsnpp", "checkpoint_43000"))
    assert run["num_steps"] == 2
    nfe = run["nfe_per_batch"]
    assert (nfe if isinstance(nfe, list) else [nfe]) == [4]
    assert run["preconditioner"]["freq"] is not None and run["preconditioner"]["space"] is not None
    samples = np.load(workdir / "samples" / "samples.npz")["images"]
    assert samples.shape == (2, 32, 32, 1) and samples.std() > 0
