"""DDPM (Ho et al., 2020) on CIFAR-10, discrete VP SDE (score_sde `vp/ddpm/cifar10`).

The original DDPM U-Net (`config.model.name = 'ddpm'`), discrete-time training
(labels = t (N − 1)), ancestral sampling; FID 3.24 in score_sde's table
(checkpoint `vp/cifar10_ddpm`).
"""

from pds_jax.configs.default_cifar10_configs import get_default_configs


def get_config():
    config = get_default_configs()
    training = config.training
    training.sde = 'vpsde'
    training.continuous = False
    training.reduce_mean = True

    sampling = config.sampling
    sampling.method = 'pc'
    sampling.predictor = 'ancestral_sampling'
    sampling.corrector = 'none'

    data = config.data
    data.centered = True

    model = config.model
    model.name = 'ddpm'
    model.scale_by_sigma = False
    model.ema_rate = 0.9999
    model.normalization = 'GroupNorm'
    model.nonlinearity = 'swish'
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    return config
