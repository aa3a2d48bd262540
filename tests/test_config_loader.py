"""pds_jax.config_loader and the command line's --config / --alpha / --help (in process, no subprocess)."""

import os

import pytest

from pds_jax import cli
from pds_jax.config_loader import ConfigError, load_config, shipped_config_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shipped_names_are_the_config_files_with_get_config():
    names = shipped_config_names()
    for name in ("fashion_mnist_pds", "ffhq_pds", "ve/ffhq_ncsnpp_continuous", "vp/ddpm/cifar10"):
        assert name in names
    for helper in ("common", "default_lsun_configs", "__init__"):
        assert helper not in names


@pytest.mark.parametrize("spec", ["fashion_mnist_pds", "fashion_mnist_pds.py", "configs/fashion_mnist_pds.py"])
def test_a_shipped_config_by_name_from_any_directory(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(spec)
    assert config.data.dataset == "fashion_mnist_local" and config.sampling.pds.alpha == "auto"


def test_a_file_path_and_the_name_give_the_same_config():
    by_path = load_config(os.path.join(ROOT, "configs", "ve", "ffhq_ncsnpp_continuous.py"))
    assert by_path.to_dict() == load_config("ve/ffhq_ncsnpp_continuous").to_dict()


def test_a_file_in_the_working_directory_wins_and_takes_an_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("configs")
    (tmp_path / "configs" / "fashion_mnist_pds.py").write_text(
        "import ml_collections\n\ndef get_config(arg='x'):\n    return ml_collections.ConfigDict({'arg': arg})\n")
    assert load_config("configs/fashion_mnist_pds.py").arg == "x"
    assert load_config("configs/fashion_mnist_pds.py:y").arg == "y"
    locked = load_config("configs/fashion_mnist_pds.py", lock=True)
    with pytest.raises(AttributeError):
        locked.new_field = 1


@pytest.mark.parametrize("content, fragments", [
    (None, ["nope.py: no such config file", "fashion_mnist_pds", "ve/ffhq_ncsnpp_continuous"]),
    ("def get_config(:\n    pass\n", ["nope.py:1: syntax error"]),
    ("X = 1\n", ["nope.py: defines no get_config()"]),
    ("from configs_gone.x import get_config\n", ["nope.py: the config file's imports fail", "configs_gone"]),
    ("def get_config():\n    pass\n", ["get_config() returned None"]),
])
def test_mistakes_are_one_line_config_errors(content, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "nope.py").write_text(content)
    with pytest.raises(ConfigError) as e:
        load_config("nope.py")
    assert "\n" not in str(e.value)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(str(tmp_path))


def _parse(argv, monkeypatch):
    monkeypatch.setattr("sys.argv", argv)  # config_flags reads the --config.* overrides from sys.argv
    try:
        cli.parse_flags(argv)
        return cli.apply_aliases(cli.FLAGS.config)
    finally:
        cli.FLAGS.unparse_flags()
        for name in [n for n in cli.FLAGS if n.startswith("config.")]:
            delattr(cli.FLAGS, name)  # config_flags registers overrides at each parse


@pytest.mark.parametrize("alpha, expected", [("auto", "auto"), ("AUTO", "auto"), ("3", 3.0), ("2.5", 2.5)])
def test_alpha_flag_takes_auto_and_numbers(alpha, expected, monkeypatch):
    argv = ["pds-jax", "--config=ffhq_pds", "--workdir=w", f"--alpha={alpha}", "--config.model.nf=8"]
    config = _parse(argv, monkeypatch)
    assert config.sampling.pds.alpha == expected and config.model.nf == 8


@pytest.mark.parametrize("args, fragments", [
    (["--alpha=1"], ["--alpha=1", "> 1"]),
    (["--alpha=fast"], ["--alpha=fast", "'auto'"]),
    (["--config=nope"], ["--config=nope", "shipped configs", "fashion_mnist_pds"]),
])
def test_bad_flags_exit_2_in_one_message(args, fragments, monkeypatch, capsys):
    argv = ["pds-jax", "--config=ffhq_pds", "--workdir=w", *args]
    with pytest.raises(SystemExit) as e:
        _parse(argv, monkeypatch)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error (usage): ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize("flag", ["-h", "--help", "--helpfull"])
def test_help_exits_0_without_the_required_flags(flag, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_flags(["pds-jax", flag])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--alpha" in out and "|".join(cli.MODES) in out
