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

Shipped files are checked against `pds_jax/assets/SHA256SUMS` (`sha256sum` format, paths
relative to the assets folder) whenever `resolve` returns one (or a folder holding some):
a truncated download or a flipped bit fails with the file named, instead of sampling from
a silently different model. Remake the sums with `python -m pds_jax.resources --sums`.
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib
import sys

from pds_jax.io_utils import atomic_write_text, sha256_file

ASSETS = "assets"
SUMS = "SHA256SUMS"
# The assets whose bytes are pinned (alpha_rule.json is not: a refitted rule is installed there).
SUMMED = ("checkpoints/fashion_mnist_ncsnpp/checkpoint_43000", "checkpoints/fashion_mnist_ncsnpp/filters.npz",
          "checkpoints/fashion_mnist_classifier/params.msgpack",
          "checkpoints/fashion_mnist_classifier/fashion_mnist_train_stats.npz",
          "checkpoints/fashion_mnist_classifier/fashion_mnist_test_stats.npz")
DEFAULT_FIX = "Pass an existing path (absolute, or relative to the working directory)"


def assets_root() -> str:
    """The folder of the shipped assets (pds_jax/assets). Wheels install as plain files, so
    the package folder is a real directory; a zipped import of pds_jax is refused, since
    checkpoints are read by path."""
    root = importlib.resources.files(__package__).joinpath(ASSETS)
    if not isinstance(root, pathlib.Path):
        raise RuntimeError(f"pds_jax is imported from an archive ({root}); its assets are read as "
                           "files: install it unpacked (pip install pds_jax)")
    return str(root)


def asset_path(name: str = "") -> str:
    """Filesystem path of the shipped asset `name` ('/'-separated, relative to pds_jax/assets/).

    Returns the path whether or not the asset exists (`alpha_rule.RULE_PATH` is also where a
    refitted rule is installed).
    """
    root = assets_root()
    return os.path.join(root, *name.split("/")) if name else root


def _read_sums(root: str) -> dict:
    """{relative path: hex SHA-256} of `<root>/SHA256SUMS` ({} if there is none)."""
    path = os.path.join(root, SUMS)
    if not os.path.isfile(path):
        return {}
    sums = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                digest, name = line.rstrip("\n").split(maxsplit=1)
                sums[name.lstrip("*")] = digest.lower()
    return sums


def verify_shipped(path: str) -> None:
    """Raise ValueError if `path` (a file or folder inside the assets) holds a shipped file whose
    SHA-256 differs from SHA256SUMS; paths outside the assets are not checked."""
    root = os.path.realpath(assets_root())
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        return
    rel = os.path.relpath(real, root).replace(os.sep, "/")
    for name, want in _read_sums(root).items():
        if rel not in (".", name) and not name.startswith(rel + "/"):
            continue
        file = os.path.join(root, *name.split("/"))
        if not os.path.isfile(file):
            continue  # a folder's listing may name files this install left out
        got = sha256_file(file)
        if got != want:
            raise ValueError(
                f"shipped asset {file} is corrupt: its SHA-256 is {got[:16]}…, {SUMS} lists {want[:16]}… "
                "(a truncated download or a changed file); reinstall pds_jax (pip install "
                f"--force-reinstall pds_jax) or, in a checkout, restore it with git checkout -- {name}")


def write_sums(root: str = "") -> str:
    """Write `<root>/SHA256SUMS` for the `SUMMED` assets (after replacing one of them)."""
    root = root or assets_root()
    lines = [f"{sha256_file(os.path.join(root, *n.split('/')))}  {n}\n" for n in SUMMED]
    return atomic_write_text(os.path.join(root, SUMS), "".join(lines), overwrite=True)


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
      ValueError: a shipped file found differs from its SHA256SUMS entry (`verify_shipped`).
    """
    if not path:
        return ""
    path = os.fspath(path)
    if os.path.exists(path):
        verify_shipped(path)
        return path
    shipped = _shipped_candidate(path)
    if shipped is not None and os.path.exists(shipped):
        verify_shipped(shipped)
        return shipped
    if missing_ok:
        return path
    places = [os.path.abspath(path)] + ([f"{shipped} (shipped with pds_jax)"] if shipped else [])
    raise FileNotFoundError(f"{what} not found: {path} (looked for {' and '.join(places)}). "
                            f"{(fix or DEFAULT_FIX).rstrip('.')}.")


if __name__ == "__main__" and sys.argv[1:] == ["--sums"]:
    print(f"wrote {write_sums()}")
