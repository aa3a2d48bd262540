"""score_sde's LSUN defaults (256×256, VE σ_max = 378, N = 2000); also used for FFHQ/CelebA-HQ 256."""

from pds_jax.configs.common import get_common_config


def get_default_configs():
    config = get_common_config()
    config.training.batch_size = 64
    config.training.n_iters = 2400001
    config.training.snapshot_freq_for_preemption = 5000

    config.sampling.snr = 0.075
    config.sampling.batch_size = 8
    config.sampling.num_samples = 8

    evaluate = config.eval
    evaluate.batch_size = 512

    data = config.data
    data.dataset = 'LSUN'
    data.category = ''               # LSUN scene, set by the experiment ('bedroom', ...)
    data.image_size = 256

    model = config.model
    model.sigma_max = 378.
    model.num_scales = 2000
    model.dropout = 0.
    return config
