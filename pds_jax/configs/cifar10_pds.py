"""PDS on CIFAR-10: NCSN++ deep (VE, continuous) at 10× fewer steps (1000 → 100).

The checkpoint is score_sde's `ve/cifar10_ncsnpp_deep_continuous` snapshot 12 (the
lower-FID of the two released snapshots; the index is that of the released files).
The official PDS code ships no CIFAR-10 filter: estimate one first
(`main.py --mode=estimate --config=configs/cifar10_pds.py` writes `estimate.output`),
which the sampler then reads as its frequency filter.
"""

from pds_jax.configs.ve.cifar10_ncsnpp_deep_continuous import get_config as get_model_config


def get_config():
    config = get_model_config()
    sampling = config.sampling
    sampling.checkpoint = 'checkpoints/ve/cifar10_ncsnpp_deep_continuous/checkpoint_12'
    sampling.pds.speed_up = 10.
    sampling.pds.alpha = 5.0  # the official code's value (not the fitted α(N) rule)
    sampling.pds.freq_filter = 'filters/cifar10_stats.npz'
    config.estimate.output = 'filters/cifar10_stats.npz'
    return config
