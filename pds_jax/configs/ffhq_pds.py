"""PDS on FFHQ 1024×1024: NCSN++ (VE, continuous) at 30× fewer steps (2000 → 66).

As in the official PDS README example: both the frequency and the space filter
(the official `.npy` files), α = 5. The checkpoint is score_sde's
`ve/ffhq_1024_ncsnpp_continuous` snapshot 60 (the released file's index).
"""

from pds_jax.configs.ve.ffhq_ncsnpp_continuous import get_config as get_model_config


def get_config():
    config = get_model_config()
    sampling = config.sampling
    sampling.checkpoint = 'checkpoints/ve/ffhq_1024_ncsnpp_continuous/checkpoint_60'
    sampling.pds.speed_up = 30.
    sampling.pds.alpha = 5.0  # the official code's value (not the fitted α(N) rule)
    sampling.pds.freq_filter = 'filters/ffhq_freq.npy'
    sampling.pds.space_filter = 'filters/ffhq_space.npy'
    return config
