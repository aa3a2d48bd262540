"""score_sde's CelebA defaults (64×64, VE σ_max = 90, N = 1000)."""

from pds_jax.configs.common import get_common_config


def get_default_configs():
    config = get_common_config()
    config.training.batch_size = 128
    config.training.n_iters = 1300001
    config.training.snapshot_freq_for_preemption = 10000

    config.sampling.snr = 0.17
    config.sampling.batch_size = 64
    config.sampling.num_samples = 64

    evaluate = config.eval
    evaluate.batch_size = 1024

    data = config.data
    data.dataset = 'CELEBA'
    data.image_size = 64

    model = config.model
    model.sigma_max = 90.
    model.num_scales = 1000
    model.dropout = 0.1
    return config
