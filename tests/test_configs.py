"""Configs: score_sde's values under score_sde's names, the pds_jax schema, and the PDS presets."""

import importlib.util
import os

import ml_collections
import pytest

from tests.model_helpers import CONFIG_FILES, flat_param_shapes, load_config, num_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Keys every config must have (other modules read exactly these).
SCHEMA = {
    "training": ["batch_size", "n_iters", "snapshot_freq", "log_freq", "eval_freq",
                 "snapshot_freq_for_preemption", "snapshot_sampling", "likelihood_weighting",
                 "continuous", "reduce_mean", "sde", "n_jitted_steps"],
    "sampling": ["n_steps_each", "noise_removal", "probability_flow", "snr", "method", "predictor",
                 "corrector", "batch_size", "num_samples", "seed", "checkpoint",
                 "pds.speed_up", "pds.alpha", "pds.normalization", "pds.freq_filter",
                 "pds.space_filter", "pds.solenoidal_omega",
                 "ode.solver", "ode.num_steps", "ode.rtol", "ode.atol", "ode.grid", "ode.rho",
                 "ode.denoise",
                 "deis.method", "deis.order", "deis.num_steps", "deis.grid", "deis.rho"],
    "eval": ["batch_size", "num_samples",
             "bpd_dataset", "stats_file", "feature_net", "inception_weights"],
    "data": ["dataset", "image_size", "random_flip", "centered", "uniform_dequantization",
             "num_channels", "tfds_data_dir", "folder", "split"],
    "model": ["sigma_min", "sigma_max", "num_scales", "beta_min", "beta_max", "dropout",
              "embedding_type", "name", "ema_rate", "nf", "ch_mult", "num_res_blocks",
              "attn_resolutions", "resamp_with_conv", "conditional", "fir", "fir_kernel",
              "skip_rescale", "resblock_type", "progressive", "progressive_input",
              "progressive_combine", "init_scale", "fourier_scale", "scale_by_sigma",
              "nonlinearity", "normalization"],
    "optim": ["weight_decay", "optimizer", "lr", "beta1", "eps", "warmup", "grad_clip"],
    "estimate": ["num_images", "batch_size", "seed", "output"],
}

# (sde, image size, σ_max, N, snr, nf, ch_mult, res blocks, EMA, centered, embedding): score_sde's values.
SCORE_SDE_VALUES = {
    "ve/cifar10_ncsnpp_continuous": ("vesde", 32, 50, 1000, 0.16, 128, (1, 2, 2, 2), 4, 0.999, False, "fourier"),
    "ve/cifar10_ncsnpp_deep_continuous": ("vesde", 32, 50, 1000, 0.16, 128, (1, 2, 2, 2), 8, 0.999, False, "fourier"),
    "ve/bedroom_ncsnpp_continuous": ("vesde", 256, 378, 2000, 0.075, 128, (1, 1, 2, 2, 2, 2, 2), 2, 0.999, False, "fourier"),
    "ve/church_ncsnpp_continuous": ("vesde", 256, 380, 2000, 0.075, 128, (1, 1, 2, 2, 2, 2, 2), 2, 0.999, False, "fourier"),
    "ve/celebahq_256_ncsnpp_continuous": ("vesde", 256, 348, 2000, 0.075, 128, (1, 1, 2, 2, 2, 2, 2), 2, 0.999, False, "fourier"),
    "ve/ffhq_256_ncsnpp_continuous": ("vesde", 256, 348, 2000, 0.075, 128, (1, 1, 2, 2, 2, 2, 2), 2, 0.999, False, "fourier"),
    "ve/ffhq_ncsnpp_continuous": ("vesde", 1024, 1348, 2000, 0.15, 16, (1, 2, 4, 8, 16, 32, 32, 32), 1, 0.9999, False, "fourier"),
    "vp/cifar10_ddpmpp_continuous": ("vpsde", 32, 50, 1000, 0.16, 128, (1, 2, 2, 2), 4, 0.9999, True, "positional"),
}

PDS = {  # name: (model config, speed_up, freq filter, space filter)
    "cifar10_pds": ("ve/cifar10_ncsnpp_deep_continuous", 10, "filters/cifar10_stats.npz", ""),
    "ffhq_pds": ("ve/ffhq_ncsnpp_continuous", 30, "filters/ffhq_freq.npy", "filters/ffhq_space.npy"),
    "bedroom_pds": ("ve/bedroom_ncsnpp_continuous", 12, "filters/bedroom_freq.npy", ""),
    "church_pds": ("ve/church_ncsnpp_continuous", 12, "filters/church_stats.npz", ""),
}

PARAM_COUNTS = {
    "ve/cifar10_ncsnpp_continuous": 62_758_915, "ve/cifar10_ncsnpp_deep_continuous": 107_587_075,
    "ve/bedroom_ncsnpp_continuous": 65_574_549, "ve/church_ncsnpp_continuous": 65_574_549,
    "ve/celebahq_256_ncsnpp_continuous": 65_574_549, "ve/ffhq_256_ncsnpp_continuous": 65_574_549,
    "ve/ffhq_ncsnpp_continuous": 105_785_896, "vp/cifar10_ddpmpp_continuous": 61_804_419,
    "vp/ddpm/cifar10": 35_218_947,  # the original DDPM model's count (tests/data/score_sde_param_trees.json)
}


def _get(config, dotted):
    for part in dotted.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_loads_from_its_file_path(name):
    """As `ml_collections.config_flags` does: load the file by path (repo root on sys.path)."""
    path = os.path.join(ROOT, "configs", name + ".py")
    spec = importlib.util.spec_from_file_location("config_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    getter = getattr(module, "get_config", None) or module.get_default_configs
    config = getter()
    assert isinstance(config, ml_collections.ConfigDict)
    assert config == load_config(name)


PAPER_PRESETS = ("cifar10_pds", "ffhq_pds", "bedroom_pds", "church_pds")


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_has_the_full_schema(name):
    config = load_config(name)
    missing = [f"{section}.{key}" for section, keys in SCHEMA.items() for key in keys
               if not _has(config[section], key)]
    assert not missing, f"configs/{name}.py lacks {missing}"
    assert config.seed == 42
    pds = config.sampling.pds
    assert pds.normalization == "normalized"
    # the paper presets pin the official α = 5; everything else uses the fitted α(N) rule
    assert pds.alpha == (5.0 if name in PAPER_PRESETS else "auto")
    assert config.sampling.seed == 0 and isinstance(config.sampling.checkpoint, str)
    assert config.estimate.num_images == 200 and config.estimate.batch_size == 50


def _has(section, dotted):
    try:
        _get(section, dotted)
        return True
    except (KeyError, AttributeError):
        return False


@pytest.mark.parametrize("name", sorted(SCORE_SDE_VALUES))
def test_values_are_score_sde_ones(name):
    c = load_config(name)
    got = (c.training.sde, c.data.image_size, c.model.sigma_max, c.model.num_scales, c.sampling.snr,
           c.model.nf, tuple(c.model.ch_mult), c.model.num_res_blocks, c.model.ema_rate,
           c.data.centered, c.model.embedding_type)
    assert got == SCORE_SDE_VALUES[name]
    assert c.model.sigma_min == 0.01 and c.model.name == "ncsnpp" and c.training.continuous
    assert c.sampling.pds.speed_up == 1.0, "experiment configs are the vanilla samplers"


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS) + sorted(PDS))
def test_config_builds_a_model_of_the_published_size(name):
    count = PARAM_COUNTS[PDS[name][0]] if name in PDS else PARAM_COUNTS[name]
    assert num_params(flat_param_shapes(load_config(name))) == count


@pytest.mark.parametrize("name", sorted(PDS))
def test_pds_presets(name):
    base, speed_up, freq, space = PDS[name]
    config, model_config = load_config(name), load_config(base)
    pds = config.sampling.pds
    assert (pds.speed_up, pds.freq_filter, pds.space_filter) == (speed_up, freq, space)
    assert config.model == model_config.model and config.data == model_config.data
    assert config.sampling.checkpoint.startswith(f"checkpoints/{base}".replace("ffhq_ncsnpp", "ffhq_1024_ncsnpp"))
    assert os.path.basename(config.sampling.checkpoint).startswith("checkpoint_")
    assert int(config.model.num_scales / speed_up) == {10: 100, 30: 66, 12: 166}[speed_up]


def test_every_config_key_is_read_by_the_package():
    """The schema is what the code reads: each leaf of the common config is named in pds_jax
    outside the configs (a key nothing reads would be silently ignored when set)."""
    import glob

    from pds_jax.configs.common import get_common_config

    package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pds_jax")
    source = "".join(open(f).read() for f in glob.glob(os.path.join(package, "**", "*.py"), recursive=True)
                     if os.sep + "configs" + os.sep not in f)

    def leaves(node, prefix=""):
        for key, value in node.items():
            if hasattr(value, "items"):
                yield from leaves(value, prefix + key + ".")
            else:
                yield prefix + key

    unread = [leaf for leaf in leaves(get_common_config()) if not any(
        form.format(leaf.rsplit(".", 1)[-1]) in source for form in (".{}", '"{}"', "'{}'"))]
    assert not unread, f"config keys no module reads: {unread}"
