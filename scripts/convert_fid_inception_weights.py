"""Convert pytorch-fid's FID Inception weights (.pth) to pds_jax's flat `.npz` (one time).

Why: FID is only comparable across papers with the 2015 TensorFlow Inception graph.
No package ships those weights (every FID tool downloads them at run time), so
pds_jax reads a local file that you create once with this script.

1. Get the PyTorch port of the TF weights published by pytorch-fid
   (github.com/mseitzer/pytorch-fid, release `fid_weights`):

       wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

   (the same file `pip install pytorch-fid` caches under ~/.cache/torch/hub/checkpoints/).

2. Convert it from the repository root, in pds_jax's environment with PyTorch added
   for this one step (torch is imported only here, at run time; pds_jax itself never
   needs it; the CPU wheel is enough):

       python scripts/convert_fid_inception_weights.py \\
           pt_inception-2015-12-05-6726825d.pth fid_inception.npz

3. Use it: `pds_jax.feature_nets.get_feature_fn('inception', weights_path='fid_inception.npz')`.

Mapping (see `pds_jax.inception.convert_pytorch_fid_state_dict`): conv kernels are
transposed OIHW → HWIO; BatchNorm weight/bias → scale/bias (collection `params`),
running_mean/var → mean/var (collection `batch_stats`). Nothing is folded. Dropped,
by name and printed: the 1008-way `fc.*` head and BatchNorm `num_batches_tracked`
counters. Any other key, or any missing/mis-shaped variable, is an error.
"""

from __future__ import annotations

import argparse
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pds_jax import inception  # noqa: E402
from pds_jax.io_utils import atomic_save_npz  # noqa: E402


def read_torch_state_dict(path: str) -> dict:
    """{name: float ndarray} from a `.pth` state dict (imports torch lazily)."""
    try:
        import torch
    except ImportError as e:
        raise SystemExit(
            "This one-time conversion needs PyTorch (`pip install torch` in any environment, "
            "CPU build is enough); pds_jax does not.") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise SystemExit(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def convert(pth_path: str, npz_path: str, overwrite: bool = False) -> None:
    flat, dropped = inception.convert_pytorch_fid_state_dict(read_torch_state_dict(pth_path))
    inception.validate_flat_variables(flat, source=pth_path)
    atomic_save_npz(npz_path, flat, overwrite=overwrite)
    n = sum(v.size for k, v in flat.items() if k.startswith("params/"))
    print(f"wrote {npz_path}: {len(flat)} arrays, {n:,} trainable parameters")
    print(f"dropped {len(dropped)} entries not used for pool3 features: "
          + ", ".join(d for d in dropped if not d.endswith("num_batches_tracked"))
          + f" and {sum(d.endswith('num_batches_tracked') for d in dropped)} num_batches_tracked")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pth", help=f"pytorch-fid's {inception.WEIGHTS_FILENAME}")
    parser.add_argument("npz", help="output .npz for pds_jax.inception.load_inception_params")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    convert(args.pth, args.npz, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
