"""pds_jax.resources: shipped assets are found from any working directory, and a missing
path fails with every place searched."""

import os

import pytest

from pds_jax import alpha_rule, feature_nets, resources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ["checkpoints/fashion_mnist_ncsnpp/checkpoint_43000", "checkpoints/fashion_mnist_ncsnpp/filters.npz",
           "checkpoints/fashion_mnist_classifier/params.msgpack",
           "checkpoints/fashion_mnist_classifier/fashion_mnist_train_stats.npz",
           "checkpoints/fashion_mnist_classifier/fashion_mnist_test_stats.npz", "alpha_rule.json"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_assets_resolve_from_another_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = resources.resolve(name)
    assert os.path.isabs(path) and os.path.isfile(path)
    # inside the imported package, not found through the working directory
    assert path.startswith(os.path.dirname(os.path.abspath(resources.__file__)) + os.sep)
    assert path == resources.asset_path(name)


def test_module_defaults_point_at_the_assets():
    assert alpha_rule.RULE_PATH == resources.resolve("alpha_rule.json")
    assert os.path.isfile(feature_nets.CLASSIFIER_PARAMS)
    assert os.path.isfile(feature_nets.CLASSIFIER_TRAIN_STATS)


def test_a_working_directory_file_shadows_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alpha_rule.json").write_text("{}")
    assert resources.resolve("alpha_rule.json") == "alpha_rule.json"
    assert resources.resolve(str(tmp_path / "alpha_rule.json")) == str(tmp_path / "alpha_rule.json")


def test_empty_means_unused():
    assert resources.resolve("") == "" and resources.resolve(None) == ""


def test_missing_path_names_every_place_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = os.path.join("checkpoints", "ve", "nope", "checkpoint_1")
    with pytest.raises(FileNotFoundError) as e:
        resources.resolve(name, what="checkpoint", fix="download it")
    text = str(e.value)
    assert text.startswith(f"checkpoint not found: {name} (")
    assert str(tmp_path / name) in text
    assert resources.asset_path("checkpoints/ve/nope/checkpoint_1") in text
    assert text.endswith("download it.")
    assert resources.resolve(name, missing_ok=True) == name


def test_paths_outside_the_assets_are_not_looked_up_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in ("../resources.py", os.path.join(str(tmp_path), "alpha_rule.json")):
        with pytest.raises(FileNotFoundError) as e:
            resources.resolve(path)
        assert "shipped" not in str(e.value)
