"""Files shipped inside the package, and the one rule that turns a configured path into a file.

pds_jax ships its data as package data under `pds_jax/assets/` (so `pip install`, wheels
and editable installs all carry it, and nothing depends on where a repository checkout is):

    checkpoints/fashion_mnist_ncsnpp/       the embedded default model (NCSN++ VE, 32×32×1)
                                            and its PDS filter statistics filters.npz
    checkpoints/fashion_mnist_classifier/   the Fashion-MNIST feature net of "domain FID" and
                                            its train/test feature statistics
    alpha_rule.json                         the fitted α(N) rule of sampling.pds.alpha='auto'

Configs name files by path ('checkpoints/fashion_mnist_ncsnpp/filters.npz',
'checkpoints/ve/ffhq_1024_ncsnpp_continuous/checkpoint_60'). `resolve` gives, in order:

1. the path as given, if it exists (absolute, or relative to the working directory — where
   score_sde's released checkpoints go, e.g. `checkpoints/ve/...`);
2. else, for a relative path, the shipped asset of that name (`pds_jax/assets/<path>`);
3. else an error naming both places and the fix (or, with `missing_ok`, the path unchanged,
   for callers that handle a missing file themselves).

A file in the working directory therefore shadows a shipped asset of the same name.
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib

ASSETS = "assets"
DEFAULT_FIX = "Pass an existing path (absolute, or relative to the working directory)"


def asset_path(name: str = "") -> str:
    """Filesystem path of the shipped asset `name` ('/'-separated, relative to pds_jax/assets/).

    Returns the path whether or not the asset exists (`alpha_rule.RULE_PATH` is also where a
    refitted rule is installed). Wheels install as plain files, so the package folder is a
    real directory; a zipped import of pds_jax is refused, since checkpoints are read by path.
    """
    root = importlib.resources.files(__package__).joinpath(ASSETS)
    if not isinstance(root, pathlib.Path):
        raise RuntimeError(f"pds_jax is imported from an archive ({root}); its assets are read as "
                           "files: install it unpacked (pip install pds_jax)")
    return os.path.join(str(root), *name.split("/")) if name else str(root)


def _shipped_candidate(path: str):
    """pds_jax/assets/<path> for a relative `path` that stays inside the assets, else None."""
    if os.path.isabs(path):
        return None
    name = os.path.normpath(path)
    if name == os.curdir or name.split(os.sep)[0] == os.pardir:
        return None
    return asset_path(name.replace(os.sep, "/"))


def resolve(path, what: str = "file", fix: str = "", missing_ok: bool = False) -> str:
    """The file or folder that a configured `path` names (see the module docstring).

    Args:
      path: a path as a config or flag gives it; '' / None (meaning "not used") is returned as ''.
      what: what the path is, for the error message (e.g. 'config.sampling.pds.freq_filter').
      fix: the sentence telling the user what to do when nothing is found.
      missing_ok: return `path` unchanged instead of raising when nothing is found.

    Raises:
      FileNotFoundError: "<what> not found: <path> (looked for <places>). <fix>".
    """
    if not path:
        return ""
    path = os.fspath(path)
    if os.path.exists(path):
        return path
    shipped = _shipped_candidate(path)
    if shipped is not None and os.path.exists(shipped):
        return shipped
    if missing_ok:
        return path
    places = [os.path.abspath(path)] + ([f"{shipped} (shipped with pds_jax)"] if shipped else [])
    raise FileNotFoundError(f"{what} not found: {path} (looked for {' and '.join(places)}). "
                            f"{(fix or DEFAULT_FIX).rstrip('.')}.")
