"""config.sampling.pds.alpha: numbers, numeric strings and 'auto' (the fitted α(N) rule),
resolved by `pds_jax.pds`; fitting the rule (`benchmarks/alpha_fit.py`)."""

import json
import os
import sys

import numpy as np
import pytest

from pds_jax import alpha_rule, pds
from tests.model_helpers import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import alpha_fit  # noqa: E402  (the fitting code lives with the study that uses it)


# ------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("value, expected", [
    (5, 5.0), (5.0, 5.0), (np.float32(2.5), 2.5), ("3", 3.0), (" 1.25 ", 1.25), ("1e1", 10.0),
    ("auto", "auto"), (" AUTO ", "auto"), ("Auto", "auto")])
def test_parse_alpha_accepts_numbers_numeric_strings_and_auto(value, expected):
    assert alpha_rule.parse_alpha(value) == expected


@pytest.mark.parametrize("value, message", [
    ("fast", "neither a number nor 'auto'"), ("", "neither a number nor 'auto'"), (1.0, "> 1"), (0.5, "> 1"),
    ("-3", "> 1"), (float("nan"), "> 1"), ("inf", "> 1"), (True, "number > 1 or 'auto'"),
    (None, "number > 1 or 'auto'"), ([5], "number > 1 or 'auto'")])
def test_parse_alpha_rejects_bad_values_clearly(value, message):
    with pytest.raises(ValueError, match=message) as info:
        alpha_rule.parse_alpha(value)
    assert "config.sampling.pds.alpha" in str(info.value)


def test_pc_num_steps_is_the_sampler_formula():
    config = load_config("fashion_mnist_pds")
    config.model.num_scales = 1000
    config.sampling.pds.speed_up = 10.0
    assert pds.from_config(config).num_steps == 100          # 1000 / 10
    config.sampling.pds.speed_up = 3.0
    assert pds.from_config(config).num_steps == 333          # int(1000 / 3), as get_pc_sampler
    config.model.num_scales = 2000
    config.sampling.pds.speed_up = 30.0
    assert pds.from_config(config).num_steps == 66           # the FFHQ example of the official README


# ------------------------------------------------------------------------- fitting


def synthetic_sweeps(alpha_star, steps=(10, 20, 50, 100, 200), alphas=np.geomspace(1.1, 65, 25)):
    """FID = 10 + 3 (log(α−1) − log(α*(N)−1))²: a smooth valley around a known α*(N)."""
    return {n: (list(alphas), [10.0 + 3.0 * (np.log(a - 1) - np.log(alpha_star(n) - 1)) ** 2 for a in alphas])
            for n in steps}


def test_power_law_is_recovered_and_chosen():
    truth = lambda n: 1.0 + 2.0 * (n / 100.0) ** 0.7  # noqa: E731
    rule = alpha_fit.fit_rule(synthetic_sweeps(truth), provenance={"device": "test"})
    assert rule.form == "power"
    assert rule.a == pytest.approx(2.0, rel=0.05) and rule.b == pytest.approx(0.7, abs=0.05)
    for n in (10, 30, 100, 150):
        assert rule(n) == pytest.approx(truth(n), rel=0.05)
    q = rule.quality
    assert q["chosen_form"] == "power" and q["power_fit"]["r2_log_alpha_minus_1"] > 0.99
    assert max(q["fid_regret"]["power"].values()) < 0.05 < max(q["fid_regret"]["alpha_5"].values())
    assert rule.provenance == {"device": "test"}


def test_optimum_is_refined_between_grid_points():
    alphas = [1.5, 2, 3, 5, 8]
    fids = [10 + (np.log(a - 1) - np.log(2.6)) ** 2 for a in alphas]  # α* = 3.6, between 3 and 5
    best = alpha_fit.best_alpha(alphas, fids)
    assert best["alpha_grid"] == 3 and best["edge"] is None
    assert best["alpha"] == pytest.approx(3.6, rel=1e-6)  # a parabola in log(α−1) is exact here


def test_optima_at_the_grid_edge_are_censored_and_a_table_is_used():
    sweeps = {10: ([2, 4, 8], [5.0, 4.0, 6.0]),       # inside
              50: ([2, 4, 8], [5.0, 4.5, 4.0]),       # still improving at α = 8: censored
              200: ([2, 4, 8], [5.0, 4.4, 4.1])}
    rule = alpha_fit.fit_rule(sweeps)
    optima = rule.quality["optima"]
    assert optima["50"]["edge"] == "high" and optima["10"]["edge"] is None
    assert rule.form == "table" and rule.quality["power_fit"]["points"] == 1
    with pytest.raises(ValueError, match="power law needs optima inside"):
        alpha_fit.fit_rule(sweeps, form="power")


def test_table_rule_interpolates_log_log_and_clamps():
    rule = alpha_rule.AlphaRule("table", (10.0, 100.0), (2.0, 11.0), (1.25, 64.0))
    assert rule(10) == pytest.approx(2.0) and rule(100) == pytest.approx(11.0)
    assert rule(np.sqrt(10 * 100)) == pytest.approx(1 + np.sqrt(1 * 10))  # geometric mean of α − 1
    assert rule(1) == pytest.approx(2.0) and rule(5000) == pytest.approx(11.0)
    power = alpha_rule.AlphaRule("power", (10.0,), (2.0,), (1.25, 64.0), a=1.0, b=3.0)
    assert power(1000) == 64.0 and power(100) == pytest.approx(2.0)
    with pytest.raises(ValueError, match=">= 1"):
        rule(0)


def test_rule_file_round_trip_and_errors(tmp_path):
    rule = alpha_fit.fit_rule(synthetic_sweeps(lambda n: 1.0 + n / 50.0), provenance={"command": "x"})
    path = alpha_fit.save_rule(rule, str(tmp_path / "rule.json"))
    loaded = alpha_rule.load_rule(path)
    assert loaded == rule and loaded(37) == rule(37)
    data = json.load(open(path))
    assert data["format"] == alpha_rule.FORMAT and "formula" in data
    data["format"] = "something else"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not a pds_jax alpha rule"):
        alpha_rule.load_rule(str(tmp_path / "bad.json"))
    with pytest.raises(FileNotFoundError, match="quality_vs_steps.py --fit-only"):
        alpha_rule.load_rule(str(tmp_path / "missing.json"))


# ------------------------------------------------------------------------ plumbing


@pytest.fixture
def installed_rule(tmp_path, monkeypatch):
    """A rule α(N) = 1 + 8 (N / 100) installed in place of pds_jax/assets/alpha_rule.json."""
    # steep enough to stay above the stability floor of the default model (≈ 3 at N = 50), so
    # that 'auto' resolves to the rule itself: α(50) = 5, α(100) = 9
    rule = alpha_rule.AlphaRule("power", (10.0, 200.0), (1.8, 17.0), (1.25, 64.0), a=8.0, b=1.0)
    path = alpha_fit.save_rule(rule, str(tmp_path / "alpha_rule.json"))
    monkeypatch.setattr(alpha_rule, "RULE_PATH", path)
    return rule


def test_auto_resolves_with_the_pc_steps_actually_run(installed_rule):
    config = load_config("fashion_mnist_pds")
    config.model.num_scales, config.sampling.pds.speed_up = 1000, 10.0  # N = 100
    config.sampling.pds.alpha = "auto"
    auto = pds.from_config(config).precond
    config.sampling.pds.alpha = installed_rule(100)           # = 9
    assert installed_rule(100) == pytest.approx(9.0)
    numeric = pds.from_config(config).precond
    np.testing.assert_array_equal(np.asarray(auto.freq), np.asarray(numeric.freq))
    np.testing.assert_array_equal(np.asarray(auto.space), np.asarray(numeric.space))
    config.sampling.pds.alpha = "auto"
    config.sampling.pds.speed_up = 20.0                       # N = 50 ⇒ α = 5: stronger filters
    assert pds.from_config(config).alpha == pytest.approx(5.0)
    stronger = pds.from_config(config).precond
    np.testing.assert_array_equal(np.asarray(stronger.freq),
                                  np.asarray(pds.from_config(config, alpha=5.0).precond.freq))
    assert float(np.max(stronger.freq)) > float(np.max(numeric.freq))  # D ∈ [1, α/(α−1)]


def test_numeric_strings_and_numbers_give_the_same_filters():
    config = load_config("fashion_mnist_pds")
    config.sampling.pds.alpha = 3
    as_int = pds.from_config(config).precond
    config.sampling.pds.alpha = " 3.0 "
    as_text = pds.from_config(config).precond
    np.testing.assert_array_equal(np.asarray(as_int.freq), np.asarray(as_text.freq))
    as_arg = pds.from_config(config, alpha=3.0).precond
    np.testing.assert_array_equal(np.asarray(as_int.freq), np.asarray(as_arg.freq))


def test_auto_without_an_installed_rule_says_how_to_fit_one(tmp_path, monkeypatch):
    monkeypatch.setattr(alpha_rule, "RULE_PATH", str(tmp_path / "none.json"))
    config = load_config("fashion_mnist_pds")
    config.sampling.pds.alpha = "auto"
    with pytest.raises(FileNotFoundError, match="--fit-only"):
        pds.from_config(config).precond
    config.sampling.pds.freq_filter = config.sampling.pds.space_filter = ""
    assert pds.from_config(config).precond.is_identity  # no filter, nothing to resolve


def test_bad_alpha_fails_even_without_filters_and_auto_refuses_legacy(installed_rule):
    config = load_config("fashion_mnist_pds")
    config.sampling.pds.freq_filter = config.sampling.pds.space_filter = ""
    config.sampling.pds.alpha = "five"
    with pytest.raises(ValueError, match="neither a number nor 'auto'"):
        pds.from_config(config).precond
    config = load_config("fashion_mnist_pds")
    config.sampling.pds.alpha = "auto"
    config.sampling.pds.normalization = "legacy"
    with pytest.raises(ValueError, match="normalized"):
        pds.from_config(config).precond


def test_command_line_alpha_values_and_the_official_alias(installed_rule, monkeypatch):
    """--alpha=3 (main.py's float alias) and --config.sampling.pds.alpha=2.5|auto all work."""
    import main

    config_file = os.path.join(ROOT, "configs", "fashion_mnist_pds.py")
    cases = [(["--alpha=3"], 3.0, 3.0), (["--config.sampling.pds.alpha=2.5"], 2.5, 2.5),
             (["--config.sampling.pds.alpha=auto"], "auto",
              installed_rule(pds.from_config(load_config("fashion_mnist_pds")).num_steps)),
             (["--config.sampling.pds.alpha=auto", "--alpha=8"], 8.0, 8.0)]
    for extra, value, resolved in cases:
        argv = ["main.py", f"--config={config_file}", "--workdir=unused"] + extra
        monkeypatch.setattr("sys.argv", argv)  # config_flags reads the --config.* overrides from sys.argv
        main.FLAGS(argv)
        try:
            config = main.apply_aliases(main.FLAGS.config)
            assert config.sampling.pds.alpha == value
            assert pds.from_config(config).alpha == pytest.approx(resolved)
            np.testing.assert_array_equal(np.asarray(pds.from_config(config).precond.freq),
                                          np.asarray(pds.from_config(config, alpha=resolved).precond.freq))
        finally:
            main.FLAGS.unparse_flags()
            for name in [n for n in main.FLAGS if n.startswith("config.")]:
                delattr(main.FLAGS, name)  # config_flags registers overrides at each parse


SHIPPED_RESULTS = os.path.join(ROOT, "benchmarks", "results", "quality_vs_steps_cpu.json")


def test_the_shipped_rule_is_the_fit_of_the_shipped_study(tmp_path):
    """pds_jax/alpha_rule.json = `--fit-only` of the committed raw results, with its provenance."""
    import quality_vs_steps as qvs

    shipped = json.load(open(alpha_rule.RULE_PATH))
    provenance = shipped["provenance"]
    assert provenance["results"] == os.path.basename(SHIPPED_RESULTS) and "warning" not in provenance
    assert provenance["device"] == "cpu (cpu)" and provenance["num_samples"] == 100
    qvs.main(["--fit-only", SHIPPED_RESULTS, "--out", str(tmp_path / "refit.json")])
    refit = json.load(open(qvs.output_paths(str(tmp_path / "refit.json"))["rule"]))
    for rule in (shipped, refit):
        rule["provenance"].pop("fit_date")
    assert refit == shipped
    rule = alpha_rule.load_rule()
    assert all(rule(n) > 1.0 for n in (1, 10, 50, 100, 1000, 10_000))


def test_the_default_config_resolves_auto_with_the_shipped_rule():
    config = load_config("fashion_mnist_pds")
    assert config.sampling.pds.alpha == "auto"
    steps = pds.from_config(config).num_steps
    assert steps == 50 and pds.from_config(config).alpha == alpha_rule.load_rule()(steps)
    config.sampling.pds.alpha = 2  # the field takes strings and numbers alike
