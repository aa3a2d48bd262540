"""NCSN++ (deep: 8 res blocks per level) on CIFAR-10, VE SDE, continuous time.

score_sde `ve/cifar10_ncsnpp_deep_continuous`: 107,587,075 parameters, FID 2.20 with
the PC sampler (score_sde, Table 3).
"""

from pds_jax.configs.default_cifar10_configs import get_default_configs


def get_config():
    config = get_default_configs()
    training = config.training
    training.sde = 'vesde'
    training.continuous = True
    training.n_iters = 950001

    sampling = config.sampling
    sampling.method = 'pc'
    sampling.predictor = 'reverse_diffusion'
    sampling.corrector = 'langevin'

    model = config.model
    model.name = 'ncsnpp'
    model.fourier_scale = 16
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.normalization = 'GroupNorm'
    model.nonlinearity = 'swish'
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 8
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = [1, 3, 3, 1]
    model.skip_rescale = True
    model.resblock_type = 'biggan'
    model.progressive = 'none'
    model.progressive_input = 'residual'
    model.progressive_combine = 'sum'
    model.init_scale = 0.
    return config
