"""PDS on LSUN church 256×256: NCSN++ (VE, continuous) at 12× fewer steps (2000 → 166).

The official PDS repository gives no church settings; this mirrors its bedroom
example (speed-up 12, frequency filter only, α = 5). No official church filter is
published: estimate one first (`main.py --mode=estimate --config=configs/church_pds.py`
writes `estimate.output`), which the sampler then reads as its frequency filter.
The checkpoint is score_sde's `ve/church_ncsnpp_continuous` snapshot 126 (the
released file's index).
"""

from pds_jax.configs.ve.church_ncsnpp_continuous import get_config as get_model_config


def get_config():
    config = get_model_config()
    sampling = config.sampling
    sampling.checkpoint = 'checkpoints/ve/church_ncsnpp_continuous/checkpoint_126'
    sampling.pds.speed_up = 12.
    sampling.pds.alpha = 5.0  # the official code's value (not the fitted α(N) rule)
    sampling.pds.freq_filter = 'filters/church_stats.npz'
    config.estimate.output = 'filters/church_stats.npz'
    return config
