"""A score model from a checkpoint file: the SDE, network, parameters and `score_fn(x, t)`."""

from __future__ import annotations

from pds_jax import checkpoints, models, resources
from pds_jax.sde import get_sde


def load_score_model(config, path: str, ema: bool = True):
    """(sde, model, params, score_fn, checkpoint file) for a checkpoint file or folder.

    A folder means its newest `checkpoint_<n>`; a path as configs write it (relative, such as
    'checkpoints/fashion_mnist_ncsnpp') also finds the files shipped with pds_jax
    (`pds_jax.resources.resolve`). The parameter tree is checked against the model built from
    `config`, so a checkpoint of another architecture fails with the list of differing paths.
    """
    path = checkpoints.resolve_checkpoint(resources.resolve(path, missing_ok=True))
    params = checkpoints.load_params(path, ema=ema)
    checkpoints.check_params(params, config, checkpoint=path)
    sde = get_sde(config)
    model = models.create_model(config)
    score_fn = models.get_score_fn(sde, model, params, continuous=config.training.continuous)
    return sde, model, params, score_fn, path
