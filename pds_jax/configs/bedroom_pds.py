"""PDS on LSUN bedroom 256×256: NCSN++ (VE, continuous) at 12× fewer steps (2000 → 166).

As in the official PDS README example: the frequency filter only (official `.npy`),
α = 5. The checkpoint is score_sde's `ve/bedroom_ncsnpp_continuous` snapshot 127
(the released file's index).
"""

from pds_jax.configs.ve.bedroom_ncsnpp_continuous import get_config as get_model_config


def get_config():
    config = get_model_config()
    sampling = config.sampling
    sampling.checkpoint = 'checkpoints/ve/bedroom_ncsnpp_continuous/checkpoint_127'
    sampling.pds.speed_up = 12.
    sampling.pds.alpha = 5.0  # the official code's value (not the fitted α(N) rule)
    sampling.pds.freq_filter = 'filters/bedroom_freq.npy'
    return config
