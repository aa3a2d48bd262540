"""Smoke test of benchmarks/samplers_oracle.py: it runs, writes JSON + PNG, and can be extended."""

import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    path = os.path.join(ROOT, "benchmarks", "samplers_oracle.py")
    spec = importlib.util.spec_from_file_location("samplers_oracle", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_benchmark_writes_json_and_png(bench, tmp_path):
    out = tmp_path / "bench.json"
    report = bench.main(["--out", str(out), "--methods", "deis_tab3", "ode_euler", "--problems", "ve_isotropic",
                         "--nfe", "5", "10", "--batch", "4"])
    on_disk = json.loads(out.read_text())
    rows = on_disk["problems"]["ve_isotropic"]["results"]["deis_tab3"]
    assert [r["nfe"] for r in rows] == [5, 10]
    assert rows[1]["rmse_vs_exact_ode"] < rows[0]["rmse_vs_exact_ode"] < 0.05
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["meta"]["batch"] == 4
    before = out.read_bytes()  # never clobbers results silently: a second run takes bench_1.json
    bench.main(["--out", str(out), "--methods", "deis_tab3", "--problems", "ve_isotropic", "--nfe", "5",
                "--batch", "4"])
    assert out.read_bytes() == before and (tmp_path / "bench_1.json").exists()


def test_method_table_is_extensible(bench):
    methods = bench.make_methods()
    assert {"ode_euler", "ode_heun", "ode_adaptive_rk45", "deis_tab3", "deis_ipndm"} <= set(methods)
    assert methods["ode_heun"].knobs([5, 10, 20]) == [2, 5, 10]        # NFE // 2 steps
    assert methods["deis_rhork3_kutta"].knobs([2, 9]) == [3]          # budgets below one step are skipped
    assert methods["pc_pds"].knobs([10, 20]) == [5, 10] and not methods["pc_pds"].deterministic


def test_a_second_run_takes_a_free_name(bench, tmp_path):
    """The README's `python benchmarks/samplers_oracle.py` in a fresh clone: the shipped result is
    kept and the new one goes to samplers_oracle_1.json."""
    out = tmp_path / "bench.json"
    out.write_text("{}")
    argv = ["--out", str(out), "--methods", "ode_euler", "--problems", "ve_isotropic", "--nfe", "5", "--batch", "4"]
    bench.main(argv)
    assert out.read_text() == "{}"
    assert json.loads((tmp_path / "bench_1.json").read_text())["problems"]
    assert (tmp_path / "bench_1.png").exists()
