"""Smoke tests of the speed benchmarks and `--mode=benchmark` (tiny sizes, CPU).

The scripts are run in-process through their `main(argv)`; the network is a two-conv
score model registered here (`bench_tiny`), so each program compiles in a second and
the tests check the plumbing: JSON keys, skipped cases, PNGs, no overwriting. One
test checks, without compiling, that the default sizes are the paper's NCSN++ networks;
a slow one (`pytest -m slow`) runs a tiny NCSN++ through step_cost.
"""

import importlib.util
import json
import os
import sys

import flax.linen as nn
import pytest

from pds_jax import models, timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["model.name=bench_tiny", "data.image_size=16", "data.num_channels=3"]


class TinyScore(nn.Module):
    """Two 3×3 convolutions divided by σ: the shape of a score network at no cost."""

    channels: int

    @nn.compact
    def __call__(self, x, labels, train=False):
        h = nn.swish(nn.Conv(4, (3, 3))(x))
        return nn.Conv(self.channels, (3, 3))(h) / labels[:, None, None, None]


if "bench_tiny" not in models.registered_models():
    models.register_model("bench_tiny", lambda config: TinyScore(int(config.data.num_channels)))


def load_script(name):
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def read(path):
    with open(path) as f:
        return json.load(f)


def check_stats(stats):
    assert set(stats) >= {"mean", "std", "min", "median", "n", "values"}
    assert stats["n"] == len(stats["values"]) >= 1


def check_header(result, name):
    assert result["benchmark"] == name and result["complete"] is True
    assert result["device"]["platform"] == "cpu" and result["precision"]["dtype"] == "float32"
    assert "settings" in result and "argv" in result


def test_per_step_fit_recovers_a_line():
    fit = timing.per_step({0: [1.0, 1.1], 4: [3.0, 3.1], 8: [5.0, 5.1]})
    assert fit["per_step_s"].mean == pytest.approx(0.5)
    assert fit["fixed_s"].mean == pytest.approx(1.05)
    assert fit["rounds"] == 2
    with pytest.raises(ValueError):
        timing.fit_line([3, 3], [1.0, 1.0])


def test_step_cost_tiny(tmp_path):
    step_cost = load_script("step_cost")
    out = tmp_path / "step_cost.json"
    argv = ["--configs", "fashion_mnist_pds", "--set", *TINY, "--batch", "2", "--steps", "2", "--fft-steps", "2",
            "--trivial-shape", "2", "16", "16", "3", "--trivial-steps", "2", "--repeats", "1", "--out", str(out)]
    result = step_cost.main(argv)
    on_disk = read(out)
    check_header(on_disk, "step_cost")
    (size,) = on_disk["sizes"]
    assert size["status"] == "ok" and size["image_size"] == 16 and size["batch"] == 2
    for key in ("vanilla", "pds", "fft_only"):
        check_stats(size[key]["per_step_s"])
        assert size[key]["steps_timed"] == [0, 2]
    check_stats(size["ratio_pds_over_vanilla"])
    assert size["preconditioner"]["freq"] and size["preconditioner"]["space"]
    trivial = on_disk["trivial_score"]
    assert trivial["status"] == "ok" and trivial["shape"] == [2, 16, 16, 3]
    check_stats(trivial["pds_minus_vanilla_s"])
    assert (tmp_path / "step_cost.png").read_bytes()[:8] == PNG
    assert result["sizes"][0]["status"] == "ok"

    # An existing result is never overwritten: the next run takes a free name. A zero
    # budget skips every case and still writes valid JSON.
    again = step_cost.main(argv[:-2] + ["--out", str(out), "--budget-s", "1e-9", "--trivial-shape", "0", "0", "0", "0"])
    second = read(tmp_path / "step_cost_1.json")
    assert second["sizes"][0]["status"] == "skipped" and "budget" in second["sizes"][0]["reason"]
    assert again["complete"] and read(out)["sizes"][0]["status"] == "ok"


def test_paper_sizes_are_the_documented_networks():
    """The default networks and step counts, checked without compiling anything."""
    from benchmarks import common
    from pds_jax.pds import pc_schedule
    from pds_jax.sde import get_sde

    step_cost, paper_timing = load_script("step_cost"), load_script("paper_timing")
    for size, name in step_cost.SIZE_CONFIGS.items():
        config = common.load_config(name)
        assert config.data.image_size == size and config.model.name == "ncsnpp"
    assert step_cost.PRESETS["paper"]["batch"] == 8 and step_cost.PRESETS["cpu"]["sizes"] == [32, 256]
    expected = {"lsun_bedroom_256": (256, 166), "ffhq_1024": (1024, 66)}
    for case, spec in paper_timing.CASES.items():
        config = common.load_config(spec["config"])
        sde = get_sde(config)
        assert (config.data.image_size, pc_schedule(sde, spec["speed_up"])[0].N) == expected[case]
        assert sde.N == 2000
    assert paper_timing.PRESETS["paper"]["batch"] == paper_timing.PAPER_BATCH == 8


@pytest.mark.slow
def test_step_cost_tiny_ncsnpp(tmp_path):
    """The real network (NCSN++ shrunk to 16², nf = 4) through step_cost."""
    step_cost = load_script("step_cost")
    out = tmp_path / "ncsnpp.json"
    step_cost.main(["--configs", "ve/cifar10_ncsnpp_continuous", "--set", "data.image_size=16", "model.nf=4",
                    "model.ch_mult=(1,2)", "model.num_res_blocks=1", "model.attn_resolutions=(8,)",
                    "--batch", "1", "--steps", "1", "--fft-steps", "1", "--trivial-shape", "0", "0", "0", "0",
                    "--repeats", "1", "--out", str(out)])
    (size,) = read(out)["sizes"]
    assert size["status"] == "ok" and size["num_params"] > 1000


def test_step_cost_reports_a_failing_size(tmp_path):
    step_cost = load_script("step_cost")
    out = tmp_path / "bad.json"
    step_cost.main(["--configs", "no_such_config", "--trivial-shape", "0", "0", "0", "0", "--out", str(out)])
    (size,) = read(out)["sizes"]
    assert size["status"] == "error" and "no_such_config" in size["reason"]


def test_loop_overhead_tiny(tmp_path):
    loop_overhead = load_script("loop_overhead")
    out = tmp_path / "loop.json"
    loop_overhead.main(["--set", *TINY, "--batch", "2", "--steps", "3", "--compile-steps", "2", "20",
                        "--forward-calls", "3", "--repeats", "2", "--out", str(out)])
    result = read(out)
    check_header(result, "loop_overhead")
    for variant in ("vanilla", "pds"):
        rows = result["compile"][variant]
        assert [r["steps"] for r in rows] == [2, 20]
        assert all(r["compile_s"] > 0 and r["lowered_chars"] > 0 for r in rows)
        s = result["samplers"][variant]
        assert s["nfe"] == 6 and s["ratio_to_nfe_x_forward_call"] > 0
        check_stats(s["total_s"])
    # The lowered program does not grow with N (a fori_loop, not an unrolled loop).
    assert result["compile_flat"]["lowered_chars_max_over_min"] < 1.05
    check_stats(result["forward"]["call_s"])
    assert (tmp_path / "loop.png").read_bytes()[:8] == PNG


def test_paper_timing_tiny(tmp_path):
    from benchmarks import common

    paper_timing = load_script("paper_timing")
    out = tmp_path / "paper.json"
    paper_timing.main(["--cases", "ffhq_1024", "--config-override", "ffhq_1024=fashion_mnist_pds", "--set", *TINY,
                       "--batch", "1", "--steps", "2", "--repeats", "2", "--out", str(out)])
    result = read(out)
    check_header(result, "paper_timing")
    assert result["extrapolated"] is True and result["steps_timed"] == [2] and result["scaled_down"] is True
    skipped, ffhq = result["cases"]
    assert skipped["name"] == "lsun_bedroom_256" and skipped["status"] == "skipped"
    assert ffhq["status"] == "ok" and ffhq["paper"]["vanilla_s"] == 2030.0 and ffhq["paper"]["pds_steps"] == 66
    n = common.load_config("fashion_mnist_pds").model.num_scales
    assert ffhq["vanilla"]["full_steps"] == n and ffhq["pds"]["full_steps"] == int(n / 30)
    assert ffhq["pds"]["filters"] == ["freq", "space"]
    for key in ("vanilla", "pds"):
        r = ffhq[key]
        lo, hi = r["extrapolated_total_range_s"]
        assert lo <= r["extrapolated_total_s"] <= hi or r["per_step_s"]["n"] == 1
        assert set(r["measured_s"]) == {"0", "2"}
    assert "extrapolated_speedup" in ffhq and set(ffhq["ratio_to_paper"]) == {"vanilla", "pds"}
    assert (tmp_path / "paper.png").read_bytes()[:8] == PNG


def test_benchmark_mode_writes_json_and_never_overwrites(tmp_path):
    from benchmarks import common
    from pds_jax.modes import benchmark

    config = common.load_config("fashion_mnist_pds", ["model.name=bench_tiny", "sampling.batch_size=2",
                                                      "sampling.checkpoint="])
    workdir = str(tmp_path / "run")
    report = benchmark.run(config, workdir, steps=(2,), repeats=2)
    path = os.path.join(workdir, "benchmark.json")
    on_disk = read(path)
    assert report["output"] == path
    assert on_disk["mode"] == "benchmark" and on_disk["batch_size"] == 2
    assert on_disk["weights"]["source"] == "random"  # no checkpoint under <workdir>/checkpoints
    assert on_disk["filters"]["source"] == "files" and on_disk["filters"]["filters"] == ["freq", "space"]
    check_stats(on_disk["vanilla"]["per_step_s"])
    check_stats(on_disk["ratio_pds_over_vanilla_per_step"])
    n, k = config.model.num_scales, config.sampling.pds.speed_up
    assert on_disk["vanilla"]["full_steps"] == n and on_disk["pds"]["full_steps"] == int(n / k)
    second = benchmark.run(config, workdir, steps=(1,), repeats=1)
    assert second["output"] == os.path.join(workdir, "benchmark_1.json")
    assert read(path) == on_disk


def test_benchmark_mode_filters():
    """Configured filters: the files if present, synthetic statistics of the same kinds if
    missing, the identity if none (then PDS is the vanilla sampler)."""
    from benchmarks import common
    from pds_jax.modes import benchmark
    from pds_jax.sde import get_sde

    config = common.load_config("fashion_mnist_pds", ["sampling.pds.freq_filter=missing/freq.npy",
                                                      "sampling.pds.space_filter="])
    setup, info = benchmark._setup(config, get_sde(config))
    assert info["source"] == "synthetic" and info["filters"] == ["freq"] and "freq" in info["missing_files"]
    assert setup.precond.freq is not None and setup.precond.space is None and setup.alpha is not None
    config.sampling.pds.freq_filter = ""
    setup, info = benchmark._setup(config, get_sde(config))
    assert info["source"] == "none" and setup.precond.is_identity and setup.alpha is None


def test_progress_overhead_tiny(tmp_path):
    """The shipped model at 4 steps, batch 2: both ways run, the samples are bitwise equal."""
    progress_overhead = load_script("progress_overhead")
    out = tmp_path / "progress.json"
    progress_overhead.main(["--steps", "4", "--batch-size", "2", "--repeats", "2", "--chunk-steps", "1",
                            "--out", str(out)])
    result = read(out)
    check_header(result, "progress_overhead")
    assert result["samples_bitwise_equal"] is True and result["progress_reports_per_call"] == 4
    assert len(result["rounds"]) == 2 and result["ratio_min"] <= result["ratio_median"] <= result["ratio_max"]
    assert (tmp_path / "progress.png").read_bytes()[:8] == PNG
