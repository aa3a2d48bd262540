"""benchmarks/quality_vs_steps.py: the smoke preset on a tiny random NCSN++, the JSON it writes,
one compiled PC program per step count, the time budget, and refitting from the JSON."""

import json
import os
import sys
import textwrap

import numpy as np
import pytest

from pds_jax import alpha_rule, checkpoints
from tests.model_helpers import random_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import quality_study  # noqa: E402
import quality_vs_steps as qvs  # noqa: E402

ROW_KEYS = {"method", "label", "steps", "alpha", "nfe", "nfe_per_batch", "num_samples", "fid", "kid", "kid_std",
            "nonfinite_fraction", "seconds_per_batch", "sample_seconds", "metric_seconds"}


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory):
    """configs/fashion_mnist_pds.py with an nf = 4 model (num_scales = 4) and a random checkpoint."""
    folder = tmp_path_factory.mktemp("tiny")
    path = folder / "tiny_config.py"
    path.write_text(textwrap.dedent(f"""
        from configs.fashion_mnist_pds import get_config as base

        def get_config():
            config = base()
            config.model.update(dict(nf=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                                     dropout=0.0, num_scales=4))
            config.sampling.checkpoint = {str(folder / 'ckpt')!r}
            return config
    """))
    params = random_params(qvs.load_config_file(str(path)), seed=2, scale=0.05)
    state = checkpoints.make_score_sde_state(1, params, params, params, params, 0, 2e-4, 0.999, np.zeros(2, np.uint32))
    checkpoints.save_checkpoint(str(folder / "ckpt"), state, step=1)
    return str(path)


@pytest.fixture(scope="module")
def smoke_run(tiny_config_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "q.json"
    mp = pytest.MonkeyPatch()
    # nothing the study imports may import TensorFlow (the GPU machine has none)
    mp.setitem(sys.modules, "tensorflow", None)
    mp.setitem(sys.modules, "tensorflow_datasets", None)
    calls = []
    real = quality_study.get_pc_sampler
    mp.setattr(quality_study, "get_pc_sampler", lambda *a, **k: calls.append(k["num_steps"]) or real(*a, **k))
    try:
        result = qvs.main(["--preset", "smoke", "--config", tiny_config_file, "--out", str(out)])
    finally:
        mp.undo()
    return out, result, calls


def test_smoke_preset_writes_the_documented_json(smoke_run):
    out, result, _ = smoke_run
    with open(out) as f:
        report = json.load(f)
    assert report["format"] == qvs.FORMAT and report["complete"] is True
    assert report["skipped"] == [] and report["failed"] == []
    assert {"command", "date", "device", "settings", "num_scales", "checkpoint", "filters", "pc"} <= set(report["meta"])
    assert report["meta"]["preset"] == "smoke" and report["meta"]["device"]["platform"] == "cpu"
    floor = report["reference"]["floor"]
    assert {"fid", "kid", "kid_std", "n"} <= set(floor) and floor["n"] == 8
    assert {"elapsed_s", "compile_s", "seconds_per_batch_nfe"} <= set(report["timing"])
    rows = report["results"]
    for row in rows:
        assert ROW_KEYS <= set(row), sorted(ROW_KEYS - set(row))
        assert row["num_samples"] == 8 and np.isfinite(row["fid"]) and np.isfinite(row["kid"])
    methods = {r["method"] for r in rows}
    assert methods == {"pc_vanilla", "pc_pds", "deis_tab3", "deis_ipndm", "ode_heun", "ode_euler"}
    pds = [r for r in rows if r["method"] == "pc_pds"]
    assert sorted((r["steps"], r["alpha"]) for r in pds) == [(2, 2.0), (2, 8.0), (3, 2.0), (3, 8.0)]
    assert all(r["nfe"] == 2 * r["steps"] for r in rows if r["method"].startswith("pc"))
    assert all(r["nfe"] <= 3 for r in rows if r["method"].startswith(("ode", "deis")))
    paths = qvs.output_paths(str(out))
    for key in ("rule", "quality_png", "alpha_png", "samples_png"):
        assert os.path.getsize(paths[key]) > 0, key


def test_one_pc_program_per_step_count(smoke_run):
    """Vanilla and every α at N steps run through one compiled sampler (N = 2 and 3)."""
    _, _, calls = smoke_run
    assert sorted(calls) == [2, 3]


def test_fit_only_reproduces_the_fit_from_the_json(smoke_run, tmp_path):
    out, result, _ = smoke_run
    first = json.load(open(qvs.output_paths(str(out))["rule"]))
    refit = qvs.main(["--fit-only", str(out), "--out", str(tmp_path / "refit.json")])
    second = json.load(open(qvs.output_paths(str(tmp_path / "refit.json"))["rule"]))
    for rule in (first, second):
        rule["provenance"].pop("fit_date")
    assert first == second
    assert refit["rule"].provenance["warning"].startswith("fitted on a 'smoke' run")
    report = json.load(open(tmp_path / "refit.json"))  # the raw results travel with the fit
    assert report["results"] == json.load(open(out))["results"]
    sweeps = qvs.sweeps_from(report)
    assert sorted(sweeps) == [2, 3] and all(a == [2.0, 8.0] for a, _ in sweeps.values())


def test_install_refuses_smoke_data_and_installs_a_gpu_run(smoke_run, tmp_path, monkeypatch):
    out, _, _ = smoke_run
    monkeypatch.setattr(alpha_rule, "RULE_PATH", str(tmp_path / "installed.json"))
    with pytest.raises(SystemExit, match="refusing to install"):
        qvs.main(["--fit-only", str(out), "--out", str(tmp_path / "a.json"), "--install"])
    assert not os.path.exists(alpha_rule.RULE_PATH)
    report = json.load(open(out))
    report["meta"]["preset"] = "gpu"  # as if measured on the GPU
    gpu_json = tmp_path / "gpu.json"
    gpu_json.write_text(json.dumps(report))
    result = qvs.main(["--fit-only", str(gpu_json), "--out", str(tmp_path / "b.json"), "--install"])
    installed = alpha_rule.load_rule()
    assert installed == alpha_rule.load_rule(qvs.output_paths(str(tmp_path / "b.json"))["rule"])
    assert installed.provenance["device"].endswith("(cpu)") and "warning" not in installed.provenance
    assert installed(3) == pytest.approx(result["rule"](3))


def test_time_budget_skips_settings_and_keeps_partial_results(tiny_config_file, tmp_path):
    out = tmp_path / "budget.json"
    qvs.main(["--preset", "smoke", "--config", tiny_config_file, "--out", str(out), "--sweep-steps", "2",
              "--alphas", "2", "3", "--ode-nfe", "--time-budget", "0.001", "--no-fit"])
    report = json.load(open(out))
    assert report["complete"] is False
    assert {r["method"] for r in report["results"]} == {"pc_vanilla", "pc_pds"}  # the first job always runs
    assert [s["job"] for s in report["skipped"]] == ["deis_tab3 3", "deis_ipndm 3"]
    assert all("time budget" in s["reason"] for s in report["skipped"])
    assert not os.path.exists(qvs.output_paths(str(out))["rule"])


def test_a_failing_setting_is_recorded_and_the_others_still_run(tiny_config_file, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(quality_study, "get_deis_sampler", broken)
    out = tmp_path / "failed.json"
    qvs.main(["--preset", "smoke", "--config", tiny_config_file, "--out", str(out), "--sweep-steps", "2",
              "--alphas", "2", "3", "--ode-nfe", "3", "--no-fit"])
    report = json.load(open(out))
    assert report["complete"] is False and report["skipped"] == []
    assert [f["job"] for f in report["failed"]] == ["deis_tab3 3", "deis_ipndm 3"]
    assert "simulated failure" in report["failed"][0]["error"]
    assert {r["method"] for r in report["results"]} == {"pc_vanilla", "pc_pds", "ode_heun", "ode_euler"}


def test_outputs_are_never_overwritten_without_the_flag(smoke_run, tiny_config_file):
    out, _, _ = smoke_run
    with pytest.raises(FileExistsError):
        qvs.main(["--preset", "smoke", "--config", tiny_config_file, "--out", str(out)])


def test_resume_keeps_earlier_rows_and_measures_only_the_missing_settings(tiny_config_file, tmp_path,
                                                                           monkeypatch):
    out = tmp_path / "resume.json"
    first_args = ["--preset", "smoke", "--config", tiny_config_file, "--sweep-steps", "2", "--alphas", "2",
                  "--deis-nfe", "--ode-nfe", "--no-fit"]
    qvs.main(first_args + ["--out", str(out)])
    first = json.load(open(out))
    assert [r["label"] for r in first["results"]] == ["pc_vanilla N=2", "pc_pds N=2 alpha=2"]

    calls = []
    real = quality_study.get_pc_sampler
    monkeypatch.setattr(quality_study, "get_pc_sampler",
                        lambda *a, **k: calls.append(k["num_steps"]) or real(*a, **k))
    more = ["--preset", "smoke", "--config", tiny_config_file, "--sweep-steps", "2", "3", "--alphas", "2",
            "--deis-nfe", "--ode-nfe", "--no-fit", "--resume", str(out), "--out", str(out)]
    qvs.main(more)
    report = json.load(open(out))
    assert report["results"][:2] == first["results"]  # kept as measured, not re-run
    assert [r["label"] for r in report["results"][2:]] == ["pc_vanilla N=3", "pc_pds N=3 alpha=2"]
    assert calls == [3]  # no program was compiled for N = 2
    assert report["meta"]["date"] == first["meta"]["date"] and len(report["meta"]["resumed"]) == 1
    assert report["complete"] is True

    with pytest.raises(SystemExit, match="seed: 0 there, 1 now"):
        qvs.main(more + ["--seed", "1"])
    assert json.load(open(out)) == report  # a refused resume leaves the file as it was


def test_nfe_table_puts_each_method_in_its_budget_row():
    from quality_report import nfe_table

    def row(method, nfe, fid, alpha=None, steps=None):
        return {"method": method, "nfe": nfe, "fid": fid, "alpha": alpha, "steps": steps}

    report = {"results": [row("pc_vanilla", 20, 400.0, steps=10), row("pc_pds", 20, 300.0, 2.0, 10),
                          row("pc_pds", 20, 350.0, 5.0, 10), row("deis_tab3", 10, 90.0),
                          row("deis_tab3", 20, 50.0), row("ode_heun", 19, 70.0), row("ode_euler", 7, 99.0)]}
    assert nfe_table(report).splitlines() == [
        "| NFE | PC vanilla | PDS alpha=5 | PDS best alpha (sweep) | ODE Euler | ODE Heun | DEIS tAB3 |",
        "|---|---|---|---|---|---|---|",
        "| 7 |  |  |  | 99.0 |  |  |",
        "| 10 |  |  |  |  |  | 90.0 |",
        "| 20 | 400.0 | 350.0 | 300.0 (alpha=2) |  | 70.0 (19) | 50.0 |"]
