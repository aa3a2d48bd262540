"""The embedded default: a small NCSN++ (VE SDE) on 32×32 Fashion-MNIST, with PDS.

Trained by this project (`--mode=train`, see pds_jax/assets/checkpoints/fashion_mnist_ncsnpp/README.md)
on Fashion-MNIST from Debian's `dataset-fashion-mnist` (28×28 zero-padded to 32×32,
grayscale, data in [0, 1]). σ_max = 25 is about the largest distance between two
training images (score_sde's rule of thumb). The network is continuous-time, so the
number of sampling steps is a sampling choice: N = 500 (NFE 1000 with the corrector)
keeps the full-schedule panel of `--mode=compare` within a couple of minutes on a
2-core CPU; speed_up 10 then runs 50 steps.

    python main.py --config=configs/fashion_mnist_pds.py --workdir=runs/fashion_mnist --mode=compare
    pds-jax --config=fashion_mnist_pds --workdir=runs/fashion_mnist --mode=compare   # installed
"""

from pds_jax.configs.common import get_common_config


def get_config():
    config = get_common_config()

    data = config.data
    data.dataset = 'fashion_mnist_local'
    data.image_size = 32
    data.num_channels = 1
    data.centered = False
    data.random_flip = True
    data.folder = ''                     # '' = $PDS_JAX_FASHION_MNIST_DIR or Debian's folder

    training = config.training
    training.sde = 'vesde'
    training.continuous = True
    training.batch_size = 128
    training.n_iters = 40000
    training.snapshot_freq = 10000
    training.snapshot_freq_for_preemption = 1000
    training.log_freq = 100
    training.eval_freq = 500
    training.n_jitted_steps = 5
    training.reduce_mean = False

    model = config.model
    model.name = 'ncsnpp'
    model.sigma_min = 0.01
    model.sigma_max = 25.
    model.num_scales = 500
    model.dropout = 0.1
    model.ema_rate = 0.999
    # Small enough to sample 2000+ steps on a laptop CPU in a few minutes: 1.28M parameters.
    model.nf = 32
    model.ch_mult = (1, 2, 2)
    model.num_res_blocks = 1
    model.attn_resolutions = (8,)
    model.fir = False                    # FIR resampling costs ~3x the network time on CPU

    optim = config.optim
    optim.lr = 2e-4
    optim.warmup = 1000

    sampling = config.sampling
    sampling.method = 'pc'
    sampling.predictor = 'reverse_diffusion'
    sampling.corrector = 'langevin'
    sampling.snr = 0.16
    sampling.batch_size = 16
    sampling.num_samples = 16
    # Shipped with pds_jax (pds_jax/assets/checkpoints/...): found from any working directory.
    sampling.checkpoint = 'checkpoints/fashion_mnist_ncsnpp'
    pds = sampling.pds
    pds.speed_up = 10.0
    pds.alpha = 'auto'  # α(N) fitted on this model: pds_jax/assets/alpha_rule.json
    pds.normalization = 'normalized'
    pds.freq_filter = 'checkpoints/fashion_mnist_ncsnpp/filters.npz'
    pds.space_filter = 'checkpoints/fashion_mnist_ncsnpp/filters.npz'

    evaluate = config.eval
    evaluate.feature_net = 'fashion_mnist'
    # FID against the 60k train images (mean/cov only); KID against the raw features of the
    # 10k test images, which the train file does not hold.
    evaluate.stats_file = 'checkpoints/fashion_mnist_classifier/fashion_mnist_train_stats.npz'
    evaluate.kid_stats_file = 'checkpoints/fashion_mnist_classifier/fashion_mnist_test_stats.npz'
    # --mode=eval: 256 samples take a few minutes on a CPU (PDS, 50 steps); FID from 256
    # samples is biased upward, so compare runs at equal num_samples only.
    evaluate.num_samples = 256
    evaluate.batch_size = 128
    return config
