"""NCSN++ on FFHQ 1024×1024, VE SDE, continuous time (105,785,896 parameters).

score_sde's own `ve/ffhq_ncsnpp_continuous.py` was copied from its PyTorch port
(it imports torch and misses keys the JAX code reads), so this file is rebuilt from
the PyTorch-port values (σ_max 1348, N 2000, snr 0.15, nf 16,
ch_mult (1, 2, 4, 8, 16, 32, 32, 32), 1 res block, EMA 0.9999, batch 8,
reduce_mean) on top of the LSUN defaults, which supply the keys it lacked
(`training.n_jitted_steps`, `eval.enable_*`, `model.beta_*`). `n_jitted_steps` is 1:
at 1024² there is no memory to fuse several training steps (score_sde README tip).
"""

from pds_jax.configs.default_lsun_configs import get_default_configs


def get_config():
    config = get_default_configs()
    training = config.training
    training.sde = 'vesde'
    training.continuous = True
    training.batch_size = 8
    training.n_iters = 2400001
    training.snapshot_freq_for_preemption = 5000
    training.reduce_mean = True
    training.n_jitted_steps = 1

    sampling = config.sampling
    sampling.method = 'pc'
    sampling.predictor = 'reverse_diffusion'
    sampling.corrector = 'langevin'
    sampling.snr = 0.15
    sampling.batch_size = 4
    sampling.num_samples = 4

    evaluate = config.eval
    evaluate.batch_size = 1024
    evaluate.num_samples = 50000

    data = config.data
    data.dataset = 'FFHQ'
    data.image_size = 1024
    data.centered = False
    data.random_flip = True
    data.uniform_dequantization = False
    data.num_channels = 3
    # score_sde read this dataset from a TFRecord file; point this at yours.
    data.tfrecords_path = ''

    model = config.model
    model.name = 'ncsnpp'
    model.scale_by_sigma = True
    model.sigma_max = 1348.
    model.num_scales = 2000
    model.ema_rate = 0.9999
    model.sigma_min = 0.01
    model.normalization = 'GroupNorm'
    model.nonlinearity = 'swish'
    model.nf = 16
    model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
    model.num_res_blocks = 1
    model.attn_resolutions = (16,)
    model.dropout = 0.
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
    model.embedding_type = 'fourier'
    return config
