"""The config schema shared by every pds_jax config.

`get_common_config()` returns a config with *every* key that pds_jax reads, filled
with the values score_sde's three `default_*_configs.py` files agree on plus the
pds_jax additions (sampling batch/checkpoint, `sampling.pds`, `sampling.ode`,
`sampling.deis`, `estimate`, data/eval extras). The dataset defaults
(`default_cifar10_configs.py`, ...) set their own values on top of it, and the
experiment files (`ve/*.py`, `vp/*.py`) set the architecture, exactly as in score_sde.
"""

import ml_collections


def get_common_config():
    config = ml_collections.ConfigDict()
    config.training = _training()
    config.sampling = _sampling()
    config.eval = _eval()
    config.data = _data()
    config.model = _model()
    config.optim = _optim()
    config.estimate = _estimate()
    config.inpaint = _inpaint()
    config.colorize = _colorize()
    config.seed = 42
    return config


def _training():
    training = ml_collections.ConfigDict()
    training.sde = 'vesde'               # 'vesde' | 'vpsde' | 'subvpsde'
    training.continuous = True           # continuous-time training (σ(t) / 999·t labels)
    training.batch_size = 128
    training.n_iters = 1300001
    training.snapshot_freq = 50000
    training.log_freq = 50
    training.eval_freq = 100
    training.snapshot_freq_for_preemption = 10000  # extra checkpoints for pre-emptible machines
    training.snapshot_sampling = True    # draw samples at every snapshot
    training.likelihood_weighting = False
    training.reduce_mean = False
    training.n_jitted_steps = 5          # training steps fused in one jitted call
    return training


def _sampling():
    sampling = ml_collections.ConfigDict()
    sampling.method = 'pc'               # 'pc' | 'ode' | 'deis'
    sampling.predictor = 'reverse_diffusion'
    sampling.corrector = 'langevin'
    sampling.n_steps_each = 1            # corrector steps per predictor step
    sampling.noise_removal = True        # return the last predictor's mean (denoise)
    sampling.probability_flow = False
    sampling.snr = 0.16                  # Langevin corrector signal-to-noise ratio
    sampling.batch_size = 64
    sampling.num_samples = 64
    sampling.seed = 0
    # A score_sde `checkpoint_<n>` file or a folder of them (the highest n is used);
    # '' means <workdir>/checkpoints.
    sampling.checkpoint = ''
    # Preconditioned diffusion sampling (docs/design.md §2-§3). speed_up = k runs
    # N = num_scales / k steps with eps scaled by k; speed_up = 1 and no filters is
    # the vanilla score_sde sampler.
    sampling.pds = pds = ml_collections.ConfigDict()
    pds.speed_up = 1.0
    # Filter parameter α (> 1; docs/design.md §3): a number, or 'auto' (the default) for the
    # fitted rule α(N) of pds_jax/alpha_rule.py at the N PC steps run ('normalized'
    # filters only). The paper presets pin the official α = 5. An untyped field
    # (ml_collections locks a field to the type of its first value), so that config files,
    # main.py's --alpha and --config.sampling.pds.alpha=3 or =auto all work.
    pds.alpha = ml_collections.FieldReference('auto', field_type=object)
    pds.normalization = 'normalized'     # 'normalized' | 'legacy'
    pds.freq_filter = ''                 # frequency filter / statistics file ('' = none)
    pds.space_filter = ''                # space filter / statistics file ('' = none)
    pds.solenoidal_omega = 0.0
    sampling.ode = ode = ml_collections.ConfigDict()
    ode.solver = 'rk45'
    ode.num_steps = 100
    ode.rtol = 1e-5
    ode.atol = 1e-5
    ode.grid = 'rho'
    ode.rho = 7.0
    ode.denoise = False
    sampling.deis = deis = ml_collections.ConfigDict()
    deis.method = 'tab'
    deis.order = 3
    deis.num_steps = 20
    deis.grid = 'rho'
    deis.rho = 7.0
    return sampling


def _eval():
    evaluate = ml_collections.ConfigDict()
    evaluate.batch_size = 1024
    evaluate.num_samples = 50000
    evaluate.bpd_dataset = 'test'
    # --mode=likelihood (pds_jax): bits/dim of the first bpd_num_images of a seeded shuffle of
    # bpd_dataset, bpd_batch_size at a time; divergence 'rademacher' | 'gaussian' | 'exact'
    # and the RK45 tolerances (score_sde: Rademacher, rtol = atol = 1e-5).
    evaluate.bpd_num_images = 256
    evaluate.bpd_batch_size = 64
    evaluate.bpd_hutchinson = 'rademacher'
    evaluate.bpd_rtol = 1e-5
    evaluate.bpd_atol = 1e-5
    evaluate.stats_file = ''             # reference feature statistics for FID (and KID if it has features)
    evaluate.kid_stats_file = ''         # reference raw features for KID; '' = those of stats_file
    evaluate.feature_net = 'inception'
    evaluate.inception_weights = ''      # local Inception weights file
    return evaluate


def _data():
    data = ml_collections.ConfigDict()
    data.dataset = 'CIFAR10'
    data.image_size = 32
    data.random_flip = True
    data.centered = False                # False: data in [0, 1]; the network maps x -> 2x - 1
    data.uniform_dequantization = False
    data.num_channels = 3
    data.tfds_data_dir = ''
    data.folder = ''                     # a local image folder instead of tfds
    data.split = 'train'
    return data


def _model():
    model = ml_collections.ConfigDict()
    model.name = 'ncsnpp'
    model.sigma_min = 0.01
    model.sigma_max = 50.
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.
    model.dropout = 0.1
    model.embedding_type = 'fourier'     # 'fourier' (of log σ) | 'positional' (of the timestep)
    model.ema_rate = 0.999
    # NCSN++ architecture (score_sde's ve/cifar10_ncsnpp_continuous values).
    model.scale_by_sigma = True
    model.normalization = 'GroupNorm'
    model.nonlinearity = 'swish'
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 4
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = [1, 3, 3, 1]
    model.skip_rescale = True
    model.resblock_type = 'biggan'       # 'biggan' | 'ddpm'
    model.progressive = 'none'           # 'none' | 'output_skip' | 'residual'
    model.progressive_input = 'residual'  # 'none' | 'input_skip' | 'residual'
    model.progressive_combine = 'sum'    # 'sum' | 'cat'
    model.init_scale = 0.
    model.fourier_scale = 16
    return model


def _optim():
    optim = ml_collections.ConfigDict()
    optim.weight_decay = 0
    optim.optimizer = 'Adam'
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 5000
    optim.grad_clip = 1.
    return optim


def _estimate():
    estimate = ml_collections.ConfigDict()
    # Filter estimation pass (docs/design.md §4).
    estimate.num_images = 200
    estimate.batch_size = 50
    estimate.seed = 0
    estimate.output = ''
    return estimate


def _inpaint():
    inpaint = ml_collections.ConfigDict()
    # Controllable generation (--mode=inpaint / --mode=colorize; pds_jax/controllable.py):
    # the first num_images images of `split` (or of `images`: a .npy/.npz file or a folder),
    # samples_per_image completions each, batch_size images per sampler call.
    inpaint.mask = 'box'                 # 'box' | 'left' | 'random' | a PNG mask (white = known)
    inpaint.mask_fraction = 0.5          # 'random': probability that a pixel is missing
    inpaint.num_images = 16
    inpaint.batch_size = 16
    inpaint.samples_per_image = 1
    inpaint.seed = 0
    inpaint.split = 'test'
    inpaint.images = ''
    return inpaint


def _colorize():
    colorize = ml_collections.ConfigDict()
    colorize.num_images = 16
    colorize.batch_size = 16
    colorize.samples_per_image = 1
    colorize.seed = 0
    colorize.split = 'test'
    colorize.images = ''
    return colorize
