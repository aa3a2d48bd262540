"""benchmarks/quality_intervals.py + quality_metrics.py: the bootstrapped metrics against the
library's direct formulas, the radial spectrum on known images, and the resumable sample store."""

import json
import os
import sys
import types

import numpy as np
import pytest

from pds_jax import distances

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import quality_intervals as qi  # noqa: E402
import quality_metrics as qm  # noqa: E402
from tests.test_quality_benchmark import tiny_config_file  # noqa: E402,F401  (fixture)


def _refs(rng, d=6):
    ref = rng.normal(size=(400, d)) * np.linspace(0.5, 2.0, d)
    cov = np.cov(ref, rowvar=False)
    return ref, types.SimpleNamespace(mean=ref.mean(0), cov=cov, sqrt_cov=np.real(qm.scipy.linalg.sqrtm(cov)),
                                      spectrum=np.ones(16))


def test_point_values_equal_the_library_fid_and_kid():
    rng = np.random.default_rng(0)
    ref, refs = _refs(rng)
    feats = rng.normal(size=(50, 6)) + 0.3
    scored = qm.Scored(feats, np.ones((50, 16)), refs, ref, qm.References.kyy_offdiagonal_mean(ref, block=64))
    fid, kid, db = scored.values(np.arange(50))
    assert fid == pytest.approx(distances.frechet_distance(feats.mean(0), np.cov(feats, rowvar=False),
                                                           refs.mean, refs.cov), rel=1e-9)
    assert kid == pytest.approx(distances.mmd2_unbiased(feats, ref), rel=1e-9)
    assert db == pytest.approx(0.0, abs=1e-12)


def test_resampled_kid_leaves_out_pairs_of_copies():
    rng = np.random.default_rng(1)
    ref, refs = _refs(rng)
    feats = rng.normal(size=(20, 6))
    scored = qm.Scored(feats, np.ones((20, 16)), refs, ref, qm.References.kyy_offdiagonal_mean(ref))
    idx = rng.integers(0, 20, size=20)
    k = distances.polynomial_kernel(feats[idx], feats[idx])
    distinct = idx[:, None] != idx[None, :]
    expected = (k[distinct].mean() + qm.References.kyy_offdiagonal_mean(ref)
                - 2 * distances.polynomial_kernel(feats[idx], ref).mean())
    assert scored.values(idx)[1] == pytest.approx(expected, rel=1e-9)


def test_radial_power_puts_a_cosine_at_its_radius():
    i = np.arange(32)
    image = 0.5 + 0.25 * np.cos(2 * np.pi * 3 * i / 32)[None, :] * np.ones((32, 1))
    power = qm.radial_power(np.round(image * 255).astype(np.uint8)[None, ..., None])[0]
    assert power.shape == (16,) and np.argmax(power) == 2  # radius 3 is bin 2 (bins start at r = 1)
    assert power[2] > 1e3 * np.delete(power, 2).max()


def test_interval_is_centred_on_the_estimate_with_the_bootstrap_spread():
    rng = np.random.default_rng(0)
    draws = np.stack([2.0 + rng.normal(size=4000)] * 3, axis=1)  # resamples shifted up by 1 (duplicates)
    out = qm.interval(np.array([1.0, 1.0, 1.0]), draws)["fid"]
    assert out["se"] == pytest.approx(1.0, rel=0.05)
    assert out["lo"] == pytest.approx(1.0 - 1.96 * out["se"]) and out["hi"] == pytest.approx(1.0 + 1.96 * out["se"])
    assert out["q025"] == pytest.approx(2.0 - 1.96, abs=0.1)  # the raw quantiles are kept


def test_sample_store_resumes_the_missing_batch_only(tiny_config_file, tmp_path):
    store = tmp_path / "store"
    argv = ["--config", tiny_config_file, "--samples", str(store), "--steps", "2", "--settings", "vanilla",
            "5", "--num-samples", "6", "--batch-size", "3"]
    assert qi.sample(qi.parse_args(argv), log=lambda *_: None) == []
    folder = store / "N0002_alpha5"
    first = qi.load_setting(str(folder))
    assert first["samples"].shape == (6, 32, 32, 1) and first["alpha"] == 5.0
    vanilla = qi.load_setting(str(store / "N0002_vanilla"))["samples"]
    assert not np.array_equal(vanilla, first["samples"])  # D = 1 is another sampler
    os.remove(folder / "batch_0001.npz")
    drawn = []
    assert qi.sample(qi.parse_args(argv), log=drawn.append) == []
    assert len(drawn) == 2 and "N0002_alpha5" in drawn[0]  # one batch + the summary line
    np.testing.assert_array_equal(qi.load_setting(str(folder))["samples"], first["samples"])
    record = json.loads((folder / "setting.json").read_text())
    (folder / "setting.json").write_text(json.dumps(dict(record, seed=7)))
    with pytest.raises(SystemExit, match="drawn with other settings .*seed"):
        qi.sample(qi.parse_args(argv), log=lambda *_: None)


def test_settings_flag_names_the_fix():
    with pytest.raises(SystemExit):
        qi.parse_args(["--settings", "0.5"])
    assert qi.setting_name(25, "5") == "N0025_alpha5" and qi.setting_name(100, "auto") == "N0100_auto"


def _rows(rng, shifts, refs, ref, n=60):
    rows = []
    for name, shift in shifts.items():
        feats = rng.normal(size=(n, 6)) * np.linspace(0.5, 2.0, 6) + shift
        rows.append({"setting": name, "num_samples": n,
                     "scored": qm.Scored(feats, np.ones((n, 16)), refs, ref, qm.References.kyy_offdiagonal_mean(ref))})
    return rows


def test_regret_is_auto_minus_the_best_setting_reselected_in_every_resample():
    rng = np.random.default_rng(2)
    ref, refs = _refs(rng)
    rows = _rows(rng, {"3": 0.05, "auto": 0.4, "9": 1.0}, refs, ref)
    draws = rng.integers(0, 60, size=(200, 60))
    boot = lambda r, n: (r["scored"].values(np.arange(n)), qm.bootstrap(r["scored"], draws[:, :n]))  # noqa: E731
    out = qm.regret(rows, boot)
    fids = [r["scored"].values(np.arange(60))[0] for r in rows]
    assert out["best"]["fid"] == "3" and out["fid"]["value"] == pytest.approx(fids[1] - min(fids), rel=1e-12)
    per_draw = np.array([[r["scored"].values(d)[0] for r in rows] for d in draws])
    regret_draws = per_draw[:, 1] - per_draw.min(1)
    assert out["fid"]["se"] == pytest.approx(regret_draws.std(ddof=1), rel=1e-9)
    assert out["auto_best_share"]["fid"] == pytest.approx(np.mean(per_draw.argmin(1) == 1))
    best_auto = qm.regret(_rows(rng, {"3": 1.0, "auto": 0.0}, refs, ref), boot)
    assert best_auto["best"]["fid"] == "auto" and best_auto["fid"]["value"] == 0.0


def test_blocks_are_the_metrics_of_consecutive_sampling_batches():
    rng = np.random.default_rng(3)
    ref, refs = _refs(rng)
    scored = _rows(rng, {"5": 0.2}, refs, ref, n=50)[0]["scored"]
    out = qm.blocks(scored, 20)  # two whole blocks; the last 10 samples make no block
    assert out["size"] == 20 and len(out["fid"]) == 2
    assert out["fid"][1] == pytest.approx(scored.values(np.arange(20, 40))[0], rel=1e-12)
    assert qm.blocks(scored, 50)["kid"] == [pytest.approx(scored.values(np.arange(50))[1])]


def _report(tmp_path, sweeps):
    rows = [{"steps": n, "setting": str(a), "alpha": a, "num_samples": 1000, "metrics": {"fid": {"value": f}}}
            for n, points in sweeps.items() for a, f in points]
    rows.append({"steps": 50, "setting": "vanilla", "alpha": None, "num_samples": 1000,
                 "metrics": {"fid": {"value": 300.0}}})
    report = {"format": qm.FORMAT, "command": "python benchmarks/quality_intervals.py --report", "results": rows,
              "model": {"num_scales": 500, "checkpoint": os.path.join(ROOT, "pds_jax", "assets", "ck")},
              "sampled_on": {"device_kind": "cpu", "platform": "cpu", "jax": "x"}}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    return str(path)


def test_fit_rule_places_knots_at_the_fid_optima_of_the_sweeps(tmp_path, monkeypatch):
    from pds_jax import alpha_rule
    u = lambda a: np.log(a - 1)  # noqa: E731  a parabola in log(α − 1) with its vertex at α = 7 (N=50), 4 (N=25)
    sweeps = {50: [(a, 20 + (u(a) - u(7.0)) ** 2) for a in (3.5, 5.0, 9.0, 13.0)],
              25: [(a, 60 + (u(a) - u(4.0)) ** 2) for a in (3.0, 5.0, 7.0)],
              100: [(5.0, 30.0), (18.8, 29.0)]}  # two α values place no optimum: left out
    installed = tmp_path / "installed.json"
    monkeypatch.setattr(alpha_rule, "RULE_PATH", str(installed))
    args = qi.parse_args(["--fit-rule", _report(tmp_path, sweeps), "--install"])
    rule = qi.fit_rule(args, log=lambda *_: None)
    assert rule.form == "table" and rule.knots_steps == (25.0, 50.0)
    assert rule.knots_alpha == pytest.approx((4.0, 7.0), rel=1e-9)  # the parabola through 3 points is exact
    assert rule.provenance["num_samples"] == 1000 and rule.provenance["checkpoint"] == "ck"
    assert alpha_rule.load_rule(str(installed))(50) == pytest.approx(7.0)
    assert os.path.exists(tmp_path / "report_alpha_rule.json")
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        qi.fit_rule(args, log=lambda *_: None)
    with pytest.raises(SystemExit, match="no N with >= 3"):
        qi.fit_rule(qi.parse_args(["--fit-rule", _report(tmp_path, {100: sweeps[100]}), "--overwrite"]))
    with pytest.raises(SystemExit):
        qi.parse_args(["--install"])
