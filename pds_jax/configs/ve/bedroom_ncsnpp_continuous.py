"""NCSN++ on LSUN bedroom 256×256, VE SDE, continuous time.

score_sde `ve/bedroom_ncsnpp_continuous`: 65,574,549 parameters (σ_max = 378 from the LSUN defaults).
"""

from pds_jax.configs.default_lsun_configs import get_default_configs


def get_config():
    config = get_default_configs()
    training = config.training
    training.sde = 'vesde'
    training.continuous = True

    sampling = config.sampling
    sampling.method = 'pc'
    sampling.predictor = 'reverse_diffusion'
    sampling.corrector = 'langevin'

    data = config.data
    data.category = 'bedroom'

    model = config.model
    model.name = 'ncsnpp'
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.normalization = 'GroupNorm'
    model.nonlinearity = 'swish'
    model.nf = 128
    model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = [1, 3, 3, 1]
    model.skip_rescale = True
    model.resblock_type = 'biggan'
    model.progressive = 'output_skip'
    model.progressive_input = 'input_skip'
    model.progressive_combine = 'sum'
    model.init_scale = 0.
    model.fourier_scale = 16
    return config
